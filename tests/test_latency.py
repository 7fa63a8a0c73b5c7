"""benchmarks.latency: the paper's whole table builds and reports a complete JSON + PNG, --compare reports both
peers, bad arguments fail loudly; plus the pure helpers (percentiles, ratios, order check), and the dense models'
benchmarks (dense_speed, segmentation_train_speed) at tiny sizes.

The runs use --threads 1: these tests check what is reported, not speed, and one thread per process stays fast when
the machine is shared (two OpenMP threads on two busy cores spin at barriers and run several times slower).
"""
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from benchmarks import _paper, _peers, _report
from benchmarks._timing import percentile, summarize, time_batches
from conftest import REPO

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run_latency(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "benchmarks.latency", "--threads", "1", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def check_ok(proc):
    assert proc.returncode == 0, f"latency.py failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr[-3000:]}"


def check_png(path):
    import matplotlib.image

    with open(path, "rb") as f:
        assert f.read(8) == PNG_MAGIC
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


def check_stats(entry):
    assert entry["latency_ms"]["p50"] > 0 and entry["latency_ms"]["p90"] >= entry["latency_ms"]["p50"] * 0.999
    assert entry["img_per_s"] > 0
    assert entry["timed_batches"] >= 1 and len(entry["latencies_ms"]) == len(entry["rounds_img_per_s"])


@pytest.mark.slow
def test_paper_table_builds_every_model_and_reports_json_and_png(tmp_path):
    proc = run_latency("--batch-size", "1", "--warmup", "1", "--iters", "1", "--out", str(tmp_path))
    check_ok(proc)
    doc = json.loads((tmp_path / "latency.json").read_text())
    assert doc["schema"] == "resnest-gluon/latency/1"
    assert doc["protocol"]["hybridize"] == {"static_alloc": True, "static_shape": True}
    assert doc["machine"]["threads"] == 1
    rows = {r["label"]: r for r in doc["results"]}
    assert list(rows) == _paper.TABLE  # every model of the paper's table, in its order
    for label, row in rows.items():
        name, size = label.split("@")
        assert (row["model"], row["input_size"], row["batch_size"], row["dtype"]) == (name, int(size), 1, "float32")
        check_stats(row)
        assert row["paper_gpu_img_per_s"] == _paper.GPU_IMG_PER_S[label]
        assert row["ratio_to_reference"]["ours"] > 0
        assert row["ratio_to_reference"]["paper"] == pytest.approx(row["paper_gpu_img_per_s"] / 488.17)
        assert "peers" not in row
    assert rows["resnest50@224"]["params"] == 27_483_240
    assert rows["resnest50@224"]["ratio_to_reference"]["ours"] == 1.0
    assert set(doc["order_check"]["1"]["paper"]) == set(_paper.TABLE)
    assert isinstance(doc["order_check"]["1"]["matches"], bool)
    check_png(tmp_path / "latency.png")
    for label in _paper.TABLE:  # the printed table names every model
        assert label.split("@")[0] in proc.stdout
    assert "relative order" in proc.stdout


@pytest.mark.slow
def test_compare_reports_gluoncv_and_timm_with_ratios(tmp_path):
    torch_python = _peers.PYTHON["timm"][0]
    if not os.path.exists(torch_python):
        pytest.fail(f"{torch_python} is missing: run `tools/setup_env.sh torch` to create .venv-torch "
                    "(the --compare benchmark times timm there)")
    proc = run_latency("--models", "resnest14", "--batch-size", "1", "--warmup", "1", "--iters", "2", "--rounds", "2",
                       "--compare", "--out", str(tmp_path))
    check_ok(proc)
    doc = json.loads((tmp_path / "latency.json").read_text())
    (row,) = doc["results"]
    assert (row["label"], row["rounds_img_per_s"].__len__()) == ("resnest14@224", 2)
    assert set(row["peers"]) == {"gluoncv", "timm"} == set(doc["peers"])
    assert row["peers"]["gluoncv"]["model"] == "resnest14" and row["peers"]["timm"]["model"] == "resnest14d"
    for peer in row["peers"].values():
        check_stats(peer)
        assert peer["params"] == row["params"] == 10_611_688  # the same architecture on every side
        assert peer["timed_batches"] == 4
        assert peer["ours_over_peer"] == pytest.approx(row["img_per_s"] / peer["img_per_s"])
    assert doc["peers"]["timm"]["versions"]["torch_threads"] == 1
    assert "ours/gluoncv" in proc.stdout and "ours/timm" in proc.stdout
    check_png(tmp_path / "latency.png")


@pytest.mark.parametrize("args, message", [
    (["--dtype", "float16", "--ctx", "cpu"], "float16 needs --ctx gpu"),
    (["--models", "resnest51"], "unknown model 'resnest51'"),
    (["--models", "resnest50@big"], "must be an integer"),
    (["--compare", "--torch-python", "/nonexistent/python"], "tools/setup_env.sh torch"),
])
def test_bad_arguments_exit_nonzero_with_a_clear_message(args, message, tmp_path):
    proc = run_latency(*args, "--out", str(tmp_path), timeout=120)
    assert proc.returncode != 0
    assert message in proc.stderr
    assert not (tmp_path / "latency.json").exists()


def test_gpu_without_a_gpu_is_a_clear_error(tmp_path):
    import mxnet as mx

    if mx.context.num_gpus() > 0:
        pytest.skip("a GPU is visible")
    proc = run_latency("--ctx", "gpu", "--out", str(tmp_path), timeout=120)
    assert proc.returncode != 0 and "MXNet sees no GPU" in proc.stderr


def test_runs_as_a_file_from_any_folder_and_as_a_module_from_the_root(tmp_path):
    """``python benchmarks/latency.py`` (a file, from another folder) reruns itself as ``python -m benchmarks.latency``
    with its arguments and exit status, even beside a ``benchmarks`` folder of the working folder;
    ``python -m benchmarks.compare`` runs from the root; no module of the package edits ``sys.path``."""
    decoy = tmp_path / "benchmarks"
    decoy.mkdir()
    (decoy / "__init__.py").write_text("raise ImportError('the benchmarks package of the working folder')\n")
    script = os.path.join(REPO, "benchmarks", "latency.py")
    as_file = subprocess.run([sys.executable, script, "--help"], cwd=tmp_path, capture_output=True, text=True,
                             timeout=120)
    assert as_file.returncode == 0, as_file.stderr[-2000:]
    assert "--compare" in as_file.stdout and "the paper's" in as_file.stdout
    refused = subprocess.run([sys.executable, script, "--rounds", "0"], cwd=tmp_path, capture_output=True,
                             text=True, timeout=120)
    assert refused.returncode == 2 and "--rounds: must be >= 1, got 0" in refused.stderr
    as_module = subprocess.run([sys.executable, "-m", "benchmarks.compare", "--help"], cwd=REPO, capture_output=True,
                               text=True, timeout=120)
    assert as_module.returncode == 0, as_module.stderr[-2000:]
    assert "goals" in as_module.stdout
    folder = os.path.join(REPO, "benchmarks")
    for name in sorted(os.listdir(folder)):
        if name.endswith(".py"):
            with open(os.path.join(folder, name)) as f:
                assert not re.search(r"sys\.path\.(insert|append|extend)|sys\.path\s*[+]?=", f.read()), name


def test_percentiles_match_numpy():
    values = list(np.random.RandomState(0).uniform(1, 9, 37))
    for q in (0, 10, 50, 90, 100):
        assert percentile(values, q) == pytest.approx(np.percentile(values, q))


def test_summary_pools_latencies_and_takes_the_median_round():
    stats = summarize([[10.0, 10.0], [20.0, 20.0], [40.0, 40.0]], batch_size=2)
    assert stats["rounds_img_per_s"] == pytest.approx([200.0, 100.0, 50.0])
    assert stats["img_per_s"] == pytest.approx(100.0)
    assert stats["latency_ms"]["p50"] == 20.0 and stats["timed_batches"] == 6
    assert stats["round_spread"] == pytest.approx(4.0)  # fastest round / slowest round


def test_time_budget_stops_the_loop():
    assert len(time_batches(lambda: None, iters=3)) == 3
    assert 1 <= len(time_batches(lambda: None, iters=10 ** 9, seconds=0.05)) < 10 ** 9


def test_ratios_and_order_against_the_paper():
    rows = [{"label": label, "batch_size": 4, "img_per_s": speed}
            for label, speed in [("resnest50@224", 10.0), ("resnest101@256", 6.0), ("resnest50@256", 5.0)]]
    _report.add_ratios(rows)
    assert rows[1]["ratio_to_reference"] == {"reference": "resnest50@224", "ours": 0.6,
                                             "paper": pytest.approx(265.30 / 488.17)}
    check = _report.order_check(rows)["4"]
    assert not check["matches"]
    assert check["paper"] == ["resnest50@224", "resnest50@256", "resnest101@256"]
    assert check["ours"] == ["resnest50@224", "resnest101@256", "resnest50@256"]


def test_dense_speed_times_ours_beside_gluoncvs_deeplab_with_the_same_weights(tmp_path):
    """benchmarks.dense_speed (segmentation only: a detector's 1,000-RoI box head takes seconds a call): the
    check that both sides compute the same thing passes, and the report holds both sides' numbers and the ratio."""
    proc = subprocess.run([sys.executable, "-m", "benchmarks.dense_speed", "--threads", "1", "--tasks", "segmentation",
                           "--seg-size", "64x96", "--warmup", "1", "--iters", "1", "--rounds", "2", "--out",
                           str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads((tmp_path / "dense_speed.json").read_text())
    (row,) = doc["results"]
    assert (row["model"], row["gluoncv_model"], row["input_hw"]) == ("deeplab_resnest50", "deeplab_resnest50_ade",
                                                                    [64, 96])
    assert row["check"]["max_abs_diff"] < 1e-3 and doc["goal_ratio"] == 1.5
    check_stats(row)
    check_stats(row["peers"]["gluoncv"])
    assert row["peers"]["gluoncv"]["ours_over_peer"] == pytest.approx(row["img_per_s"] /
                                                                      row["peers"]["gluoncv"]["img_per_s"])
    assert "deeplab_resnest50" in proc.stdout and "ours / GluonCV" in proc.stdout
    check_png(tmp_path / "dense_speed.png")
    bad = subprocess.run([sys.executable, "-m", "benchmarks.dense_speed", "--det-size", "512", "--out", str(tmp_path)],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "--det-size must be HxW" in bad.stderr


def test_segmentation_train_speed_times_our_step_beside_gluoncvs_train_loop(tmp_path):
    """benchmarks.segmentation_train_speed at a tiny crop: the same-logits check passes, our trainer's step and
    GluonCV's train.py loop (as the script runs it, and hybridized) each train, and the report holds the ratios."""
    proc = subprocess.run([sys.executable, "-m", "benchmarks.segmentation_train_speed", "--threads", "1", "--crop",
                           "48", "--classes", "5", "--iters", "1", "--rounds", "2", "--out", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads((tmp_path / "segmentation_train_speed.json").read_text())
    (row,) = doc["results"]
    assert (row["model"], row["batch_size"], row["crop"], row["classes"]) == ("deeplab_resnest50", 2, 48, 5)
    assert max(row["check"].values()) < 1e-3 and doc["goal_ratio"] == 0.9
    assert sorted(row["peers"]) == ["gluoncv", "gluoncv-hybrid"]
    assert [row["peers"][p]["hybridized"] for p in ("gluoncv", "gluoncv-hybrid")] == [False, True]
    for entry in [row, *row["peers"].values()]:
        check_stats(entry)
        assert len(entry["losses"]) == 3 and np.isfinite(entry["losses"]).all()  # 1 warm-up + 2 timed steps
    for peer in row["peers"].values():
        assert peer["ours_over_peer"] == pytest.approx(row["img_per_s"] / peer["img_per_s"])
    assert "ours / side" in proc.stdout and "no (as train.py)" in proc.stdout
    check_png(tmp_path / "segmentation_train_speed.png")
    bad = subprocess.run([sys.executable, "-m", "benchmarks.segmentation_train_speed", "--crop", "100", "--out",
                          str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "multiple of 8" in bad.stderr
