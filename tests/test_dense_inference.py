"""Trained dense models travel with what is needed to use them, and scripts/detect.py / segment.py draw their results.

A detector and a segmenter are built on a backbone "trained" by this project (a classification file written by
``save_trained``), saved, and run on generated images through the scripts, at a small resize to stay fast.
"""
import json

import mxnet as mx
import numpy as np
import pytest
from PIL import Image

from conftest import load_script, randomize_bn
from recgen import make_image
import resnest_gluon as rg
from resnest_gluon.ops.attention_op import OP_NAME, available
from resnest_gluon.dense import DenseDataConfig
from resnest_gluon.dense.inference import Detector, Segmenter, preprocess


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A resnest14 classification file (the "trained backbone"), three images and an undecodable file."""
    d = tmp_path_factory.mktemp("dense")
    backbone = rg.get_model("resnest14", classes=5)
    mx.random.seed(1)
    backbone.initialize(mx.init.Xavier(magnitude=2))
    randomize_bn(backbone, seed=1)
    rg.save_trained(backbone, str(d / "backbone.params"), class_names=list("abcde"))
    images = []
    for i, (h, w) in enumerate([(90, 140), (120, 80), (100, 100)]):
        images.append(str(d / f"img{i}.png"))
        Image.fromarray(make_image(i, h, w, seed=3)).save(images[-1])
    (d / "broken.jpg").write_bytes(b"not a picture")
    return d, images


def test_resize_is_gluoncvs_and_preprocess_matches_its_validation_transform():
    from gluoncv.data.transforms.image import resize_short_within
    from gluoncv.data.transforms.presets.rcnn import FasterRCNNDefaultValTransform

    cfg = DenseDataConfig(96, 128)
    for h, w in ((90, 140), (140, 90), (50, 50), (30, 200), (333, 501)):
        assert cfg.resized_shape(h, w) == resize_short_within(mx.nd.zeros((h, w, 3), dtype="uint8"), 96, 128,
                                                              interp=1).shape[:2]
    img = make_image(0, 90, 140, seed=3)
    x, (sy, sx) = preprocess(img, cfg)
    expected = FasterRCNNDefaultValTransform(96, 128)(mx.nd.array(img, dtype="uint8"), np.zeros((1, 5)))[0]
    assert x.shape[1:] == expected.shape and (sy, sx) == (90 / x.shape[2], 140 / x.shape[3])
    diff = np.abs(x[0].asnumpy() - expected.asnumpy())
    assert diff.max() < 0.02 and diff.mean() < 1e-3  # OpenCV builds may round a pixel differently (1/255/std)
    with pytest.raises(ValueError, match="max_size .* at least short"):
        DenseDataConfig(200, 100).checked()


def test_segmenter_from_a_trained_backbone_saves_loads_and_segments(files, tmp_path):
    d, images = files
    net = rg.get_model("deeplab_resnest14", classes=["sky", "road", "car"], pretrained_base=str(d / "backbone.params"))
    ours = rg.load_trained(str(d / "backbone.params"))
    np.testing.assert_array_equal(net.backbone.conv1[0].weight.data().asnumpy(),
                                  ours.conv1[0].weight.data().asnumpy())
    path = str(tmp_path / "seg.params")
    info = rg.save_trained(net, path)
    assert info.model == "deeplab_resnest14" and info.class_names == ("sky", "road", "car")
    assert info.data_config == DenseDataConfig(520, 520) and info.arch == {}
    meta = json.loads((tmp_path / "seg.json").read_text())["model"]
    assert meta["data_config"]["short"] == 520 and meta["num_classes"] == 3

    out = tmp_path / "masks"
    report = load_script("segment").run([*images[:2], "--params", path, "--out", str(out), "--short", "64",
                                          "--max-size", "96"])
    segmenter = Segmenter(path, short=64, max_size=96)
    assert report["data_config"]["short"] == 64 and report["class_names"] == ["sky", "road", "car"]
    for entry, image in zip(report["results"], images):
        mask = np.array(Image.open(entry["mask"]))
        assert Image.open(entry["mask"]).mode == "P" and mask.shape == (entry["height"], entry["width"])
        np.testing.assert_array_equal(mask, segmenter.segment(image))  # the PNG holds the class indices
        assert Image.open(entry["overlay"]).size == (entry["width"], entry["height"])
        fractions = {c["class"]: c["fraction"] for c in entry["classes"]}
        assert abs(sum(fractions.values()) - 1) < 1e-9
        assert fractions == {n: float((mask == k).mean()) for k, n in enumerate(["sky", "road", "car"])
                             if (mask == k).any()}
    assert json.loads((out / "segments.json").read_text())["results"] == report["results"]

    with pytest.raises(ValueError, match="detection model"):
        Detector(path)
    with pytest.raises(ValueError, match="holds a resnest14, not the resnest50"):
        rg.get_model("deeplab_resnest50", classes=3, pretrained_base=str(d / "backbone.params"))


def test_detector_from_a_trained_backbone_draws_boxes_and_skips_a_bad_image(files, tmp_path, capsys):
    d, images = files
    net = rg.get_model("faster_rcnn_fpn_resnest14", classes=["circle", "square"],
                       pretrained_base=str(d / "backbone.params"), rpn_test_post_nms=100)
    path = str(tmp_path / "det.params")
    rg.save_trained(net, path)
    assert rg.trained.read_info(path).arch == {"rpn_test_post_nms": 100}
    if available():  # the fused split-attention operator runs inside GluonCV's traced FPN
        assert OP_NAME in net.features._cached_graph[1].tojson()

    out = tmp_path / "drawn"
    with pytest.raises(SystemExit) as stop:
        load_script("detect").main([images[0], str(d / "broken.jpg"), "--params", path, "--out", str(out),
                                    "--short", "96", "--max-size", "128", "--threshold", "0.05"])
    assert stop.value.code == 3 and "broken.jpg" in capsys.readouterr().err
    report = json.loads((out / "detections.json").read_text())
    assert [s["image"] for s in report["skipped"]] == [str(d / "broken.jpg")] and report["threshold"] == 0.05
    (entry,) = report["results"]
    assert Image.open(entry["drawing"]).size == (140, 90)
    objects = entry["objects"]
    expected = Detector(path, short=96, max_size=128).detect(images[0], threshold=0.05)
    assert len(objects) == len(expected) > 0
    for got, want in zip(objects, expected):
        assert got["class"] == ["circle", "square"][got["label"]] and got["score"] >= 0.05
        assert got["label"] == want["label"] and abs(got["score"] - want["score"]) < 1e-6
        x1, y1, x2, y2 = got["box"]
        assert 0 <= x1 <= x2 <= 140 and 0 <= y1 <= y2 <= 90
    assert [o["score"] for o in objects] == sorted((o["score"] for o in objects), reverse=True)

    capsys.readouterr()
    assert load_script("detect").main([images[0], "--params", str(d / "backbone.params")]) == 2
    assert "holds a resnest14, a classification model, not a detection model" in capsys.readouterr().err
    assert load_script("detect").main([images[0], "--params", str(d / "backbone.params"), "--short", "64"]) == 2
    assert "resnest14's data config has no short" in capsys.readouterr().err
