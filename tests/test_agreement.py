"""benchmarks/agreement.py: low-precision predictions compared with float32 on a validation .rec."""
import json
import os
import subprocess
import sys

import mxnet as mx
import numpy as np

from conftest import REPO, randomize_bn
from recgen import make_rec
from resnest_gluon import get_model
from resnest_gluon.deploy.amx import bfloat16_supported

SCRIPT = os.path.join(REPO, "benchmarks", "agreement.py")
N, CLASSES = 40, 40


def _run(*args):
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True, timeout=600)


def test_agreement_counts_every_image_and_matches_an_independent_float32_run(tmp_path):
    d = str(tmp_path)
    make_rec(os.path.join(d, "val"), N, seed=3)
    make_rec(os.path.join(d, "calib"), 16, seed=4)
    net = get_model("resnest14", classes=CLASSES)
    net.initialize(mx.init.Xavier(magnitude=3))
    randomize_bn(net, seed=1)
    params = os.path.join(d, "r14.params")
    net.save_parameters(params)
    out = os.path.join(d, "out")
    done = _run("--rec-val", os.path.join(d, "val.rec"), "--model", "resnest14", "--params", params,
                "--crop-size", "32", "--batch-size", "8", "--calib-rec", os.path.join(d, "calib.rec"),
                "--num-calib-batches", "2", "--out", out)
    assert done.returncode == 0, done.stderr[-3000:]
    doc = json.load(open(os.path.join(out, "agreement.json")))
    res = doc["results"]
    assert list(res) == ["float32"] + (["bfloat16"] if bfloat16_supported() else []) + ["int8"]
    assert all(r["images"] == N for r in res.values())
    assert res["float32"]["agreement_with_float32"] == 1.0 and res["float32"]["disagreements"] == 0
    for r in res.values():
        assert 0 <= r["top1"] <= 1 and 0 <= r["agreement_with_float32"] <= 1
        assert r["disagreements"] == round(N * (1 - r["agreement_with_float32"]))
    # float32 top-1 equals verify.py's on the same files (labels are the record indices here)
    verify = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "verify.py"), "--rec-val",
                             os.path.join(d, "val.rec"), "--model", "resnest14", "--params", params, "--crop-size",
                             "32", "--batch-size", "8", "--json", os.path.join(d, "v.json")],
                            capture_output=True, text=True, timeout=600)
    assert verify.returncode == 0, verify.stderr[-2000:]
    assert np.isclose(json.load(open(os.path.join(d, "v.json")))["top1"], res["float32"]["top1"])
    assert doc["calibration"]["rec"].endswith("calib.rec")


def test_bad_arguments_are_clear_errors(tmp_path):
    done = _run("--rec-val", str(tmp_path / "missing.rec"), "--model", "resnest14", "--params", "x.params")
    assert done.returncode == 2 and "--rec-val: file not found" in done.stderr
    done = _run("--rec-val", "a.rec", "--model", "resnest14", "--params", "x.params", "--dtypes", "int8")
    assert done.returncode == 2 and "must start with float32" in done.stderr
