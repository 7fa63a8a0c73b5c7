"""benchmarks.compare: one run times every case on every side (ours in MXNet, ONNX Runtime and OpenVINO; GluonCV;
timm eager and its ONNX file in both engines) and reports JSON, ratios, goals and a PNG; the training step really
trains; a side that cannot prepare is reported, not raised; bad arguments fail with a clear message.

The end-to-end run is small (resnest14 at 64 px, batch 2, one round of one batch, one thread): it checks what is
reported, not speed.
"""
import argparse
import json
import os
import subprocess
import sys

import mxnet as mx
import numpy as np
import pytest

from benchmarks import _cases, _mx_prep, _peers, _report, compare
from benchmarks._timing import median
from conftest import REPO
from resnest_gluon import get_model
from resnest_gluon.deploy.amx import bfloat16_supported
from resnest_gluon.deploy.engines import engine_bfloat16_supported
from test_latency import check_png, check_stats

CASES = ("infer-b1", "infer-b2", "train-b2", "bf16-b2", "int8-b2")


def run_compare(*args, timeout=900):
    return subprocess.run([sys.executable, "-m", "benchmarks.compare", "--threads", "1", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    for peer in _peers.PEERS:
        if not os.path.exists(_peers.PYTHON[peer][0]):
            pytest.fail(f"{_peers.PYTHON[peer][0]} is missing: run `{_peers.PYTHON[peer][1]}`")
    out = tmp_path_factory.mktemp("compare")
    proc = run_compare("--models", "resnest14@64", "--cases", *CASES, "--iters", "1", "--rounds", "1", "--warmup", "1",
                       "--out", str(out))
    assert proc.returncode == 0, f"compare.py failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr[-3000:]}"
    return proc, json.loads((out / "compare.json").read_text()), out


def expected_sides(case):
    """The sides that run ``case`` on this CPU (bfloat16 needs AVX-512 BF16 or AMX: MXNet's and OpenVINO's checks)."""
    kind = _cases.parse_case(case).kind
    sides = set(_cases.KINDS[kind].sides)
    if kind == "bf16" and not bfloat16_supported():
        sides -= {"ours-mxnet"}
    if kind == "bf16" and not engine_bfloat16_supported("openvino"):
        sides -= {"ours-openvino", "timm-openvino"}
    return sides


@pytest.mark.slow
def test_one_run_reports_every_case_for_every_side(small_run):
    proc, doc, out = small_run
    assert doc["schema"] == "resnest-gluon/compare/2"
    assert doc["command"][0] == "benchmarks/compare.py" and "--cases" in doc["command"]
    machine = doc["machine"]
    assert machine["threads"] == 1 and len(machine["loadavg_start"]) == 3 and len(machine["loadavg_end"]) == 3
    assert machine["amx"] in (True, False)
    protocol = doc["protocol"]
    assert (protocol["iters"], protocol["rounds"], protocol["warmup"]) == (1, 1, 1)
    assert list(protocol["cases"]) == list(CASES) and protocol["sides"] == list(_cases.SIDES)
    assert protocol["train"]["momentum"] == 0.9 and protocol["train"]["weight_decay"] == 1e-4
    assert "random" in protocol["int8_calibration"] and "opset 17" in protocol["onnx_files"]["timm"]
    assert set(doc["peers"]) == {"gluoncv", "timm"} and doc["peers"]["timm"]["versions"]["torch_threads"] == 1
    assert set(doc["engines"]) == {"onnx", "onnxruntime", "openvino"}

    rows = {r["case"]: r for r in doc["results"]}
    assert list(rows) == list(CASES)
    for case, (mode, dtype, batch) in {"infer-b1": ("infer", "float32", 1), "infer-b2": ("infer", "float32", 2),
                                       "train-b2": ("train", "float32", 2), "bf16-b2": ("infer", "bfloat16", 2),
                                       "int8-b2": ("infer", "int8", 2)}.items():
        row = rows[case]
        assert (row["label"], row["mode"], row["dtype"], row["batch_size"]) == ("resnest14@64", mode, dtype, batch)
        assert list(row["sides"]) == list(_cases.SIDES)
        ran = {name for name, side in row["sides"].items() if side["available"]}
        assert ran == expected_sides(case), (case, {n: s.get("reason") for n, s in row["sides"].items()})
        for name, side in row["sides"].items():
            assert side["model"] == ("resnest14d" if name.startswith("timm") else "resnest14")
            if name not in ran:
                assert side["reason"], (case, name)
                continue
            assert side["params"] == 10_611_688  # the same architecture on every side
            check_stats(side)
            assert side["timed_batches"] == 1
            assert side["img_per_s"] == pytest.approx(median(side["rounds_img_per_s"]))
        best_ours = max((row["sides"][n]["img_per_s"], n) for n in ran & set(_cases.OURS))
        best_peer = max((row["sides"][n]["img_per_s"], n) for n in ran & set(_cases.PEERS))
        assert (row["best_ours"], row["best_peer"]) == (best_ours[1], best_peer[1])
        assert row["best_ours_over_best_peer"] == pytest.approx(best_ours[0] / best_peer[0])
        for name in ran & set(_cases.OURS):
            assert row["sides"][name]["over_best_peer"] == pytest.approx(row["sides"][name]["img_per_s"] /
                                                                         best_peer[0])
    if not bfloat16_supported():  # no AVX-512: ours refuses bfloat16 by name, the run goes on
        assert "AVX-512" in rows["bf16-b2"]["sides"]["ours-mxnet"]["reason"]
    assert rows["bf16-b2"]["sides"]["ours-onnxruntime"]["reason"] == \
        "bf16 is not timed for ours-onnxruntime (see --help)"
    assert "ours-onnxruntime" in proc.stdout and "timm-openvino" in proc.stdout and "train-b2" in proc.stdout
    check_png(out / "compare.png")


@pytest.mark.slow
def test_int8_row_is_timed_for_ours_and_the_onnx_files(small_run):
    _, doc, _ = small_run
    sides = next(r for r in doc["results"] if r["case"] == "int8-b2")["sides"]
    assert not sides["gluoncv"]["available"] and not sides["timm"]["available"]
    for name in ("ours-mxnet", "ours-onnxruntime", "ours-openvino", "timm-onnxruntime", "timm-openvino"):
        assert sides[name]["available"] and sides[name]["img_per_s"] > 0, name


@pytest.mark.slow
def test_goals_are_reported_not_asserted(small_run):
    proc, doc, _ = small_run
    goals = doc["goals"]
    assert len(goals) == len(_cases.GOALS)
    by_key = {(g["case"], g["metric"]): g for g in goals}
    sides = next(r for r in doc["results"] if r["case"] == "infer-b1")["sides"]
    b1 = by_key[("infer-b1", "ours-mxnet/gluoncv")]
    assert (b1["group"], b1["goal"]) == ("mxnet", "infer-b1: ours-mxnet/gluoncv >= 2.5")
    assert b1["value"] == pytest.approx(sides["ours-mxnet"]["img_per_s"] / sides["gluoncv"]["img_per_s"])
    assert b1["passed"] == (b1["value"] >= 2.5)
    ort = by_key[("infer-b1", "ours-onnxruntime/timm-onnxruntime")]
    assert ort["group"] == "onnx-file" and ort["value"] == pytest.approx(sides["ours-onnxruntime"]["img_per_s"] /
                                                                         sides["timm-onnxruntime"]["img_per_s"])
    best = by_key[("infer-b1", "best ours/best peer")]
    assert best["value"] == pytest.approx(next(r for r in doc["results"]
                                               if r["case"] == "infer-b1")["best_ours_over_best_peer"])
    assert by_key[("train-b16", "ours-mxnet/timm")] == {
        "group": "mxnet", "goal": "train-b16: ours-mxnet/timm >= 1", "label": "resnest14@64", "case": "train-b16",
        "metric": "ours-mxnet/timm", "target": 1.0, "value": None, "passed": None, "note": "case not run"}
    assert ("PASS" in proc.stdout or "FAIL" in proc.stdout) and "goals" in proc.stdout
    assert all(what in proc.stdout for what in _cases.GOAL_GROUPS.values())  # the goals under what they compare


@pytest.mark.parametrize("build", [lambda: get_model("resnest14"),
                                   lambda: __import__("gluoncv").model_zoo.get_model("resnest14")],
                         ids=["ours", "gluoncv"])
def test_training_step_updates_every_weight(build):
    net = build()
    step = _mx_prep.make_train_step(net, 2, 32, mx.cpu())
    params = {name: p for name, p in net.collect_params().items() if p.grad_req != "null"}
    before = {name: p.data().asnumpy().copy() for name, p in params.items()}
    loss = step()
    assert loss.shape == (2,) and np.isfinite(loss.asnumpy()).all()
    unchanged = [name for name, p in params.items() if np.array_equal(p.data().asnumpy(), before[name])]
    assert not unchanged, f"not updated by the step: {unchanged[:5]}"
    assert np.isfinite(step().asnumpy()).all()


def args_for(*sides):
    return argparse.Namespace(sides=list(sides), warmup=1, rounds=1, iters=1, seconds=None, threads=1)


def test_a_side_that_cannot_prepare_is_reported_not_raised_and_peers_wait_for_ours(monkeypatch):
    def failing_prepare(spec, case, ctx):
        raise RuntimeError("boom")

    monkeypatch.setattr(compare, "prepare_ours", failing_prepare)
    worker = FakeWorker()
    row = compare.measure(compare.parse_spec("resnest14@32"), _cases.parse_case("int8-b16"),
                          args_for("ours-mxnet", "timm"), mx.cpu(), {"timm": worker}, files=None)
    assert row["sides"]["ours-mxnet"] == {"model": "resnest14", "available": False,
                                          "reason": "ours-mxnet failed: RuntimeError: boom"}
    assert row["sides"]["timm"] == {"available": False, "reason": "no side of ours ran"} and not worker.loaded
    assert row["best_ours"] is None and row["best_ours_over_best_peer"] is None
    goals = {(g["case"], g["metric"]): g for g in _cases.check_goals([row])}
    assert goals[("int8-b16", "ours-mxnet img/s")]["note"] == \
        "ours-mxnet unavailable: ours-mxnet failed: RuntimeError: boom"
    assert goals[("int8-b16", "best ours/best peer")]["note"] == "no side of ours ran"
    assert "n/a resnest14@32 int8-b16 ours-mxnet: ours-mxnet failed" in compare.table([row], ("ours-mxnet", "timm"))


def test_int8_available_is_calibrated_on_random_batches(monkeypatch):
    calls = []

    def fake_optimize(net, dtype, ctx, input_shape=None, fuse=True, **kwargs):
        calls.append((dtype, input_shape, kwargs))
        return net

    monkeypatch.setattr(_mx_prep, "optimize", fake_optimize)
    step, params = compare.prepare_ours(compare.parse_spec("resnest14@32"), _cases.parse_case("int8-b2"), mx.cpu())
    step()
    ((dtype, shape, kwargs),) = calls
    assert (dtype, shape, params) == ("int8", (2, 3, 32, 32), 10_611_688)
    batches = kwargs["calib_data"]
    assert len(batches) == _mx_prep.CALIBRATION_BATCHES and all(b.shape == shape for b in batches)


class FakeWorker:
    def __init__(self, error=None):
        self.error, self.loaded = error, []

    def load(self, model, input_size, batch_size, dtype, ctx, warmup, mode="infer"):
        if self.error:
            raise _peers.PeerError(self.error)
        self.loaded.append((model, input_size, batch_size, dtype, mode))
        return 123

    def measure(self, iters=None, seconds=None):
        return [10.0]


def test_sides_without_the_model_or_the_case_are_not_available():
    spec, infer = compare.parse_spec("resnest50d_4s2x40d@64"), _cases.parse_case("infer-b2")
    worker, args = FakeWorker(), args_for()

    def prepare(side, case, w=worker):
        return compare.prepare_side(side, spec, case, args, mx.cpu(), {"gluoncv": w, "timm": w}, files=None)

    assert prepare("gluoncv", infer) == ({"model": None, "available": False,
                                          "reason": "gluoncv has no resnest50d_4s2x40d"}, None)
    assert prepare("timm", _cases.parse_case("int8-b16"))[0]["reason"] == "int8 is not timed for timm (see --help)"
    assert prepare("ours-onnxruntime", _cases.parse_case("bf16-b16"))[0]["reason"] == \
        "bf16 is not timed for ours-onnxruntime (see --help)"
    assert prepare("timm-onnxruntime", _cases.parse_case("train-b2"))[0]["reason"] == \
        "train is not timed for timm-onnxruntime (see --help)"
    info, timer = prepare("timm", _cases.parse_case("train-b4"))
    assert info == {"model": "resnest50d_4s2x40d", "available": True, "params": 123} and timer(1, None) == [10.0]
    assert worker.loaded == [("resnest50d_4s2x40d", 64, 4, "float32", "train")]
    failed, timer = prepare("timm", infer, FakeWorker("boom"))
    assert not failed["available"] and failed["reason"] == "timm failed: PeerError: boom" and timer is None


def row_of(case, **img_per_s):
    """A result row with these sides' img/s (None: unavailable)."""
    sides = {name: ({"available": True, "img_per_s": v} if v is not None else
                    {"available": False, "reason": "boom"}) for name, v in img_per_s.items()}
    return {"label": "m@1", "case": case, "sides": sides}


def test_goal_check_passes_fails_and_explains():
    results = [row_of("infer-b1", **{"ours-mxnet": 30.0, "ours-onnxruntime": 36.0, "gluoncv": 10.0, "timm": 25.0,
                                     "timm-onnxruntime": 30.0}),
               row_of("bf16-b16", **{"ours-mxnet": 20.0}), row_of("int8-b16", **{"ours-mxnet": None})]
    goals = {(g["case"], g["metric"]): g for g in _cases.check_goals(results)}
    assert goals[("infer-b1", "ours-mxnet/gluoncv")]["passed"] is True   # 3.0 >= 2.5
    assert goals[("infer-b1", "ours-mxnet/timm")]["passed"] is False     # 1.2 < 1.3
    assert goals[("infer-b1", "ours-onnxruntime/timm-onnxruntime")]["value"] == pytest.approx(1.2)
    assert goals[("infer-b1", "best ours/best peer")]["value"] == pytest.approx(36.0 / 30.0)
    assert goals[("infer-b1", "ours-openvino/timm-openvino")]["note"] == \
        "ours-openvino not run (--backends / --peers)"
    assert goals[("bf16-b16", "ours-mxnet img/s")] == {"group": "mxnet", "goal": "bf16-b16: ours-mxnet img/s >= 25",
                                                       "label": "m@1", "case": "bf16-b16",
                                                       "metric": "ours-mxnet img/s", "target": 25.0, "value": 20.0,
                                                       "passed": False, "note": None}
    assert goals[("bf16-b16", "best ours/best peer")]["note"] == "no side of the peers ran"
    assert goals[("int8-b16", "ours-mxnet img/s")]["note"] == "ours-mxnet unavailable: boom"
    assert goals[("infer-b16", "ours-mxnet/timm")]["passed"] is None


def test_rounds_that_disagree_are_flagged_in_the_table():
    """A side whose rounds differ by more than NOISY_SPREAD gets a 'noisy' note naming the model, case and side."""
    def side(*rounds_ms):
        return {"available": True, **compare.summarize([[ms] for ms in rounds_ms], batch_size=16)}

    steady, noisy = side(4000.0, 4100.0), side(4100.0, 7100.0)  # 3.90 and 2.25 img/s: a busy round
    results = [{"label": "resnest101@256", "case": "infer-b16", "dtype": "float32", "batch_size": 16,
                "sides": {"ours-mxnet": noisy, "timm": steady, "gluoncv": {"available": False, "reason": "x"}},
                "best_ours_over_best_peer": 0.8}]
    notes = _report.noisy_notes(results)
    assert len(notes) == 1 and "noisy resnest101@256 infer-b16 ours-mxnet" in notes[0] and "3.90 2.25" in notes[0]
    assert notes[0] in compare.table(results, ("ours-mxnet", "timm", "gluoncv"))
    results[0]["sides"]["ours-mxnet"] = side(4000.0, 4100.0)
    assert _report.noisy_notes(results) == []


def test_peer_worker_refuses_an_unknown_mode_and_a_low_precision_training_step():
    with _peers.PeerWorker("gluoncv", _peers.PYTHON["gluoncv"][0], threads=1) as worker:
        with pytest.raises(_peers.PeerError, match="unknown mode 'bogus'"):
            worker.load("resnest14", 32, 1, "float32", "cpu", 1, mode="bogus")
        with pytest.raises(_peers.PeerError, match="float32 only"):
            worker.load("resnest14", 32, 1, "bfloat16", "cpu", 1, mode="train")
        with pytest.raises(_peers.PeerError, match="not int8"):
            worker.load("resnest14", 32, 1, "int8", "cpu", 1)


@pytest.mark.parametrize("args, message", [
    (["--cases", "infer-b16", "fp8-b16"], "unknown case 'fp8-b16'"),
    (["--cases", "train"], "unknown case 'train'"),
    (["--models", "resnest51"], "unknown model 'resnest51'"),
    (["--peers", "onnx"], "invalid choice: 'onnx'"),
    (["--backends", "tensorrt"], "invalid choice: 'tensorrt'"),
    (["--torch-python", "/nonexistent/python"], "tools/setup_env.sh torch"),
    (["--seconds", "0"], "--seconds must be > 0"),
])
def test_bad_arguments_exit_nonzero_with_a_clear_message(args, message, tmp_path):
    proc = run_compare(*args, "--out", str(tmp_path), timeout=120)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert not (tmp_path / "compare.json").exists()
