"""scripts/eval_segmentation.py: pixel accuracy and mean IoU of a trained segmenter on a Pascal VOC or ADE20K folder.

A DeepLabV3 on a random resnest14 is saved as a trained model; the datasets are generated images whose masks are the
model's own predictions, so the right answer is known: 100 %, and exactly what a changed region costs.
"""
import json
import os
import re
import subprocess
import sys

import mxnet as mx
import numpy as np
import pytest
from PIL import Image

from conftest import REPO, load_script, randomize_bn
from recgen import make_image
import resnest_gluon as rg
from resnest_gluon.dense.drawing import class_map_image
from resnest_gluon.dense.inference import Segmenter
from resnest_gluon.dense.segmentation_eval import IGNORE, SegmentationFolder, SegmentationScores

CLASSES = ["sky", "road", "car"]
SIZE = ["--short", "64", "--max-size", "96"]
SHAPES = [(60, 90), (80, 64), (72, 72), (50, 100)]
HOROVODRUN = os.path.join(os.path.dirname(sys.executable), "horovodrun")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A saved DeepLabV3 (random weights), its Segmenter at a small resize, and its predictions on four images."""
    d = tmp_path_factory.mktemp("seg_eval")
    mx.random.seed(2)
    net = rg.get_model("deeplab_resnest14", classes=CLASSES)
    net.backbone.initialize(mx.init.Xavier(magnitude=2), force_reinit=True)
    randomize_bn(net, seed=2)
    images = [make_image(i, h, w, seed=5) for i, (h, w) in enumerate(SHAPES)]
    params = str(d / "seg.params")
    rg.save_trained(net, params)
    # centre each class's logit on these images, so that random weights predict all three classes, in patches
    logits = np.concatenate([Segmenter(params, short=64, max_size=96).logits(img).asnumpy().reshape(3, -1)
                             for img in images], axis=1)
    bias = net.head.block[-1].bias
    bias.set_data(bias.data() - mx.nd.array(np.median(logits, axis=1)))
    rg.save_trained(net, params)
    segmenter = Segmenter(params, short=64, max_size=96)
    return {"dir": d, "params": params, "segmenter": segmenter, "images": images,
            "predictions": [segmenter.segment(img) for img in images]}


def write_voc(root, images, masks, split="val"):
    """Pascal VOC's layout: ImageSets/Segmentation/SPLIT.txt, JPEGImages/ID.jpg, SegmentationClass/ID.png (palette
    PNGs whose pixel values are the classes, 255 on boundaries), as VOC2012 ships them."""
    (root / "JPEGImages").mkdir(parents=True)
    (root / "SegmentationClass").mkdir()
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    ids = [f"2007_{i:06d}" for i in range(len(images))]
    for i, image, mask in zip(ids, images, masks):
        Image.fromarray(image).save(root / "JPEGImages" / f"{i}.jpg", quality=95)
        class_map_image(mask).save(root / "SegmentationClass" / f"{i}.png")
    (root / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    return ids


def test_scores_by_hand_and_the_classes_that_count():
    scores = SegmentationScores(3)
    scores.update(np.array([[0, 0, 1, 1, IGNORE]]), np.array([[0, 1, 1, 1, 2]]))
    result = scores.result()
    assert result["pixel_accuracy"] == 3 / 4  # the ignored pixel predicted as class 2 counts nowhere
    assert [c["iou"] for c in result["per_class"]] == [1 / 2, 2 / 3, None]
    assert [c["pixels"] for c in result["per_class"]] == [2, 2, 0]
    assert result["mean_iou"] == pytest.approx((1 / 2 + 2 / 3) / 2) and result["classes_in_mean"] == 2
    assert result["mean_iou_all_classes"] == pytest.approx((1 / 2 + 2 / 3) / 3)  # GluonCV's: class 2 as 0
    with pytest.raises(ValueError, match="a.png: class 3 in the mask, the model has 3 classes"):
        scores.update(np.array([[3]]), np.array([[0]]), where="a.png")


def test_counts_equal_gluoncvs_segmentation_metric():
    from gluoncv.utils.metrics.segmentation import SegmentationMetric

    rng = np.random.RandomState(0)
    for classes_present in (5, 4):  # every class, then one neither labelled nor predicted
        ours, theirs = SegmentationScores(5), SegmentationMetric(5)
        for _ in range(3):
            labels = rng.randint(0, classes_present, (17, 23))
            labels[rng.rand(17, 23) < 0.1] = IGNORE
            logits = rng.rand(1, 5, 17, 23)
            logits[:, classes_present:] = -1
            ours.update(labels, logits[0].argmax(0))
            theirs.update(mx.nd.array(labels[None]), mx.nd.array(logits))
        pix_acc, miou = theirs.get()
        result = ours.result()
        assert result["pixel_accuracy"] == pytest.approx(pix_acc, abs=1e-12)
        assert result["mean_iou_all_classes"] == pytest.approx(miou, abs=1e-12)
        assert (result["mean_iou"] == pytest.approx(miou, abs=1e-12)) == (classes_present == 5)


def test_voc_folder_labelled_with_the_models_predictions_scores_100_and_a_changed_region_costs_its_pixels(
        model, tmp_path):
    jpeg_predictions = []
    for image in model["images"]:  # the model sees the JPEG, not the original
        root = tmp_path / "probe.jpg"
        Image.fromarray(image).save(root, quality=95)
        jpeg_predictions.append(model["segmenter"].segment(str(root)))
    masks = []
    for prediction in jpeg_predictions:
        mask = prediction.copy()
        mask[0] = 255
        masks.append(mask)
    write_voc(tmp_path / "VOC2012", model["images"], masks)
    out = tmp_path / "eval"
    report = load_script("eval_segmentation").run(["--data", str(tmp_path / "VOC2012"), "--params",
                                                    model["params"], *SIZE, "--out", str(out)])
    assert report["layout"] == "voc" and report["images"] == 4 and report["skipped"] == []
    assert report["pixel_accuracy"] == 1.0 and report["mean_iou"] == 1.0 and report["classes_in_mean"] == 3
    assert sum(c["pixels"] for c in report["per_class"]) == sum(m.size - m.shape[1] for m in masks)
    assert json.loads((out / "segmentation_eval.json").read_text())["mean_iou"] == 1.0

    # relabel a 10x10 block of image 0 as another class than predicted: exactly those pixels become errors
    changed = masks[0].copy()
    block = changed[10:20, 10:20]
    block[...] = (jpeg_predictions[0][10:20, 10:20] + 1) % 3
    masks[0] = changed
    write_voc(tmp_path / "VOC2012b", model["images"], masks)
    report = load_script("eval_segmentation").run(["--data", str(tmp_path / "VOC2012b"), "--params",
                                                    model["params"], *SIZE, "--out", str(out)])
    labelled = sum(m.size - m.shape[1] for m in masks)
    assert report["pixel_accuracy"] == pytest.approx((labelled - 100) / labelled, abs=1e-12)
    predictions = np.concatenate([p[1:].ravel() for p in jpeg_predictions])
    labels = np.concatenate([m[1:].ravel() for m in masks])
    for k, entry in enumerate(report["per_class"]):
        inter = np.sum((labels == k) & (predictions == k))
        union = np.sum((labels == k) | (predictions == k))
        assert entry["iou"] == (pytest.approx(inter / union, abs=1e-12) if union else None), CLASSES[k]


def test_ade20k_folder_with_its_label_offset_and_damaged_files_skipped(model, tmp_path):
    root = tmp_path / "ADEChallengeData2016"
    (root / "images" / "validation").mkdir(parents=True)
    (root / "annotations" / "validation").mkdir(parents=True)
    for i, image in enumerate(model["images"]):
        Image.fromarray(image).save(root / "images" / "validation" / f"ADE_val_{i:08d}.jpg", quality=95)
        prediction = model["segmenter"].segment(str(root / "images" / "validation" / f"ADE_val_{i:08d}.jpg"))
        mask = (prediction + 1).astype(np.uint8)  # ADE20K: class + 1, 0 is not labelled
        mask[:, 0] = 0
        if i == 1:
            mask = mask[:-1]  # a mask of another size than its image
        Image.fromarray(mask, mode="L").save(root / "annotations" / "validation" / f"ADE_val_{i:08d}.png")
    (root / "images" / "validation" / "ADE_val_00000009.jpg").write_bytes(b"not a picture")
    Image.fromarray(np.ones((5, 5), np.uint8), mode="L").save(root / "annotations" / "validation" /
                                                              "ADE_val_00000009.png")
    data = SegmentationFolder(str(root))
    assert data.layout == "ade20k" and len(data) == 5
    labels = data.labels(0)
    assert labels.min() == IGNORE and (labels[:, 1:] == model["segmenter"].segment(data.image_path(0))[:, 1:]).all()

    report = load_script("eval_segmentation").run(["--data", str(root), "--params", model["params"], *SIZE,
                                                    "--out", str(tmp_path / "eval")])
    assert report["images"] == 3 and report["pixel_accuracy"] == 1.0 and report["mean_iou"] == 1.0
    reasons = {s["image"].rsplit("/", 1)[1]: s["reason"] for s in report["skipped"]}
    assert set(reasons) == {"ADE_val_00000001.jpg", "ADE_val_00000009.jpg"}
    assert "ADE_val_00000001.png: mask of " in reasons["ADE_val_00000001.jpg"]
    assert "not an image OpenCV can decode" in reasons["ADE_val_00000009.jpg"]

    if not os.path.exists(HOROVODRUN):
        pytest.skip("needs horovodrun next to the interpreter")
    out = tmp_path / "hvd.json"  # two ranks, each a share of the images: the numbers of one process
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH")) if p),
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([HOROVODRUN, "--gloo", "-np", "2", "-H", "localhost:2", sys.executable,
                           os.path.join(REPO, "scripts", "eval_segmentation.py"), "--data", str(root), "--params",
                           model["params"], *SIZE, "--json", str(out)], capture_output=True, text=True, timeout=300,
                          env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    both = json.loads(out.read_text())
    assert both["world_size"] == 2 and proc.stdout.count("pixel accuracy") == 1  # only rank 0 prints
    for key in ("images", "pixel_accuracy", "mean_iou", "per_class", "skipped"):
        assert both[key] == report[key], key


def test_wrong_inputs_stop_with_a_message_naming_them(model, tmp_path, capsys):
    masks = [np.full(shape, 5, np.uint8) for shape in SHAPES]  # class 5: the model has 3
    write_voc(tmp_path / "VOC2012", model["images"], masks)
    script = load_script("eval_segmentation")

    def error_of(*argv):  # exit code 2 and one line on stderr (after the progress bar, which clears itself)
        assert script.main(list(argv)) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.endswith("\n"), err
        return err.rsplit("\r", 1)[-1]

    assert re.search(r"SegmentationClass/2007_000000.png: class 5 in the mask, the model has 3",
                     error_of("--data", str(tmp_path / "VOC2012"), "--params", model["params"], *SIZE))
    assert "no list ImageSets/Segmentation/train.txt for split 'train'" in error_of(
        "--data", str(tmp_path / "VOC2012"), "--split", "train", "--params", model["params"])
    assert re.search("not a Pascal VOC .* or ADE20K .* folder", error_of("--data", str(tmp_path), "--params",
                                                                         model["params"]))
    classifier = rg.get_model("resnest14", classes=3)
    classifier.initialize()
    rg.save_trained(classifier, str(tmp_path / "cls.params"))
    assert "not a segmentation model" in error_of("--data", str(tmp_path / "VOC2012"), "--params",
                                                  str(tmp_path / "cls.params"))
