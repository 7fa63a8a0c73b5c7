"""scripts/predict.py and resnest_gluon.predict: names, top-k order and probabilities checked independently."""
import json
import math
import os
import subprocess
import sys

import cv2
import mxnet as mx
import numpy as np
import pytest
from PIL import Image

from conftest import REPO, randomize_bn
from recgen import make_image
from resnest_gluon.predict import IMAGENET_CLASSES_FILE, Predictor, load_class_names
from resnest_gluon.zoo import get_model

PREDICT = os.path.join(REPO, "scripts", "predict.py")
NAMES = [f"thing_{i}" for i in range(10)]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("predict")
    net = get_model("resnest14", classes=10)
    mx.random.seed(2)  # the same weights whatever ran before in this process
    net.initialize(mx.init.Xavier(magnitude=3))
    randomize_bn(net, seed=2)
    net.save_parameters(str(d / "r14.params"))
    (d / "names.txt").write_text("\n".join(NAMES) + "\n")
    (d / "short.txt").write_text("\n".join(NAMES[:7]) + "\n")
    images = []
    for i, (h, w) in enumerate([(90, 140), (120, 80), (100, 100)]):
        path = str(d / f"img{i}.png")
        Image.fromarray(make_image(i, h, w, seed=5)).save(path)
        images.append(path)
    return d, images


def reference_probs(d, path):
    """resnest14's default protocol written out: short side to 256, centre 224, normalise, softmax."""
    net = get_model("resnest14", classes=10)
    net.load_parameters(str(d / "r14.params"))
    img = np.asarray(Image.open(path).convert("RGB"))
    h, w = img.shape[:2]
    nh, nw = (256 * h // w, 256) if h > w else (256, 256 * w // h)
    img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
    y0, x0 = (nh - 224) // 2, (nw - 224) // 2
    img = (img[y0:y0 + 224, x0:x0 + 224] / 255.0 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]
    logits = net(mx.nd.array(img.transpose(2, 0, 1)[None])).asnumpy()[0].astype(np.float64)
    e = np.exp(logits - logits.max())
    return e / e.sum()


def test_cli_topk_names_and_probabilities(setup):
    d, images = setup
    out = str(d / "out.json")
    proc = subprocess.run([sys.executable, PREDICT, *images, "--model", "resnest14", "--params",
                           str(d / "r14.params"), "--classes", str(d / "names.txt"), "--topk", "3",
                           "--json", out], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    res = json.load(open(out))
    assert [p["image"] for p in res["predictions"]] == images
    for pred in res["predictions"]:
        top = pred["top"]
        probs = [t["probability"] for t in top]
        assert len(top) == 3 and probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-9
        ref = reference_probs(d, pred["image"])
        assert [t["label"] for t in top] == list(np.argsort(-ref)[:3])
        assert [t["class"] for t in top] == [NAMES[t["label"]] for t in top]
        np.testing.assert_allclose(probs, np.sort(ref)[::-1][:3], atol=2e-3)
        assert top[0]["class"] in proc.stdout


def test_api_returns_name_probability_pairs(setup):
    d, images = setup
    predictor = Predictor("resnest14", params=str(d / "r14.params"), classes=NAMES)
    result = predictor.predict(images[:2], topk=10)
    assert len(result) == 2
    for top in result:
        assert sorted(name for name, _ in top) == sorted(NAMES)
        assert math.isclose(sum(p for _, p in top), 1.0, rel_tol=1e-6)


def test_class_file_of_wrong_length_is_an_error(setup):
    d, images = setup
    with pytest.raises(ValueError, match=r"short.txt has 7 class names but the model .* has 10 classes"):
        Predictor("resnest14", params=str(d / "r14.params"), classes=str(d / "short.txt"))
    proc = subprocess.run([sys.executable, PREDICT, images[0], "--model", "resnest14", "--params",
                           str(d / "r14.params")], capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "has 10 classes and no class names beside it" in proc.stderr  # a bare file


def test_shipped_imagenet_names():
    names = load_class_names()
    assert names == load_class_names(IMAGENET_CLASSES_FILE)
    assert len(names) == 1000 and len(set(names)) == 1000
    assert names[0] == "tench" and names[1] == "goldfish" and names[-1] == "toilet tissue"
    assert names[134] == "crane (bird)" and names[517] == "crane (machine)"


def test_blank_line_in_class_file_is_an_error(tmp_path):
    path = tmp_path / "names.txt"
    path.write_text("a\n\nb\n")
    with pytest.raises(ValueError, match=r"names.txt:2: blank line"):
        load_class_names(str(path))


def test_int8_predictor_agrees_with_float32_and_cli_needs_calibration(setup, tmp_path):
    from recgen import make_rec
    from resnest_gluon.data import ValRecordIter
    from resnest_gluon.zoo import get_config

    d, images = setup
    make_rec(str(tmp_path / "calib"), 8, seed=4)
    calib = ValRecordIter(str(tmp_path / "calib.rec"), get_config("resnest14").data, batch_size=4, num_workers=1)
    ref = Predictor("resnest14", params=str(d / "r14.params"), classes=NAMES).probabilities(images)
    low = Predictor("resnest14", params=str(d / "r14.params"), classes=NAMES, dtype="int8", calib_data=calib,
                    num_calib_batches=2).probabilities(images)
    assert np.abs(low - ref).max() < 0.1
    top2 = np.sort(ref, axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 2 * np.abs(low - ref).max()  # a random network has near-ties: skip those
    assert clear.any() and (low.argmax(axis=1) == ref.argmax(axis=1))[clear].all()
    proc = subprocess.run([sys.executable, PREDICT, images[0], "--model", "resnest14", "--params",
                           str(d / "r14.params"), "--classes", str(d / "names.txt"), "--dtype", "int8"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "--dtype int8 needs --calib-rec" in proc.stderr
    out = str(tmp_path / "out.json")
    proc = subprocess.run([sys.executable, PREDICT, images[0], "--model", "resnest14", "--params",
                           str(d / "r14.params"), "--classes", str(d / "names.txt"), "--dtype", "int8",
                           "--calib-rec", str(tmp_path / "calib.rec"), "--batch-size", "4", "--json", out],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    res = json.load(open(out))
    assert res["dtype"] == "int8" and res["predictions"][0]["top"][0]["label"] == int(ref[0].argmax())
