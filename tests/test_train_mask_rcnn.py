"""scripts/train_detection.py --model mask_rcnn_fpn_<backbone> on generated scenes with instance masks: Mask R-CNN
is a mode of the detection task (a fifth loss, masked records), with the trainer's guarantees: two Horovod ranks
train and leave a checkpoint that is all detect/eval need; a run killed with SIGKILL and resumed ends with the
weights of an uninterrupted one; a record with damaged masks is replaced and named; records without masks are
refused naming the file and pack-detection's --masks. Tiny settings, as tests/test_train_detection.py's."""
import os
import shutil
import sys

import mxnet as mx
import numpy as np
import pytest

from conftest import assert_same_run_end, events
from conftest import kill_in_epoch_2_and_resume
from conftest import run_training as run
from demos.scenes import make_scenes
from recordio_tools.detection import pack_detection

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "scripts", "train_detection.py")
HOROVODRUN = os.path.join(os.path.dirname(sys.executable), "horovodrun")
# test_train_detection's small detector, and a light mask head (GluonCV's layout: convs, deconv, 28x28 per class)
FAST = ("--model", "mask_rcnn_fpn_resnest14", "--short", "80,96", "--max-size", "96", "--val-short", "96",
        "--batch-size", "1", "--lr", "0.02", "--lr-warmup", "2", "--log-interval", "1", "--model-arg", "box_head=2fc",
        "--model-arg", "box_units=128", "--model-arg", "norm=bn", "--model-arg", "num_sample=32",
        "--model-arg", "rpn_train_post_nms=128", "--model-arg", "rpn_test_post_nms=50",
        "--model-arg", "num_fcn_convs=1", "--model-arg", "mask_channels=32", "--model-arg", "rcnn_max_dets=50")
LOSSES = ("loss", "rpn_cls", "rpn_box", "rcnn_cls", "rcnn_box", "rcnn_mask")


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """Scenes with VOC instance masks packed with --masks (``train``, ``val``) and without (``plain``)."""
    root = tmp_path_factory.mktemp("scenes")
    make_scenes(str(root / "voc"), train=12, val=4, size=96, seed=3, masks=True)
    prefixes = {}
    for split in ("train", "val"):
        prefixes[split] = str(root / split)
        pack_detection(str(root / "voc"), prefixes[split], "voc", split=split,
                       classes_file=str(root / "voc" / "classes.txt"), progress=False, masks=True)
    prefixes["plain"] = str(root / "plain")
    pack_detection(str(root / "voc"), prefixes["plain"], "voc", split="train",
                   classes_file=str(root / "voc" / "classes.txt"), progress=False)
    return prefixes


def command(scenes, save_dir, *extra, np_=None, rec=None):
    launcher = [] if np_ is None else [HOROVODRUN, "--gloo", "-np", str(np_), "-H", f"localhost:{np_}"]
    return launcher + [sys.executable, SCRIPT, "--rec-train", rec or scenes["train"] + ".rec", *FAST, "--save-dir",
                       str(save_dir), *extra]


def test_scene_masks_are_the_objects_pixels_their_boxes_are_tight_around(scenes):
    from resnest_gluon.data.detection_masks import MaskedDetectionRecordDataset
    from resnest_gluon.dense.detection_data import DetectionRecordDataset

    masked, plain = MaskedDetectionRecordDataset(scenes["train"] + ".rec"), DetectionRecordDataset(
        scenes["plain"] + ".rec")
    assert len(masked) == len(plain) == 12
    for i in range(len(masked)):
        img, objects, masks = masked[i]
        img0, objects0 = plain[i]
        np.testing.assert_array_equal(objects, objects0)  # the same boxes as the unmasked pack
        assert masks.shape == (len(objects), 96, 96)
        for box, mask in zip(objects[:, :4], masks):
            ys, xs = np.nonzero(mask)
            assert [xs.min(), ys.min(), xs.max(), ys.max()] == box.tolist()


@pytest.fixture(scope="module")
def two_ranks(scenes, tmp_path_factory):
    """One step on each of 2 Horovod ranks, validated: the run's folder and its output."""
    if not os.path.exists(HOROVODRUN):
        pytest.skip("needs horovodrun next to the interpreter")
    out = tmp_path_factory.mktemp("two_ranks") / "run"
    proc = run(command(scenes, out, "--epochs", "1", "--max-steps-per-epoch", "1", "--rec-val",
                       scenes["val"] + ".rec", np_=2))
    return out, proc


def test_two_ranks_train_mask_rcnn_and_the_checkpoint_is_all_a_detector_needs(scenes, two_ranks):
    out, proc = two_ranks
    assert "2 worker(s) x batch 1" in proc.stdout
    [epoch] = events(out, "epoch")
    assert all(np.isfinite(epoch[k]) for k in LOSSES) and epoch["rcnn_mask"] > 0
    assert epoch["loss"] == pytest.approx(sum(epoch[k] for k in LOSSES[1:]), rel=1e-3)
    assert 0 <= epoch["val_voc07_map"] <= 1 and 0 <= epoch["val_mask_map"] <= 1  # mask AP on the masked records

    from resnest_gluon.dense.inference import Detector

    detector = Detector(str(out / "ckpt-0001.params"))  # model, classes, transform and mask head travel with it
    assert detector.info.model == "mask_rcnn_fpn_resnest14"
    assert detector.names == open(scenes["train"] + "_classes.txt").read().split()
    assert detector.net.model_info.arch["num_fcn_convs"] == 1 and detector.net.model_info.arch["mask_channels"] == 32
    found = detector.detect(np.zeros((96, 128, 3), np.uint8), threshold=0.0)
    assert found and all(o["mask"].shape == (96, 128) and o["mask"].dtype == bool for o in found)


def test_detect_draws_the_trained_masks_and_writes_them_as_rle(scenes, two_ranks, tmp_path):
    """detect.py --params with the checkpoint alone: each object's mask in the JSON (COCO RLE, decoded it is the
    Detector's mask), filled translucent in the drawing (changed, not painted over), and in the instance PNG."""
    import json

    from PIL import Image
    from pycocotools import mask as mask_utils

    from conftest import load_script
    from resnest_gluon.data.transforms import load_image
    from resnest_gluon.dense.drawing import draw_objects
    from resnest_gluon.dense.inference import Detector

    out, _ = two_ranks
    image = os.path.join(os.path.dirname(scenes["val"]), "voc", "JPEGImages", "val_000000.jpg")
    params = str(out / "ckpt-0001.params")
    assert load_script("detect").main([image, "--params", params, "--threshold", "0", "--out",
                                       str(tmp_path / "drawn")]) == 0
    (entry,) = json.loads((tmp_path / "drawn" / "detections.json").read_text())["results"]
    expected = Detector(params).detect(image, threshold=0.0)
    assert len(entry["objects"]) == len(expected) > 0
    pixels = load_image(image)
    drawn = np.asarray(Image.open(entry["drawing"]).convert("RGB"))
    instances = np.asarray(Image.open(entry["objects"][0]["mask_png"]))
    union = np.zeros(pixels.shape[:2], bool)
    for k, (obj, want) in enumerate(zip(entry["objects"], expected)):
        rle = obj["mask_rle"]
        assert rle["size"] == [96, 96]
        mask = mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()}).astype(bool)
        np.testing.assert_array_equal(mask, want["mask"])
        assert obj["mask_pixels"] == int((instances == k + 1).sum()) and not (instances == k + 1)[~mask].any()
        union |= mask
    assert union.any(), "no detection has a mask pixel: nothing to see drawn"
    np.testing.assert_array_equal(drawn, np.asarray(draw_objects(pixels, expected)))  # masks blended at alpha 0.5
    boxes_only = np.asarray(draw_objects(pixels, [{k: v for k, v in o.items() if k != "mask"} for o in expected]))
    assert (drawn[union] != boxes_only[union]).any()  # the masks show (where 50 labels and boxes leave room)


RESUME_FLAGS = ("--epochs", "2", "--max-steps-per-epoch", "3", "--seed", "4")


def test_killed_run_resumes_like_an_uninterrupted_one(scenes, tmp_path):
    whole = tmp_path / "whole"
    run(command(scenes, whole, *RESUME_FLAGS))
    assert all(np.isfinite(e["rcnn_mask"]) for e in events(whole, "epoch"))

    killed = tmp_path / "killed"
    cmd = command(scenes, killed, *RESUME_FLAGS)
    kill_in_epoch_2_and_resume(cmd, killed)
    assert_same_run_end(whole, killed)  # the mask head's weights too
    assert any(k.startswith("mask.") for k in mx.nd.load(str(killed / "ckpt-0002.params")))


def _damage_masks(prefix, out, position):
    """A copy of ``prefix``'s records whose record ``position`` has a byte of its first mask PNG flipped."""
    from resnest_gluon.data.detection_masks import encode_masked_detection_record, split_masked_detection_record

    reader = mx.recordio.MXIndexedRecordIO(prefix + ".idx", prefix + ".rec", "r")
    writer = mx.recordio.MXIndexedRecordIO(out + ".idx", out + ".rec", "w")
    for i, key in enumerate(reader.keys):
        payload = reader.read_idx(key)
        if i == position:
            header, image, masks = split_masked_detection_record(payload)
            masks = bytearray(masks)
            masks[-20] ^= 0x44  # the last PNG's compressed pixels: its checksums catch it
            payload = encode_masked_detection_record(key, header.label, image, bytes(masks))
        writer.write_idx(key, payload)
    writer.close()
    reader.close()
    shutil.copy(prefix + "_classes.txt", out + "_classes.txt")


def test_a_record_with_damaged_masks_is_replaced_and_named(scenes, tmp_path):
    damaged = str(tmp_path / "damaged")
    _damage_masks(scenes["train"], damaged, 2)
    proc = run(command(scenes, tmp_path / "out", "--epochs", "1", rec=damaged + ".rec"))
    assert "bad record:" in proc.stdout and "damaged.rec" in proc.stdout and "record #2" in proc.stdout, proc.stdout
    assert "damaged instance masks" in proc.stdout
    assert [e["key"] for e in events(tmp_path / "out", "bad_record")] == [2]
    assert len(events(tmp_path / "out", "epoch")) == 1


def test_records_without_masks_are_refused_naming_the_file_and_the_flag(scenes, tmp_path):
    proc = run(command(scenes, tmp_path / "out", "--epochs", "1", rec=scenes["plain"] + ".rec"), fails=True)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert f"--rec-train {scenes['plain']}.rec" in proc.stderr and "no instance masks" in proc.stderr
    assert "pack-detection" in proc.stderr and "--masks" in proc.stderr
    assert not os.path.exists(tmp_path / "out" / "ckpt-0001.json")
