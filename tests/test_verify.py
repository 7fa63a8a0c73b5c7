"""scripts/verify.py against an accuracy computed here from scratch, on small generated .rec files."""
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
from recgen import make_rec
from resnest_gluon.zoo import get_model

PY = sys.executable
VERIFY = os.path.join(REPO, "scripts", "verify.py")
N, CLASSES, CROP, BATCH = 23, 30, 32, 4  # 23 = 5 full batches of 4 + a partial one of 3


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("verify"))
    make_rec(os.path.join(d, "idx"), N, seed=3)
    make_rec(os.path.join(d, "noidx"), N, seed=3, with_idx=False)
    mx.random.seed(0)  # the same weights whatever ran before in this process
    net = randomize_bn(_net(CLASSES), seed=1)
    net.save_parameters(os.path.join(d, "r14.params"))
    small = _net(10)
    small.save_parameters(os.path.join(d, "r14_10.params"))
    other = get_model("resnest26", classes=CLASSES)
    other.initialize()
    other.save_parameters(os.path.join(d, "r26.params"))
    return d


def _net(classes):
    net = get_model("resnest14", classes=classes)
    net.initialize(mx.init.Xavier(magnitude=3), ctx=mx.cpu())
    return net


def run_verify(d, *extra, rec="idx.rec", params="r14.params"):
    out = os.path.join(d, "out.json")
    if os.path.exists(out):
        os.remove(out)
    cmd = [PY, VERIFY, "--rec-val", os.path.join(d, rec), "--model", "resnest14", "--params",
           os.path.join(d, params), "--crop-size", str(CROP), "--batch-size", str(BATCH), "--num-workers", "2",
           "--json", out, *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    return proc, (json.load(open(out)) if proc.returncode == 0 else None)


def reference_counts(d):
    """Top-1/top-5 written out here: PIL decode, short side to ceil(32 / 0.875) = 37, centre crop, normalise."""
    net = get_model("resnest14", classes=CLASSES)
    net.load_parameters(os.path.join(d, "r14.params"))
    reader = mx.recordio.MXRecordIO(os.path.join(d, "noidx.rec"), "r")
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    short = math.ceil(CROP / 0.875)
    top1 = top5 = n = 0
    while (payload := reader.read()) is not None:
        header, png = mx.recordio.unpack(payload)
        img = np.asarray(Image.open(__import__("io").BytesIO(png)).convert("RGB"))
        h, w = img.shape[:2]
        nh, nw = (short * h // w, short) if h > w else (short, short * w // h)
        img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
        y0, x0 = (nh - CROP) // 2, (nw - CROP) // 2
        img = img[y0:y0 + CROP, x0:x0 + CROP] / 255.0
        x = ((img - mean) / std).transpose(2, 0, 1)[None].astype(np.float32)
        logits = net(mx.nd.array(x)).asnumpy()[0]
        order = np.argsort(-logits)
        top1 += order[0] == header.label
        top5 += header.label in order[:5]
        n += 1
    return int(top1), int(top5), n


def test_accuracy_matches_independent_computation_with_and_without_idx(files):
    t1, t5, n = reference_counts(files)
    assert n == N
    for rec in ("idx.rec", "noidx.rec"):
        proc, res = run_verify(files, rec=rec)
        assert proc.returncode == 0, proc.stderr
        assert res["images"] == N  # every record exactly once, partial last batch included
        assert (res["top1_correct"], res["top5_correct"]) == (t1, t5), rec
        assert res["top1"] == pytest.approx(t1 / N) and res["top5"] == pytest.approx(t5 / N)
        assert res["data_config"]["input_size"] == CROP and res["corrupt_records"] == []
        assert res["images_per_sec"] > 0
        assert f"of {N} images" in proc.stdout


def test_corrupt_record_is_skipped_and_reported(tmp_path, files):
    make_rec(str(tmp_path / "bad"), 9, seed=3, corrupt=(4,))
    proc, res = run_verify(files, rec=str(tmp_path / "bad.rec"))
    assert proc.returncode == 0, proc.stderr
    assert res["images"] == 8
    assert [c["index"] for c in res["corrupt_records"]] == [4]
    assert "record #4" in proc.stdout


def test_label_beyond_classes_is_an_error_naming_file_and_max_label(files):
    proc, _ = run_verify(files, params="r14_10.params")
    assert proc.returncode != 0
    assert "idx.rec" in proc.stderr and "max label 22" in proc.stderr and "[0, 10)" in proc.stderr


def test_params_of_another_model_is_an_error(files):
    proc, _ = run_verify(files, params="r26.params")
    assert proc.returncode != 0 and "r26.params does not fit model resnest14" in proc.stderr


def test_missing_files_are_errors(files):
    proc, _ = run_verify(files, rec="nope.rec")
    assert proc.returncode != 0 and "nope.rec" in proc.stderr
    proc, _ = run_verify(files, params="nope.params")
    assert proc.returncode != 0 and "nope.params" in proc.stderr


def test_float16_on_cpu_is_a_clear_error(files):
    proc, _ = run_verify(files, "--dtype", "float16")
    assert proc.returncode != 0 and "float16 needs a GPU" in proc.stderr


def test_horovod_two_ranks_give_the_single_process_numbers(files):
    horovodrun = os.path.join(os.path.dirname(PY), "horovodrun")
    if not os.path.exists(horovodrun):
        pytest.skip("horovodrun not installed")
    _, single = run_verify(files)
    out = os.path.join(files, "hvd.json")
    cmd = [horovodrun, "--gloo", "-np", "2", "-H", "localhost:2", PY, VERIFY, "--rec-val",
           os.path.join(files, "noidx.rec"), "--model", "resnest14", "--params", os.path.join(files, "r14.params"),
           "--crop-size", str(CROP), "--batch-size", str(BATCH), "--num-workers", "1", "--json", out]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    res = json.load(open(out))
    assert res["world_size"] == 2
    for key in ("images", "top1_correct", "top5_correct", "top1", "top5"):
        assert res[key] == single[key], key
    assert proc.stdout.count("top-1") == 1  # only rank 0 prints


def test_int8_is_calibrated_on_calib_rec_and_reported(files):
    _, ref = run_verify(files)
    proc, res = run_verify(files, "--dtype", "int8", "--calib-rec", os.path.join(files, "noidx.rec"),
                           "--num-calib-batches", "2", "--calib-mode", "entropy")
    assert proc.returncode == 0, proc.stderr
    assert res["dtype"] == "int8" and res["images"] == N
    assert res["calibration"] == {"rec": os.path.join(files, "noidx.rec"), "mode": "entropy", "batches": 2,
                                  "batch_size": BATCH, "exclude_first_conv": False}
    assert abs(res["top5_correct"] - ref["top5_correct"]) <= 3  # random weights: close to float32, not equal


def test_int8_without_calibration_or_on_gpu_is_a_clear_error(files):
    proc, _ = run_verify(files, "--dtype", "int8")
    assert proc.returncode != 0 and "--dtype int8 needs --calib-rec" in proc.stderr
    proc, _ = run_verify(files, "--dtype", "int8", "--calib-rec", os.path.join(files, "missing.rec"))
    assert proc.returncode != 0 and "--calib-rec: record file (.rec) not found" in proc.stderr
    assert "evaluation set itself" in subprocess.run([PY, VERIFY, "--help"], capture_output=True, text=True).stdout
