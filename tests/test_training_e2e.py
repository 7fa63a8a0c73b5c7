"""End to end: scripts/train_imagenet.py under ``horovodrun --gloo -np 2`` on tiny generated .rec files.

Data: 10 classes whose images are flat colours plus noise (learnable in a few steps), 150 training records:
not divisible by world (2) x batch (8), so the shards are uneven and must still run equal steps.
"""
import glob
import json
import os
import signal
import subprocess
import sys
import time

import mxnet as mx
import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV = os.path.dirname(sys.executable)
HOROVODRUN = os.path.join(VENV, "horovodrun")
SCRIPT = os.path.join(REPO, "scripts", "train_imagenet.py")

pytestmark = pytest.mark.skipif(not os.path.exists(HOROVODRUN), reason="needs horovodrun next to the interpreter")


def make_class_rec(prefix, n, classes=10, seed=0):
    """Record i has label i % classes and a 40x40 image of that class's colour plus uniform noise."""
    rng = np.random.RandomState(seed)
    w = mx.recordio.MXIndexedRecordIO(prefix + ".idx", prefix + ".rec", "w")
    for i in range(n):
        c = i % classes
        colour = np.array([(c * 71) % 256, (c * 151 + 40) % 256, (c * 37 + 90) % 256], np.float32)
        img = np.clip(colour + rng.uniform(-20, 20, (40, 40, 3)), 0, 255).astype(np.uint8)
        w.write_idx(i, mx.recordio.pack_img(mx.recordio.IRHeader(0, float(c), i, 0), img, img_fmt=".png"))
    w.close()
    return prefix + ".rec"


@pytest.fixture(scope="module")
def recs(tmp_path_factory):
    d = tmp_path_factory.mktemp("recs")
    return make_class_rec(str(d / "train"), 150), make_class_rec(str(d / "val"), 40, seed=1)


def command(train_rec, save_dir, *extra, np_=2):
    return [HOROVODRUN, "--gloo", "-np", str(np_), "-H", f"localhost:{np_}", sys.executable, SCRIPT,
            "--rec-train", train_rec, "--model", "resnest14", "--input-size", "32", "--batch-size", "8",
            "--num-classes", "10", "--no-cuda", "-j", "1", "--save-dir", str(save_dir), "--log-interval", "1",
            "--param-digest", *extra]


def run(cmd, timeout=150):
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def epochs(save_dir):
    lines = [json.loads(line) for line in open(os.path.join(save_dir, "metrics.jsonl"))]
    return [r for r in lines if r["event"] == "epoch"]


def assert_ranks_agree(save_dir):
    """Both ranks wrote a digest and their per-parameter sums agree to float tolerance."""
    d = [json.load(open(p)) for p in sorted(glob.glob(os.path.join(save_dir, "param-digest-rank*")))]
    assert [x["rank"] for x in d] == [0, 1]
    np.testing.assert_allclose(d[0]["sums"], d[1]["sums"], rtol=1e-5, atol=1e-6)


def test_two_ranks_learn_stay_identical_and_log(recs, tmp_path):
    train_rec, val_rec = recs
    out = tmp_path / "run"
    run(command(train_rec, out, "--rec-val", val_rec, "--num-epochs", "4", "--warmup-epochs", "0", "--lr", "0.02",
                "--no-mixup", "--no-auto-aug", "--label-smoothing", "0", "--eval-frequency", "2",
                "--save-frequency", "2"))
    ep = epochs(out)
    assert [e["epoch"] for e in ep] == [1, 2, 3, 4]
    assert ep[-1]["loss"] < ep[0]["loss"] * 0.8, [e["loss"] for e in ep]
    assert ep[1]["val_images"] == 40 and "val_top1" not in ep[0]  # both shards counted, every 2nd epoch
    assert_ranks_agree(out)  # both ranks hold the same weights
    assert os.path.getsize(out / "curves.png") > 1000
    assert sorted(os.path.basename(p) for p in glob.glob(str(out / "ckpt-*.json"))) == ["ckpt-0002.json",
                                                                                         "ckpt-0004.json"]


def test_recipe_paths_mixup_smoothing_autoaug_dropblock(recs, tmp_path):
    train_rec, _ = recs
    out = tmp_path / "recipe"
    run(command(train_rec, out, "--num-epochs", "2", "--warmup-epochs", "1", "--max-steps-per-epoch", "2",
                "--mixup", "--mixup-alpha", "0.2", "--label-smoothing", "0.1", "--auto-aug",
                "--dropblock-prob", "0.1", "--optimizer", "sgd"))
    ep = epochs(out)
    assert [e["dropblock_prob"] for e in ep] == pytest.approx([0.0, 0.1])
    assert all(e["mixup"] for e in ep) and all(np.isfinite(e["loss"]) for e in ep)
    assert_ranks_agree(out)


def test_sigkill_then_resume_reaches_final_epoch(recs, tmp_path):
    train_rec, _ = recs
    out = tmp_path / "killed"
    cmd = command(train_rec, out, "--num-epochs", "4", "--warmup-epochs", "1", "--save-frequency", "1",
                  "--max-steps-per-epoch", "5", "--no-auto-aug")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO,
                            start_new_session=True)
    deadline = time.time() + 120
    while not os.path.exists(out / "ckpt-0002.json") and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None, "run ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)  # the launcher and both ranks, mid-way through epoch 3
    proc.wait(timeout=30)
    assert not os.path.exists(out / "ckpt-0004.json")
    run(cmd + ["--resume", str(out)])
    resumed = [json.loads(line) for line in open(out / "metrics.jsonl") if '"resume"' in line]
    assert resumed and resumed[-1]["epoch"] >= 2
    assert epochs(out)[-1]["epoch"] == 4 and os.path.exists(out / "ckpt-0004.json")
    assert_ranks_agree(out)


def test_float16_on_cpu_is_refused_clearly(recs, tmp_path):
    train_rec, _ = recs
    proc = subprocess.run([sys.executable, SCRIPT, "--rec-train", train_rec, "--model", "resnest14", "--no-cuda",
                           "--dtype", "float16", "--batch-size", "8", "--save-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=60, cwd=REPO)
    assert proc.returncode == 2 and "--dtype float16" in proc.stderr and "GPU" in proc.stderr
