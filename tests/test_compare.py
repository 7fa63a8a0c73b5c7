"""benchmarks/compare.py: one run times every case for ours, GluonCV and timm and reports JSON, ratios, goals and a
PNG; the training step really trains; a case ours cannot prepare is reported, not raised; bad arguments fail with a
clear message.

The end-to-end run is small (resnest14 at 64 px, batch 2, one round of one batch, one thread): it checks what is
reported, not speed.
"""
import json
import os
import subprocess
import sys

import mxnet as mx
import numpy as np
import pytest

from conftest import REPO

sys.path.insert(0, os.path.join(REPO, "benchmarks"))
import _cases  # noqa: E402
import _mx_prep  # noqa: E402
import _peers  # noqa: E402
import _report  # noqa: E402
import compare  # noqa: E402
from _timing import median  # noqa: E402
from test_latency import check_png, check_stats  # noqa: E402

from resnest_gluon import get_model  # noqa: E402
from resnest_gluon.deploy.amx import bfloat16_supported  # noqa: E402

CASES = ("infer-b1", "infer-b2", "train-b2", "bf16-b2", "int8-b2")


def run_compare(*args, timeout=900):
    return subprocess.run([sys.executable, "benchmarks/compare.py", "--threads", "1", *args], cwd=REPO,
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


@pytest.mark.slow
def test_one_run_reports_every_case_for_every_side(small_run):
    proc, doc, out = small_run
    assert doc["schema"] == "resnest-gluon/compare/1"
    assert doc["command"][0] == "benchmarks/compare.py" and "--cases" in doc["command"]
    machine = doc["machine"]
    assert machine["threads"] == 1 and len(machine["loadavg_start"]) == 3 and len(machine["loadavg_end"]) == 3
    assert machine["amx"] in (True, False)
    protocol = doc["protocol"]
    assert (protocol["iters"], protocol["rounds"], protocol["warmup"]) == (1, 1, 1)
    assert list(protocol["cases"]) == list(CASES)
    assert protocol["train"]["momentum"] == 0.9 and protocol["train"]["weight_decay"] == 1e-4
    assert "random" in protocol["int8_calibration"]
    assert set(doc["peers"]) == {"gluoncv", "timm"} and doc["peers"]["timm"]["versions"]["torch_threads"] == 1

    rows = {r["case"]: r for r in doc["results"]}
    assert list(rows) == list(CASES)
    for case, (mode, dtype, batch) in {"infer-b1": ("infer", "float32", 1), "infer-b2": ("infer", "float32", 2),
                                       "train-b2": ("train", "float32", 2), "bf16-b2": ("infer", "bfloat16", 2),
                                       "int8-b2": ("infer", "int8", 2)}.items():
        row = rows[case]
        assert (row["label"], row["mode"], row["dtype"], row["batch_size"]) == ("resnest14@64", mode, dtype, batch)
    if not bfloat16_supported():  # no AVX-512: ours refuses bfloat16 by name, the run goes on
        assert not rows["bf16-b2"]["available"] and "AVX-512" in rows["bf16-b2"]["reason"]
    for case in ("infer-b1", "infer-b2", "train-b2") + (("bf16-b2",) if bfloat16_supported() else ()):
        row = rows[case]
        assert row["available"] and row["params"] == 10_611_688
        check_stats(row)
        assert row["img_per_s"] == pytest.approx(median(row["rounds_img_per_s"]))
        assert row["peers"]["gluoncv"]["model"] == "resnest14" and row["peers"]["timm"]["model"] == "resnest14d"
        for peer in row["peers"].values():
            assert peer["available"], peer
            assert peer["params"] == row["params"]  # the same architecture on every side
            check_stats(peer)
            assert peer["timed_batches"] == 1
            assert peer["ours_over_peer"] == pytest.approx(row["img_per_s"] / peer["img_per_s"])
    assert "ours/gluoncv" in proc.stdout and "ours/timm" in proc.stdout and "train-b2" in proc.stdout
    check_png(out / "compare.png")


@pytest.mark.slow
def test_int8_row_is_timed_for_ours_only(small_run):
    _, doc, _ = small_run
    row = next(r for r in doc["results"] if r["case"] == "int8-b2")
    assert {p["available"] for p in row["peers"].values()} == {False}  # int8 is ours only
    assert row["available"] and row["img_per_s"] > 0


@pytest.mark.slow
def test_goals_are_reported_not_asserted(small_run):
    proc, doc, _ = small_run
    goals = doc["goals"]
    assert len(goals) == len(_cases.GOALS)
    by_key = {(g["case"], g["metric"]): g for g in goals}
    row = next(r for r in doc["results"] if r["case"] == "infer-b1")
    b1 = by_key[("infer-b1", "ours/gluoncv")]
    assert b1["value"] == pytest.approx(row["peers"]["gluoncv"]["ours_over_peer"])
    assert b1["passed"] == (b1["value"] >= 2.5)
    assert by_key[("train-b16", "ours/timm")] == {"label": "resnest14@64", "case": "train-b16", "metric": "ours/timm",
                                                  "target": 1.0, "value": None, "passed": None, "note": "case not run"}
    assert ("PASS" in proc.stdout or "FAIL" in proc.stdout) and "goals" in proc.stdout


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


def test_a_case_ours_cannot_prepare_is_reported_not_raised(monkeypatch):
    def failing_prepare(spec, case, ctx):
        raise RuntimeError("boom")

    monkeypatch.setattr(compare, "prepare_ours", failing_prepare)
    row = compare.measure(compare.parse_spec("resnest14@32"), _cases.parse_case("int8-b16"), None, mx.cpu(),
                          {"timm": FakeWorker()})
    assert not row["available"] and row["reason"] == "ours failed: RuntimeError: boom" and "img_per_s" not in row
    assert row["peers"] == {"timm": {"available": False, "reason": "ours unavailable"}}
    goals = {(g["case"], g["metric"]): g for g in _cases.check_goals([row])}
    assert goals[("int8-b16", "ours img/s")]["note"] == "ours unavailable: ours failed: RuntimeError: boom"
    assert "n/a resnest14@32 int8-b16 ours: ours failed" in compare.table([row], ("timm",))


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


def test_peers_without_the_model_or_the_case_are_not_available():
    spec, infer = compare.parse_spec("resnest50d_4s2x40d@64"), _cases.parse_case("infer-b2")
    worker = FakeWorker()
    assert compare.load_peer("gluoncv", worker, spec, infer, 1) == {
        "model": None, "available": False, "reason": "gluoncv has no resnest50d_4s2x40d"}
    assert compare.load_peer("timm", worker, spec, _cases.parse_case("int8-b16"), 1)["reason"] == \
        "int8 is timed for ours only"
    assert compare.load_peer("timm", worker, spec, _cases.parse_case("train-b4"), 1) == {
        "model": "resnest50d_4s2x40d", "available": True, "params": 123}
    assert worker.loaded == [("resnest50d_4s2x40d", 64, 4, "float32", "train")]
    failed = compare.load_peer("timm", FakeWorker("boom"), spec, infer, 1)
    assert not failed["available"] and failed["reason"] == "boom"


def test_goal_check_passes_fails_and_explains():
    def row(case, ours, **peers):
        return {"label": "m@1", "case": case, "available": True, "img_per_s": ours,
                "peers": {p: {"available": True, "ours_over_peer": ours / v} for p, v in peers.items()}}

    results = [row("infer-b1", 30.0, gluoncv=10.0, timm=25.0), row("bf16-b16", 20.0),
               {"label": "m@1", "case": "int8-b16", "available": False, "reason": "ours failed: boom", "peers": {}}]
    goals = {(g["case"], g["metric"]): g for g in _cases.check_goals(results)}
    assert goals[("infer-b1", "ours/gluoncv")]["passed"] is True   # 3.0 >= 2.5
    assert goals[("infer-b1", "ours/timm")]["passed"] is False     # 1.2 < 1.3
    assert goals[("bf16-b16", "ours img/s")] == {"label": "m@1", "case": "bf16-b16", "metric": "ours img/s",
                                                 "target": 25.0, "value": 20.0, "passed": False, "note": None}
    assert goals[("int8-b16", "ours img/s")]["note"] == "ours unavailable: ours failed: boom"
    assert goals[("infer-b16", "ours/timm")]["passed"] is None


def test_rounds_that_disagree_are_flagged_in_the_table():
    """A side whose rounds differ by more than NOISY_SPREAD gets a 'noisy' note naming the model, case and side."""
    def side(*rounds_ms):
        return {"available": True, **compare.summarize([[ms] for ms in rounds_ms], batch_size=16)}

    steady, noisy = side(4000.0, 4100.0), side(4100.0, 7100.0)  # 3.90 and 2.25 img/s: a busy round
    results = [{"label": "resnest101@256", "case": "infer-b16", "dtype": "float32", "batch_size": 16, **noisy,
                "peers": {"timm": {**steady, "ours_over_peer": 0.8}, "gluoncv": {"available": False, "reason": "x"}}}]
    notes = _report.noisy_notes(results)
    assert len(notes) == 1 and "noisy resnest101@256 infer-b16 ours" in notes[0] and "3.90 2.25" in notes[0]
    assert notes[0] in compare.table(results, ("timm", "gluoncv"))
    results[0].update(side(4000.0, 4100.0))
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
    (["--torch-python", "/nonexistent/python"], "tools/setup_env.sh torch"),
    (["--seconds", "0"], "--seconds must be > 0"),
])
def test_bad_arguments_exit_nonzero_with_a_clear_message(args, message, tmp_path):
    proc = run_compare(*args, "--out", str(tmp_path), timeout=120)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert not (tmp_path / "compare.json").exists()
