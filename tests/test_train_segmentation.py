"""scripts/train_segmentation.py on generated scenes, as the other tasks of the one trainer are tested: two Horovod
ranks train and leave a checkpoint that eval_segmentation.py and segment.py need nothing else for (and whose
evaluation equals training's last validation); a run killed with SIGKILL, or stopped by SIGTERM at a step, and
resumed ends with the weights of an uninterrupted one; a NaN stops the run and keeps the last good checkpoint; a
damaged record is skipped and named; a full disk stops the run with exit code 4; the not-learning watch speaks this
task's flags; GluonCV's augmentation is reproduced (masks padded with pixels that do not count); the loss's gradient
is its own."""
import os
import random
import shutil
import signal
import sys

import mxnet as mx
import numpy as np
import pytest
from PIL import Image

from conftest import assert_same_run_end, events, start, wait_for_step
from conftest import kill_in_epoch_2_and_resume
from conftest import run_training as run
from demos.segscenes import make_segmentation_scenes
from recordio_tools.segmentation import pack_segmentation

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "scripts", "train_segmentation.py")
HOROVODRUN = os.path.join(os.path.dirname(sys.executable), "horovodrun")
FAST = ("--model", "deeplab_resnest14", "--base-size", "64", "--crop-size", "48", "--batch-size", "2", "--lr", "0.02",
        "--log-interval", "1", "-j", "0")


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    root = tmp_path_factory.mktemp("segscenes")
    make_segmentation_scenes(str(root / "voc"), "shapes", train=12, val=4, size=64, seed=3)
    prefixes = {"voc": str(root / "voc")}
    for split in ("train", "val"):
        prefixes[split] = str(root / split)
        pack_segmentation(str(root / "voc"), prefixes[split], "voc", split=split, progress=False)
    return prefixes


def command(scenes, save_dir, *extra, np_=None):
    launcher = [] if np_ is None else [HOROVODRUN, "--gloo", "-np", str(np_), "-H", f"localhost:{np_}"]
    return launcher + [sys.executable, SCRIPT, "--rec-train", scenes["train"] + ".rec", *FAST, "--save-dir",
                       str(save_dir), *extra]


def load_script(name):
    sys.path.insert(0, os.path.join(REPO, "scripts"))
    return __import__(name)


@pytest.mark.skipif(not os.path.exists(HOROVODRUN), reason="needs horovodrun next to the interpreter")
def test_two_ranks_train_and_the_checkpoint_is_all_eval_and_segment_need(scenes, tmp_path):
    out = tmp_path / "run"
    proc = run(command(scenes, out, "--num-epochs", "2", "--max-steps-per-epoch", "2", "--rec-val",
                       scenes["val"] + ".rec", np_=2))
    assert "2 worker(s) x batch 2" in proc.stdout
    epochs = events(out, "epoch")
    assert [e["epoch"] for e in epochs] == [1, 2]
    for e in epochs:
        assert np.isfinite(e["loss"]) and 0 <= e["pixel_acc"] <= 1 and 0 <= e["val_mean_iou"] <= 1
    assert os.path.getsize(out / "curves.png") > 0

    from resnest_gluon.dense.inference import Segmenter

    segmenter = Segmenter(str(out / "ckpt-0002.params"))  # no flags: model, classes and transform travel with it
    assert segmenter.names == open(scenes["train"] + "_classes.txt").read().split()
    assert (segmenter.config.short, segmenter.config.max_size) == (64, 64)
    # the checkpoint evaluated alone, on the records and on the folder they were packed from: training's numbers
    for data in (scenes["val"] + ".rec", scenes["voc"]):
        report = load_script("eval_segmentation").run(["--data", data, "--params", str(out / "ckpt-0002.params"),
                                                       "--json", str(tmp_path / "eval.json")])
        assert report["mean_iou"] == pytest.approx(epochs[-1]["val_mean_iou"], abs=1e-9)
        assert report["pixel_accuracy"] == pytest.approx(epochs[-1]["val_pixel_accuracy"], abs=1e-9)
    labels = segmenter.segment(np.zeros((50, 70, 3), np.uint8))
    assert labels.shape == (50, 70) and labels.max() < len(segmenter.names)


def test_a_dataset_folder_trains_as_its_records_do(scenes, tmp_path):
    """The VOC folder itself as --rec-train / --rec-val: the same images, the same first steps."""
    flags = ("--num-epochs", "1", "--max-steps-per-epoch", "2", "--seed", "1")
    run(command(scenes, tmp_path / "rec", *flags))
    folder = command(scenes, tmp_path / "voc", *flags)
    folder[folder.index("--rec-train") + 1] = scenes["voc"]
    proc = run(folder + ["--classes", scenes["train"] + "_classes.txt"])
    assert "12 training images" in proc.stdout
    a, b = events(tmp_path / "rec", "step"), events(tmp_path / "voc", "step")
    # the same scenes and crops; the records hold re-encoded JPEGs, so the pixels differ by JPEG's rounding only
    assert [s["loss"] for s in a] == pytest.approx([s["loss"] for s in b], rel=0.03)


RESUME_FLAGS = ("--num-epochs", "2", "--max-steps-per-epoch", "3", "--seed", "4")


@pytest.fixture(scope="module")
def uninterrupted(scenes, tmp_path_factory):
    whole = tmp_path_factory.mktemp("whole")
    run(command(scenes, whole, *RESUME_FLAGS))
    return whole


def test_killed_run_resumes_like_an_uninterrupted_one_and_a_nan_keeps_the_last_checkpoint(scenes, uninterrupted,
                                                                                          tmp_path):
    killed = tmp_path / "killed"
    cmd = command(scenes, killed, *RESUME_FLAGS)
    kill_in_epoch_2_and_resume(cmd, killed)
    assert_same_run_end(uninterrupted, killed)

    nan = run(command(scenes, killed, "--num-epochs", "4", "--max-steps-per-epoch", "3", "--resume", str(killed),
                      "--lr", "1e30"), fails=True)
    assert nan.returncode == 3 and "last good checkpoint" in nan.stderr, nan.stderr[-2000:]
    assert not os.path.exists(killed / "ckpt-0003.json")


def test_sigterm_stops_at_a_step_with_its_checkpoint_and_resume_ends_like_an_uninterrupted_run(scenes, uninterrupted,
                                                                                             tmp_path):
    cut = tmp_path / "cut"
    cmd = command(scenes, cut, *RESUME_FLAGS)
    proc = start(cmd, tmp_path / "cut.log", env=dict(os.environ, OMP_NUM_THREADS="1"))
    wait_for_step(cut, proc, epoch=2, step=1)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 5, open(tmp_path / "cut.log").read()[-3000:]

    from resnest_gluon.dense.inference import Segmenter
    from resnest_gluon.training import latest_checkpoint

    ckpt = latest_checkpoint(str(cut))
    assert ckpt["epoch"] == 1 and 1 <= ckpt["step"] <= 3
    assert Segmenter(ckpt["params"]).names == open(scenes["train"] + "_classes.txt").read().split()
    run(cmd + ["--resume", str(cut)])
    assert [(r["epoch"], r["step"]) for r in events(cut, "resume")] == [(1, ckpt["step"])]
    assert_same_run_end(uninterrupted, cut)


def _damage_one_mask(scenes, tmp_path):
    """A copy of the training records whose record #1 has its mask bytes cut."""
    from resnest_gluon.data.segmentation_records import encode_segmentation_record, split_segmentation_payload

    prefix = str(tmp_path / "damaged")
    reader = mx.recordio.MXIndexedRecordIO(scenes["train"] + ".idx", scenes["train"] + ".rec", "r")
    writer = mx.recordio.MXIndexedRecordIO(prefix + ".idx", prefix + ".rec", "w")
    for i, key in enumerate(reader.keys):
        payload = reader.read_idx(key)
        if i == 1:
            _, image, mask = split_segmentation_payload(payload)
            payload = encode_segmentation_record(key, image, mask[:len(mask) // 3])
        writer.write_idx(key, payload)
    writer.close()
    shutil.copy(scenes["train"] + "_classes.txt", prefix + "_classes.txt")
    return prefix


def test_a_damaged_record_is_skipped_and_named(scenes, tmp_path):
    prefix = _damage_one_mask(scenes, tmp_path)
    cmd = command(scenes, tmp_path / "out", "--num-epochs", "1", "--batch-size", "2")
    cmd[cmd.index("--rec-train") + 1] = prefix + ".rec"
    proc = run(cmd)
    assert "bad record:" in proc.stdout and "damaged.rec" in proc.stdout and "record #1" in proc.stdout, proc.stdout
    assert [e["key"] for e in events(tmp_path / "out", "bad_record")] == [1]


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="mounting a tmpfs needs root")
def test_a_full_disk_stops_the_run_with_exit_code_4(scenes, tmp_path):
    save = tmp_path / "small"
    save.mkdir()
    cmd = command(scenes, save, "--num-epochs", "1", "--max-steps-per-epoch", "1")
    shell = ["unshare", "-m", "--propagation", "private", "sh", "-c",
             'mount -t tmpfs -o size=1m tmpfs "$0" && exec "$@"', str(save), *cmd]
    proc = run(shell, fails=True)
    assert proc.returncode == 4 and "no space left on device" in proc.stderr, proc.stderr[-2000:]
    assert "the last complete checkpoint" in proc.stderr.splitlines()[-1]  # one line says what is kept


def test_the_not_learning_watch_names_this_tasks_causes():
    from resnest_gluon.training.optim import learning_rate
    from resnest_gluon.training.segmentation import SegmentationConfig, SegmentationTask
    from resnest_gluon.training.trainer import RunConfig

    task = SegmentationTask(SegmentationConfig())
    task.warmup_epochs = 0
    watch = task.learning_watch(RunConfig("x.rec", num_epochs=10), learning_rate(0.005, 2, 1, 16))
    found = [f for epoch, loss in enumerate((1.0, 1.2, 1.5, 2.0), 1) for f in watch.update(epoch, loss)]
    assert found and "--lr" in found[0].message and "recordio_tools check" in found[0].message


@pytest.mark.parametrize("flags, message", [
    (("--scale", "2,1"), "--scale must be LOW,HIGH"),
    (("--crop-size", "4"), "--crop-size must be at least 8"),
    (("--pretrained-base", "--backbone-params", __file__), "pass one"),
])
def test_bad_arguments_are_refused_by_name(scenes, flags, message, capsys):
    with pytest.raises(SystemExit) as err:
        load_script("train_segmentation").parse_args(["--rec-train", scenes["train"] + ".rec", *flags])
    assert err.value.code == 2 and message in capsys.readouterr().err


def test_the_model_follows_the_backbone_file_and_the_recipe_sets_defaults(scenes, tmp_path):
    from resnest_gluon import get_model, save_trained

    path = str(tmp_path / "backbone.params")
    net = get_model("resnest14", classes=3)
    net.initialize()
    save_trained(net, path)
    args = load_script("train_segmentation").parse_args(["--rec-train", scenes["train"] + ".rec", "--recipe", "small",
                                                         "--backbone-params", path, "--crop-size", "64"])
    from resnest_gluon.training.segmentation import SegmentationTask

    script = load_script("train_segmentation")
    assert SegmentationTask(script.configs(args)[0]).config.model == "deeplab_resnest14"
    with pytest.raises(ValueError, match="has no model information"):
        SegmentationTask(script.configs(script.parse_args(["--rec-train", scenes["train"] + ".rec",
                                                             "--backbone-params", __file__]))[0])
    assert (args.base_size, args.crop_size, args.recipe_overrides) == (96, 64, ("crop_size",))
    assert args.scale == (0.85, 1.15) and (args.output_stride, args.decoder, args.batch_size) == (16, True, 4)
    assert not args.head_dropout and args.class_weight_power == 0.5


# ------------------------------------------------------------------------------------------ the parts, exactly

def test_the_augmentation_is_gluoncvs_with_padding_that_does_not_count():
    from gluoncv.data.segbase import SegmentationDataset

    from resnest_gluon.dense.segmentation_data import SegmentationTrainTransform

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (60, 90, 3), dtype=np.uint8)
    labels = rng.integers(-1, 4, (60, 90))
    ours = SegmentationTrainTransform(base_size=64, crop_size=72, mean=(0, 0, 0), std=(1, 1, 1))
    theirs = SegmentationDataset.__new__(SegmentationDataset)
    theirs.base_size, theirs.crop_size = 64, 72
    mask = Image.fromarray(np.where(labels < 0, 255, labels).astype(np.uint8))
    padded = 0
    for seed in range(12):
        random.seed(seed)
        x, y = ours(image, labels)
        random.seed(seed)
        img_t, mask_t = theirs._sync_transform(Image.fromarray(image), mask)
        np.testing.assert_allclose(x.transpose(1, 2, 0) * 255, img_t.asnumpy(), atol=1e-3)
        mask_t = mask_t.asnumpy()
        # GluonCV pads masks with 0 (a class) and keeps VOC's 255; ours: -1 for both, so padding never counts
        inside = (mask_t != 255) & (y >= 0)
        np.testing.assert_array_equal(y[inside], mask_t[inside])
        added = (y == -1) & (mask_t == 0)
        padded += int(added.sum())
        assert not ((y == -1) & (mask_t != 0) & (mask_t != 255)).any()
    assert padded > 0  # crops larger than the scaled image were padded in some draws


def test_the_loss_is_the_mean_over_counted_pixels_and_its_gradient_its_own():
    from gluoncv.loss import MixSoftmaxCrossEntropyLoss

    from resnest_gluon.training.segmentation import SegmentationLoss

    rng = np.random.default_rng(1)
    main, aux = (mx.nd.array(rng.normal(size=(2, 4, 5, 6))) for _ in range(2))
    labels = mx.nd.array(rng.integers(0, 4, (2, 5, 6)))
    total, main_loss, _ = SegmentationLoss(0.5)((main, aux), labels)
    # nothing ignored: the value is GluonCV's (which averages over all pixels)
    expected = MixSoftmaxCrossEntropyLoss(aux=True, aux_weight=0.5)(main, aux, labels)
    np.testing.assert_allclose(total.asnumpy(), expected.asnumpy(), rtol=1e-5)
    # with ignored pixels: each image's mean over its counted pixels, and the gradient scales with aux_weight
    labels[0, 0] = -1
    grads = []
    for weight in (0.5, 1.0):
        aux.attach_grad()
        with mx.autograd.record():
            total, main_loss, _ = SegmentationLoss(weight)((main, aux), labels)
        total.backward()
        grads.append(aux.grad.copy())
    np.testing.assert_allclose(grads[1].asnumpy(), 2 * grads[0].asnumpy(), rtol=1e-5)
    logp = mx.nd.log_softmax(main, axis=1).asnumpy()
    lab = labels.asnumpy().astype(int)
    counted = lab >= 0
    picked = np.take_along_axis(logp, np.maximum(lab, 0)[:, None], 1)[:, 0]
    np.testing.assert_allclose(main_loss.asnumpy(), -(picked * counted).sum((1, 2)) / counted.sum((1, 2)), rtol=1e-5)


def test_class_weights_come_from_the_training_masks_and_weigh_the_loss():
    from resnest_gluon.dense.segmentation_data import balanced_class_weights
    from resnest_gluon.training.segmentation import SegmentationLoss

    np.testing.assert_allclose(balanced_class_weights([100, 25, 0, 1], 0.5), [1, 2, 1, 10])  # 10: the cap
    np.testing.assert_allclose(balanced_class_weights([100, 25, 0, 1], 0), [1, 1, 1, 1])
    rng = np.random.default_rng(2)
    logits = mx.nd.array(rng.normal(size=(2, 4, 5, 6)))
    labels = mx.nd.array(rng.integers(-1, 4, (2, 5, 6)))
    plain = SegmentationLoss(0)(logits, labels)[0].asnumpy()
    np.testing.assert_allclose(SegmentationLoss(0, [2, 2, 2, 2])(logits, labels)[0].asnumpy(), plain, rtol=1e-5)
    weights = np.array([1.0, 3.0, 1.0, 0.5])
    lab = labels.asnumpy().astype(int)
    w = np.where(lab >= 0, weights[np.maximum(lab, 0)], 0)
    picked = np.take_along_axis(mx.nd.log_softmax(logits, axis=1).asnumpy(), np.maximum(lab, 0)[:, None], 1)[:, 0]
    np.testing.assert_allclose(SegmentationLoss(0, weights)(logits, labels)[0].asnumpy(),
                               -(picked * w).sum((1, 2)) / w.sum((1, 2)), rtol=1e-5)


def test_class_pixel_counts_read_the_masks_only(scenes):
    from resnest_gluon.dense.segmentation_data import class_pixel_counts, open_segmentation_data

    data = open_segmentation_data(scenes["train"] + ".rec")
    expected = np.zeros(6, np.int64)
    for i in range(len(data)):
        labels = data.load(i)[1]
        expected += np.bincount(labels[labels >= 0], minlength=6)
    pixels, read, skipped = class_pixel_counts(data, 6)
    assert (read, skipped) == (len(data), 0) and expected[1:].sum() > 0
    np.testing.assert_array_equal(pixels, expected)
    with pytest.raises(ValueError, match="record #.*class 5 in the mask, but there are 3 class names"):
        class_pixel_counts(data, 3)


def test_head_dropout_off_makes_training_passes_repeat():
    from resnest_gluon.training.segmentation import SegmentationConfig, build_segmenter

    x = mx.nd.random.uniform(shape=(2, 3, 48, 48))
    outputs = {}
    for dropout in (True, False):
        net = build_segmenter(SegmentationConfig(model="deeplab_resnest14", head_dropout=dropout, decoder=True),
                              ["a", "b", "c"], mx.cpu())
        with mx.autograd.record():
            outputs[dropout] = [net(x)[0].asnumpy() for _ in range(2)]
    assert not np.allclose(*outputs[True])  # GluonCV's heads drop at random
    np.testing.assert_allclose(*outputs[False], rtol=1e-5, atol=1e-6)
