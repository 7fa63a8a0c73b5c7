"""benchmarks.op_profile: per-operator time of an inference batch and a training step, the convolutions' share
and the bound it implies, as a table, JSON and PNG; a bad combination of arguments is refused.

Small runs (resnest14 at 64 px, batch 2, one thread): they check what is reported, not speed.
"""
import json
import os
import subprocess
import sys

import pytest

from benchmarks import op_profile
from conftest import REPO
from test_latency import check_png


def run_profile(*args):
    return subprocess.run([sys.executable, "-m", "benchmarks.op_profile", "--threads", "1", "--model", "resnest14@64",
                           "--batch", "2", "--iters", "2", "--warmup", "1", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.slow
@pytest.mark.parametrize("mode, conv_ops", [("infer", {"_sg_mkldnn_conv"}),
                                            ("train", {"Convolution", "_backward_Convolution"})])
def test_profile_reports_every_operator_and_the_convolution_bound(tmp_path, mode, conv_ops):
    proc = run_profile("--mode", mode, "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads((tmp_path / "op_profile.json").read_text())
    assert doc["schema"] == "resnest-gluon/op_profile/1" and doc["case"]["mode"] == mode
    ops = {r["op"]: r for r in doc["operators"]}
    assert conv_ops <= {op for op, r in ops.items() if r["convolution"]}
    assert not any(r["convolution"] for op, r in ops.items() if "conv" not in op.lower())
    assert sum(r["share"] for r in ops.values()) == pytest.approx(1.0)
    assert ops[next(iter(conv_ops))]["calls_per_batch"] == 27  # resnest14: 3 stem + 4 blocks x 5 + 4 shortcut
    conv_ms = sum(r["ms_per_batch"] for r in ops.values() if r["convolution"])
    assert doc["convolution_ms_per_batch"] == pytest.approx(conv_ms)
    # one engine worker runs the operators one after another: they fit in the wall time, so the bound is above it
    assert doc["operators_ms_per_batch"] / 1e3 <= doc["case"]["batch_size"] / doc["img_per_s"]
    assert doc["img_per_s_if_only_convolutions"] >= doc["img_per_s"]
    assert "with everything but the convolutions free" in proc.stdout
    check_png(tmp_path / "op_profile.png")
    trace = json.loads((tmp_path / "op_profile_trace.json").read_text())  # MXNet's trace, beside the report
    assert any(e.get("name") in conv_ops for e in trace["traceEvents"])
    assert not os.path.exists(os.path.join(REPO, "profile.json"))  # not MXNet's default, in the working folder


def test_summary_ranks_operators_and_computes_the_bound():
    ops = {"_sg_mkldnn_conv": {"calls": 20, "ms": 300.0}, "broadcast_mul": {"calls": 4, "ms": 60.0},
           "slice_axis": {"calls": 8, "ms": 40.0}}
    s = op_profile.summarize_ops(ops, iters=2, batch=4, wall_s=0.5)
    assert [r["op"] for r in s["operators"]] == ["_sg_mkldnn_conv", "broadcast_mul", "slice_axis"]
    assert s["convolution_ms_per_batch"] == 150.0 and s["convolution_share"] == pytest.approx(0.75)
    assert s["img_per_s"] == pytest.approx(16.0) and s["img_per_s_if_only_convolutions"] == pytest.approx(4e3 / 150)
    assert s["operators"][1]["calls_per_batch"] == 2 and s["operators"][2]["share"] == pytest.approx(0.1)


def test_training_in_low_precision_is_refused():
    proc = subprocess.run([sys.executable, "-m", "benchmarks.op_profile", "--mode", "train", "--dtype", "int8"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--mode train runs in float32" in proc.stderr
