"""scripts/train_detection.py on generated scenes: two Horovod ranks train and leave a self-describing checkpoint; a
run killed with SIGKILL, or stopped by SIGTERM at a step, and resumed ends with the weights of an uninterrupted one;
a NaN stops the run and keeps the last good checkpoint; a validation mAP of zero is called out (and can stop the run);
bad arguments are refused by name."""
import os
import shutil
import signal
import sys

import xml.etree.ElementTree as ET

import numpy as np
import pytest

from conftest import assert_same_run_end, events, start, wait_for_step
from conftest import kill_in_epoch_2_and_resume
from conftest import run_training as run
from recordio_tools.detection import pack_detection
from demos.scenes import make_scenes

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "scripts", "train_detection.py")
HOROVODRUN = os.path.join(os.path.dirname(sys.executable), "horovodrun")
# a small, fast detector: GluonCV's light box head (narrower), BatchNorm, few RoIs and proposals, 96-pixel scenes
FAST = ("--model", "faster_rcnn_fpn_resnest14", "--short", "80,96", "--max-size", "96", "--val-short", "96",
        "--batch-size", "1", "--lr", "0.02", "--lr-warmup", "2", "--log-interval", "1", "--model-arg", "box_head=2fc",
        "--model-arg", "box_units=128", "--model-arg", "norm=bn", "--model-arg", "num_sample=32", "--model-arg", "rpn_train_post_nms=128",
        "--model-arg", "rpn_test_post_nms=50")


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    root = tmp_path_factory.mktemp("scenes")
    make_scenes(str(root / "voc"), train=12, val=4, size=96, seed=3)
    prefixes = {}
    for split in ("train", "val"):
        prefixes[split] = str(root / split)
        pack_detection(str(root / "voc"), prefixes[split], "voc", split=split,
                       classes_file=str(root / "voc" / "classes.txt"), progress=False)
    return prefixes


def command(scenes, save_dir, *extra, np_=None):
    launcher = [] if np_ is None else [HOROVODRUN, "--gloo", "-np", str(np_), "-H", f"localhost:{np_}"]
    return launcher + [sys.executable, SCRIPT, "--rec-train", scenes["train"] + ".rec", *FAST, "--save-dir",
                       str(save_dir), *extra]


@pytest.mark.skipif(not os.path.exists(HOROVODRUN), reason="needs horovodrun next to the interpreter")
def test_two_ranks_train_and_the_checkpoint_is_all_a_detector_needs(scenes, tmp_path):
    out = tmp_path / "run"
    proc = run(command(scenes, out, "--epochs", "2", "--max-steps-per-epoch", "2", "--rec-val",
                       scenes["val"] + ".rec", np_=2))
    assert "2 worker(s) x batch 1" in proc.stdout
    epochs = events(out, "epoch")
    assert [e["epoch"] for e in epochs] == [1, 2]
    for e in epochs:
        assert all(np.isfinite(e[k]) for k in ("loss", "rpn_cls", "rpn_box", "rcnn_cls", "rcnn_box"))
        assert 0 <= e["val_voc07_map"] <= 1  # validated after each epoch, over both ranks
    assert os.path.getsize(out / "curves.png") > 0

    from resnest_gluon.dense.inference import Detector

    detector = Detector(str(out / "ckpt-0002.params"))  # no flags: model, classes and transform travel with it
    assert detector.names == open(scenes["train"] + "_classes.txt").read().split()
    assert detector.config.short == 96 and detector.config.max_size == 96
    assert detector.net.model_info.arch["box_head"] == "2fc" and detector.net.model_info.arch["box_units"] == 128
    assert sorted(p.shape for p in detector.net.box_features.collect_params().values()) == [
        (128,), (128,), (128, 128), (128, 256 * 7 * 7)]  # two Dense layers of box_units
    found = detector.detect(np.zeros((96, 128, 3), np.uint8), threshold=0.0)
    assert all(0 <= o["box"][0] <= o["box"][2] <= 128 for o in found)


RESUME_FLAGS = ("--epochs", "2", "--max-steps-per-epoch", "3", "--seed", "4")


@pytest.fixture(scope="module")
def uninterrupted(scenes, tmp_path_factory):
    """The reference: RESUME_FLAGS run through once."""
    whole = tmp_path_factory.mktemp("whole")
    run(command(scenes, whole, *RESUME_FLAGS))
    return whole


def test_killed_run_resumes_like_an_uninterrupted_one_and_a_nan_keeps_the_last_checkpoint(scenes, uninterrupted,
                                                                                          tmp_path):
    killed = tmp_path / "killed"
    cmd = command(scenes, killed, *RESUME_FLAGS)
    kill_in_epoch_2_and_resume(cmd, killed)
    assert_same_run_end(uninterrupted, killed)

    # an absurd learning rate from there: the loss overflows, the run stops (exit 3), the checkpoint stays the latest
    nan = run(command(scenes, killed, "--epochs", "4", "--max-steps-per-epoch", "3", "--resume", str(killed),
                      "--lr", "1e30", "--clip-gradient", "0"), fails=True)
    assert nan.returncode == 3 and "last good checkpoint" in nan.stderr, nan.stderr[-2000:]
    assert not os.path.exists(killed / "ckpt-0003.json")


def test_sigterm_stops_at_a_step_with_its_checkpoint_and_resume_ends_like_an_uninterrupted_run(scenes, uninterrupted,
                                                                                             tmp_path):
    """What a cluster scheduler does before it kills a job: the run stops after the step in progress, writes that
    step's checkpoint (loadable as a detector, as every checkpoint) and exits 5; --resume continues after it."""
    cut = tmp_path / "cut"
    cmd = command(scenes, cut, *RESUME_FLAGS)
    proc = start(cmd, tmp_path / "cut.log", env=dict(os.environ, OMP_NUM_THREADS="1"))  # as run()
    wait_for_step(cut, proc, epoch=2, step=1)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 5, open(tmp_path / "cut.log").read()[-3000:]

    from resnest_gluon.dense.inference import Detector
    from resnest_gluon.training import latest_checkpoint

    ckpt = latest_checkpoint(str(cut))
    assert ckpt["epoch"] == 1 and 1 <= ckpt["step"] <= 3 and ckpt["num_update"] == 3 + ckpt["step"]
    assert os.path.basename(ckpt["meta_path"]) == f"ckpt-0002-step{ckpt['step']:06d}.json"
    assert [e["checkpoint"] for e in events(cut, "preempted")] == [ckpt["meta_path"]]
    assert Detector(ckpt["params"]).names == open(scenes["train"] + "_classes.txt").read().split()

    run(cmd + ["--resume", str(cut)])
    assert [(r["epoch"], r["step"]) for r in events(cut, "resume")] == [(1, ckpt["step"])]
    assert_same_run_end(uninterrupted, cut)


@pytest.fixture(scope="module")
def misplaced_val(scenes, tmp_path_factory):
    """The validation scenes with every object's box moved to a 3x3-pixel corner of its image: records whose boxes
    do not match the images, which no detection overlaps by IoU 0.5 (VOC07 mAP exactly 0)."""
    voc = str(tmp_path_factory.mktemp("misplaced") / "voc")
    shutil.copytree(os.path.join(os.path.dirname(scenes["val"]), "voc"), voc)
    for image_id in open(os.path.join(voc, "ImageSets", "Main", "val.txt")).read().split():
        path = os.path.join(voc, "Annotations", image_id + ".xml")
        tree = ET.parse(path)
        for obj in tree.getroot().iter("object"):
            obj.find("difficult").text = "0"
            for tag, value in (("xmin", 1), ("ymin", 1), ("xmax", 3), ("ymax", 3)):  # VOC's 1-based corners
                obj.find("bndbox").find(tag).text = str(value)
        tree.write(path)
    prefix = os.path.join(os.path.dirname(voc), "val")
    pack_detection(voc, prefix, "voc", split="val", classes_file=os.path.join(voc, "classes.txt"), progress=False)
    return prefix


def test_a_validation_map_of_zero_is_called_out_and_can_stop_the_run(scenes, misplaced_val, tmp_path):
    """After warm-up (none here), validation VOC07 mAP at zero is detection's sign of not learning: a warning line
    with this task's likely causes, a metrics.jsonl event, and with --stop-if-not-learning exit 6 after the epoch's
    checkpoint (the run asked for 2 epochs)."""
    out = tmp_path / "run"
    proc = run(command(scenes, out, "--epochs", "2", "--max-steps-per-epoch", "1", "--lr-warmup", "0", "--rec-val",
                       misplaced_val + ".rec", "--stop-if-not-learning"), fails=True)
    assert proc.returncode == 6, proc.stderr[-2000:]
    assert "warning: not learning at epoch 1: validation VOC07 mAP 0 is zero over 4 images" in proc.stdout
    assert "python -m recordio_tools check PREFIX" in proc.stdout and "--stop-if-not-learning" in proc.stderr
    assert [(w["kind"], w["epoch"]) for w in events(out, "warning")] == [("val_zero", 1)]
    assert [(e["epoch"], e["val_voc07_map"], e["val_images"]) for e in events(out, "epoch")] == [(1, 0.0, 4)]
    assert os.path.exists(out / "ckpt-0001.json") and not os.path.exists(out / "ckpt-0002.json")


@pytest.mark.parametrize("flags, message", [
    (("--short", "200", "--max-size", "100"), "--short 200 is larger than --max-size 100"),
    (("--model-arg", "box_head"), "expected KEY=VALUE"),
    (("--pretrained-base", "--backbone-params", __file__), "pass one"),
])
def test_bad_arguments_are_refused_by_name(scenes, flags, message, capsys):
    sys.path.insert(0, os.path.join(REPO, "scripts"))
    import train_detection

    with pytest.raises(SystemExit) as err:
        train_detection.parse_args(["--rec-train", scenes["train"] + ".rec", *flags])
    assert err.value.code == 2 and message in capsys.readouterr().err


def test_records_whose_classes_the_names_do_not_cover_are_refused(scenes, tmp_path):
    names = tmp_path / "two.txt"
    names.write_text("circle\ncross\n")
    proc = run(command(scenes, tmp_path / "out", "--classes", str(names), "--epochs", "1"), fails=True)
    assert proc.returncode == 2 and "class id" in proc.stderr and "record #" in proc.stderr
