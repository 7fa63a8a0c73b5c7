"""End to end: scripts/train_imagenet.py under ``horovodrun --gloo -np 2`` on tiny generated .rec files.

Data: 10 classes whose images are flat colours plus noise (learnable in a few steps), 150 training records:
not divisible by world (2) x batch (8), so the shards are uneven and must still run equal steps.
Every run uses ``-j 1`` (one decoding thread): the input batches are then bit-reproducible.
"""
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import mxnet as mx
import numpy as np
import psutil
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(__file__))
import recgen  # noqa: E402
from conftest import start, wait_for_step  # noqa: E402
VENV = os.path.dirname(sys.executable)
HOROVODRUN = os.path.join(VENV, "horovodrun")
SCRIPT = os.path.join(REPO, "scripts", "train_imagenet.py")
VERIFY = os.path.join(REPO, "scripts", "verify.py")

pytestmark = pytest.mark.skipif(not os.path.exists(HOROVODRUN), reason="needs horovodrun next to the interpreter")


def make_class_rec(prefix, n, classes=10, seed=0, damaged=(), empty=()):
    """Record i has label i % classes and a 40x40 image of that class's colour plus uniform noise; the records in
    ``damaged`` hold a JPEG with its middle overwritten, those in ``empty`` no image (header and label intact)."""
    rng = np.random.RandomState(seed)
    w = mx.recordio.MXIndexedRecordIO(prefix + ".idx", prefix + ".rec", "w")
    for i in range(n):
        c = i % classes
        colour = np.array([(c * 71) % 256, (c * 151 + 40) % 256, (c * 37 + 90) % 256], np.float32)
        img = np.clip(colour + rng.uniform(-20, 20, (40, 40, 3)), 0, 255).astype(np.uint8)
        header = mx.recordio.IRHeader(0, float(c), i, 0)
        if i in damaged or i in empty:
            w.write_idx(i, mx.recordio.pack(header, recgen.damaged_jpeg(img) if i in damaged else b""))
            continue
        w.write_idx(i, mx.recordio.pack_img(header, img, img_fmt=".png"))
    w.close()
    return prefix + ".rec"


@pytest.fixture(scope="module")
def recs(tmp_path_factory):
    d = tmp_path_factory.mktemp("recs")
    return make_class_rec(str(d / "train"), 150), make_class_rec(str(d / "val"), 40, seed=1)


def command(train_rec, save_dir, *extra, np_=2, classes=10):
    """The training command: under ``horovodrun --gloo -np np_``, or a plain single process with ``np_=None``."""
    launcher = [] if np_ is None else [HOROVODRUN, "--gloo", "-np", str(np_), "-H", f"localhost:{np_}"]
    return launcher + [sys.executable, SCRIPT, "--rec-train", train_rec, "--model", "resnest14", "--input-size",
                       "32", "--batch-size", "8", "--num-classes", str(classes), "--no-cuda", "-j", "1",
                       "--save-dir", str(save_dir), "--log-interval", "1", "--param-digest", *extra]


def run(cmd, timeout=150, fails=False):
    """Runs ``cmd`` (a hang fails the test at ``timeout``) and checks it succeeded, or failed if ``fails``."""
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if "step/s" not in ln and "s/step" not in ln]
    assert (proc.returncode != 0) == fails, "\n".join(lines[-60:])
    return proc


def load(path):
    """A .params file as {name: numpy array}."""
    return {k: v.asnumpy() for k, v in mx.nd.load(str(path)).items()}


def assert_same_params(a, b, what):
    assert sorted(a) == sorted(b), what
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-6, err_msg=f"{what}: {k}")


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
    run(command(train_rec, out, "--rec-val", val_rec, "--num-epochs", "4", "--warmup-epochs", "0",
                "--effective-lr", "0.04",
                "--no-mixup", "--no-auto-aug", "--label-smoothing", "0", "--eval-frequency", "2",
                "--save-frequency", "2"))
    ep = epochs(out)
    assert [e["epoch"] for e in ep] == [1, 2, 3, 4]
    assert ep[-1]["loss"] < ep[0]["loss"] * 0.8, [e["loss"] for e in ep]
    assert ep[1]["val_images"] == 40 and "val_top1" not in ep[0]  # both shards counted, every 2nd epoch
    assert_ranks_agree(out)  # both ranks hold the same weights, BN running statistics included (averaged)
    assert_same_params(load(out / "final-rank0.params"), load(out / "final-rank1.params"), "rank 0 vs rank 1")
    assert os.path.getsize(out / "curves.png") > 1000
    assert sorted(os.path.basename(p) for p in glob.glob(str(out / "ckpt-*.json"))) == ["ckpt-0002.json",
                                                                                         "ckpt-0004.json"]
    # training-time validation and scripts/verify.py on the saved weights agree (same size, crop ratio, stats)
    report = tmp_path / "verify.json"
    run([sys.executable, VERIFY, "--rec-val", val_rec, "--model", "resnest14", "--params",
         str(out / "ckpt-0004.params"), "--crop-size", "32", "--batch-size", "8", "--num-workers", "1",
         "--json", str(report)])
    verified = json.load(open(report))
    assert verified["data_config"]["crop_pct"] == 0.875 and verified["images"] == ep[-1]["val_images"]
    assert verified["top1"] == pytest.approx(ep[-1]["val_top1"]) and verified["top5"] == pytest.approx(
        ep[-1]["val_top5"])


def test_recipe_paths_mixup_smoothing_autoaug_dropblock(recs, tmp_path):
    train_rec, _ = recs
    out = tmp_path / "recipe"
    run(command(train_rec, out, "--num-epochs", "2", "--warmup-epochs", "1", "--max-steps-per-epoch", "2",
                "--mixup", "--mixup-alpha", "0.2", "--label-smoothing", "0.1", "--auto-aug",
                "--dropblock-prob", "0.1", "--optimizer", "sgd"))
    ep = epochs(out)
    assert [e["dropblock_prob"] for e in ep] == pytest.approx([0.05, 0.1])
    assert all(e["mixup"] for e in ep) and all(np.isfinite(e["loss"]) for e in ep)
    assert_ranks_agree(out)


def _process(pid):
    try:
        return psutil.Process(pid)
    except psutil.NoSuchProcess:
        return None


# Interrupted runs: 2 epochs of 8 steps, the recipe's random parts on (mixup, label smoothing, DropBlock, random crops
# and flips), cut during epoch 2; each must end like one uninterrupted run of the same flags.
PREEMPT_FLAGS = ("--num-epochs", "2", "--warmup-epochs", "1", "--save-frequency", "1", "--max-steps-per-epoch", "8",
                 "--dropblock-prob", "0.1", "--mixup", "--label-smoothing", "0.1", "--seed", "5")


@pytest.fixture(scope="module")
def uninterrupted(recs, tmp_path_factory):
    """The reference: PREEMPT_FLAGS on the ImageRecordIter path (--no-auto-aug), run through once."""
    whole = tmp_path_factory.mktemp("whole")
    run(command(recs[0], whole, "--no-auto-aug", *PREEMPT_FLAGS))
    return whole


def test_killed_and_resumed_run_ends_like_an_uninterrupted_one(recs, uninterrupted, tmp_path):
    """SIGKILL during epoch 2 (after checkpoint 1), resume: same weights on each rank as the uninterrupted run."""
    train_rec, _ = recs
    whole = uninterrupted
    killed = tmp_path / "killed"
    cmd = command(train_rec, killed, "--no-auto-aug", *PREEMPT_FLAGS)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO,
                            start_new_session=True)
    deadline = time.time() + 120
    while not os.path.exists(killed / "ckpt-0001.json") and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "run ended before it could be killed"
    job = [proc.pid] + [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
    for pid in job:  # the launcher and both ranks (horovodrun starts each rank in a session of its own)
        os.kill(pid, signal.SIGKILL)
    proc.wait(timeout=30)
    psutil.wait_procs([p for p in map(_process, job) if p], timeout=30)
    assert not os.path.exists(killed / "ckpt-0002.json") and not glob.glob(str(killed / "final-rank*"))
    run(cmd + ["--resume", str(killed)])

    resumed = [json.loads(line) for line in open(killed / "metrics.jsonl") if '"resume"' in line]
    assert [r["epoch"] for r in resumed] == [1]
    assert epochs(killed)[-1]["epoch"] == 2 and epochs(whole)[-1]["epoch"] == 2
    for rank in (0, 1):
        assert_same_params(load(whole / f"final-rank{rank}.params"), load(killed / f"final-rank{rank}.params"),
                           f"rank {rank}: uninterrupted vs killed + resumed")
    assert epochs(killed)[-1]["loss"] == pytest.approx(epochs(whole)[-1]["loss"], rel=1e-5)


BLIND_RANK_1 = """if [ "$HOROVOD_RANK" = 1 ]; then
  exec unshare -m --propagation private sh -c 'mount -t tmpfs tmpfs "$0" && exec "$@"' "$RESUME_DIR" "$@"
fi
exec "$@"
"""


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root and unshare (mounts)")
def test_resume_is_rank_0s_decision_on_hosts_that_share_no_disk(recs, uninterrupted, tmp_path):
    """Rank 1 sees an empty save folder (its own mount namespace: another host's disk), rank 0 the checkpoint after
    epoch 1: rank 1 gets the checkpoint's files from rank 0, both resume from it, and the run ends with the
    uninterrupted run's weights (a rank starting from scratch would have trained a different model)."""
    cut = tmp_path / "cut"
    cut.mkdir()
    for name in ("ckpt-0001.params", "ckpt-0001.states", "ckpt-0001.json"):
        shutil.copy(uninterrupted / name, cut / name)
    wrapper = tmp_path / "blind_rank1.sh"
    wrapper.write_text(BLIND_RANK_1)
    cmd = command(recs[0], cut, "--no-auto-aug", *PREEMPT_FLAGS, "--resume", str(cut))
    cmd = cmd[:6] + ["sh", str(wrapper)] + cmd[6:]  # horovodrun ... sh wrapper python train_imagenet.py ...
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=150, cwd=REPO,
                          env={**os.environ, "RESUME_DIR": str(cut)})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "rank(s) 1 on" in proc.stdout and "had no copy of ckpt-0001.params: sent from rank 0" in proc.stdout
    assert [r["epoch"] for r in events(cut, "resume")] == [1]
    assert not os.path.exists(cut / "final-rank1.params")  # rank 1 wrote into its own (now gone) folder
    assert_same_params(load(uninterrupted / "final-rank0.params"), load(cut / "final-rank0.params"),
                       "rank 0: uninterrupted vs resumed with rank 1 blind")


def events(save_dir, kind):
    return [r for r in map(json.loads, open(os.path.join(save_dir, "metrics.jsonl"))) if r["event"] == kind]


def rank_process(launcher, rank):
    """The training process of ``rank`` under a horovodrun process."""
    for p in psutil.Process(launcher.pid).children(recursive=True):
        try:
            if SCRIPT in p.cmdline() and p.environ().get("HOROVOD_RANK") == str(rank):
                return p
        except psutil.NoSuchProcess:
            pass
    raise AssertionError(f"no rank {rank} process under horovodrun")


def assert_resumed_like_uninterrupted(whole, cut, ranks, step):
    assert [(r["epoch"], r["step"]) for r in events(cut, "resume")] == [(1, step)]
    for rank in ranks:
        assert_same_params(load(whole / f"final-rank{rank}.params"), load(cut / f"final-rank{rank}.params"),
                           f"rank {rank}: uninterrupted vs preempted + resumed")
    # the resumed epoch's summary covers the whole epoch: the sums of the steps before the stop travel along
    assert epochs(cut)[-1]["loss"] == pytest.approx(epochs(whole)[-1]["loss"], rel=1e-5)
    assert epochs(cut)[-1]["train_acc"] == pytest.approx(epochs(whole)[-1]["train_acc"])


def test_sigterm_to_one_rank_stops_both_at_a_step_and_resume_ends_like_an_uninterrupted_run(recs, uninterrupted,
                                                                                             tmp_path):
    """SIGTERM to rank 1 alone (a scheduler may signal only some processes): both ranks stop after the same step,
    rank 0 writes that step's checkpoint, both exit 5; --resume continues after that step and ends with the
    uninterrupted run's weights on each rank (ImageRecordIter path: skipped batches are decoded and dropped)."""
    train_rec, _ = recs
    whole, cut = uninterrupted, tmp_path / "cut"
    cmd = command(train_rec, cut, "--no-auto-aug", *PREEMPT_FLAGS)
    proc = start(cmd, tmp_path / "cut.log")
    wait_for_step(cut, proc, epoch=2, step=2)
    rank_process(proc, 1).send_signal(signal.SIGTERM)
    proc.wait(timeout=120)
    log = open(tmp_path / "cut.log").read()
    # both ranks stop with exit code 5; the one that exits second may be terminated by horovodrun first (143: it ends
    # the other processes once one has exited non-zero), but only after the checkpoint is complete
    codes = dict(re.findall(r"Process (\d) exit with status code (\d+)\.", log))
    assert "5" in codes.values() and set(codes.values()) <= {"5", "143"}, log[-3000:]
    assert log.count("preempted: stopped on a signal after step") == 2 and not glob.glob(str(cut / "final-rank*"))

    from resnest_gluon.training import latest_checkpoint
    from resnest_gluon.trained import load_trained
    ckpt = latest_checkpoint(str(cut))
    assert [e["checkpoint"] for e in events(cut, "preempted")] == [ckpt["meta_path"]]
    assert ckpt["epoch"] == 1 and 3 <= ckpt["step"] <= 8 and ckpt["num_update"] == 8 + ckpt["step"]
    assert os.path.basename(ckpt["meta_path"]) == f"ckpt-0002-step{ckpt['step']:06d}.json"
    net = load_trained(ckpt["params"])  # it carries the model section, as every checkpoint (verify, predict)
    assert (net.model_name, net.model_info.num_classes) == ("resnest14", 10)

    run(cmd + ["--resume", str(cut)])
    assert_resumed_like_uninterrupted(whole, cut, (0, 1), ckpt["step"])


def test_sigint_to_a_single_process_run_and_resume_on_the_dataloader_path(recs, tmp_path):
    """Ctrl-C on a plain process (no horovodrun) with the DataLoader input path (AutoAugment): exit 5, and the
    resumed run's sampler leaves out the samples of the steps done, reading nothing for them."""
    train_rec, _ = recs
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    run(command(train_rec, whole, "--auto-aug", *PREEMPT_FLAGS, np_=None))
    cmd = command(train_rec, cut, "--auto-aug", *PREEMPT_FLAGS, np_=None)
    proc = start(cmd, tmp_path / "cut.log")
    wait_for_step(cut, proc, epoch=2, step=2)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=120) == 5, open(tmp_path / "cut.log").read()[-3000:]
    step = events(cut, "preempted")[0]["step"]
    run(cmd + ["--resume", str(cut)])
    assert_resumed_like_uninterrupted(whole, cut, (0,), step)


def test_a_second_signal_stops_at_once_and_the_previous_checkpoint_stays_the_latest(recs, tmp_path):
    """SIGINT then SIGTERM: the first asks for a stop at the next step, the second stops now (the process dies of
    it) and no checkpoint of the interrupted epoch appears. Both are queued while the process is stopped
    (SIGSTOP), so that they are surely two distinct signals to the handler."""
    train_rec, _ = recs
    out = tmp_path / "twice"
    proc = start(command(train_rec, out, "--no-auto-aug", *PREEMPT_FLAGS, np_=None), tmp_path / "twice.log")
    wait_for_step(out, proc, epoch=2, step=1)
    for sig in (signal.SIGSTOP, signal.SIGINT, signal.SIGTERM, signal.SIGCONT):
        os.kill(proc.pid, sig)
    assert proc.wait(timeout=60) == -signal.SIGTERM, open(tmp_path / "twice.log").read()[-3000:]
    assert "SIGTERM received a second time: stopping at once" in open(tmp_path / "twice.log").read()
    assert sorted(os.listdir(out)) == ["ckpt-0001.json", "ckpt-0001.params", "ckpt-0001.states", "curves.png",
                                       "metrics.jsonl"]  # no stray temporary files either
    from resnest_gluon.training import latest_checkpoint
    ckpt = latest_checkpoint(str(out))
    assert ckpt["epoch"] == 1 and "step" not in ckpt


def test_nan_loss_stops_both_ranks_and_keeps_the_last_good_checkpoint(recs, tmp_path):
    train_rec, _ = recs
    out = tmp_path / "nan"
    flags = ("--num-epochs", "3", "--warmup-epochs", "0", "--save-frequency", "1", "--max-steps-per-epoch", "3",
             "--no-auto-aug", "--no-mixup")
    run(command(train_rec, out, *flags, "--num-epochs", "1"))
    good = load(out / "ckpt-0001.params")
    # resume with an absurd learning rate: the weights overflow within a few steps
    proc = run(command(train_rec, out, *flags, "--resume", str(out), "--lr", "1e30"), timeout=120, fails=True)
    assert "loss is nan at epoch 2 step" in proc.stderr and "last good checkpoint" in proc.stderr
    assert proc.stderr.count("loss is nan at epoch 2 step") == 2  # each rank says so and exits
    assert sorted(os.path.basename(p) for p in glob.glob(str(out / "ckpt-*.json"))) == ["ckpt-0001.json"]
    from resnest_gluon.training import latest_checkpoint
    from resnest_gluon.zoo import get_model, load_weights
    ckpt = latest_checkpoint(str(out))
    assert ckpt["epoch"] == 1
    net = load_weights(get_model("resnest14", classes=10), ckpt["params"])
    assert all(np.isfinite(p.data().asnumpy()).all() for p in net.collect_params().values())
    assert_same_params(load(ckpt["params"]), good, "the good checkpoint is untouched")


def test_resume_refuses_another_world_size_or_batch_size(recs, tmp_path):
    train_rec, _ = recs
    out = tmp_path / "two"
    flags = ("--num-epochs", "2", "--warmup-epochs", "0", "--max-steps-per-epoch", "1", "--no-auto-aug")
    run(command(train_rec, out, *flags, "--num-epochs", "1"))
    proc = run(command(train_rec, out, *flags, "--resume", str(out), np_=None), fails=True)
    assert "world size (processes) 2 in the checkpoint, 1 now" in proc.stderr and "ckpt-0001.json" in proc.stderr
    proc = run(command(train_rec, out, *flags, "--resume", str(out), "--batch-size", "4", np_=None), fails=True)
    assert "world size (processes) 2 in the checkpoint, 1 now; --batch-size 8 in the checkpoint, 4 now" in proc.stderr


def test_single_process_run_then_fine_tune_with_another_class_count(recs, tmp_path):
    """No horovodrun: a plain process trains; its weights then start a 5-class run whose classifier is new."""
    train_rec, _ = recs
    first = tmp_path / "ten"
    run(command(train_rec, first, "--num-epochs", "1", "--warmup-epochs", "0", "--max-steps-per-epoch", "2",
                np_=None))
    assert epochs(first)[0]["epoch"] == 1 and os.path.exists(first / "ckpt-0001.params")
    five_rec = make_class_rec(str(tmp_path / "five"), 40, classes=5)
    tuned = tmp_path / "five-classes"
    # lr 0: the body must come out exactly as loaded, so what changed is the classifier alone
    run(command(five_rec, tuned, "--num-epochs", "1", "--warmup-epochs", "0", "--max-steps-per-epoch", "2",
                "--lr", "0", "--resume-params", str(first / "ckpt-0001.params"), np_=None, classes=5))
    before, after = load(first / "ckpt-0001.params"), load(tuned / "final-rank0.params")
    assert before["fc.weight"].shape[0] == 10 and after["fc.weight"].shape[0] == 5
    body = [k for k in after if not k.startswith("fc.") and not k.endswith(("running_mean", "running_var"))]
    assert body and all(np.array_equal(before[k], after[k]) for k in body)


def test_float16_on_cpu_is_refused_clearly(recs, tmp_path):
    train_rec, _ = recs
    proc = subprocess.run([sys.executable, SCRIPT, "--rec-train", train_rec, "--model", "resnest14", "--no-cuda",
                           "--dtype", "float16", "--batch-size", "8", "--save-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=60, cwd=REPO)
    assert proc.returncode == 2 and "--dtype float16" in proc.stderr and "GPU" in proc.stderr


def test_a_too_high_learning_rate_is_called_out_and_can_stop_the_run(recs, tmp_path):
    train_rec, val_rec = recs
    out = tmp_path / "run"
    proc = run(command(train_rec, out, "--rec-val", val_rec, "--num-epochs", "4", "--warmup-epochs", "0",
                       "--effective-lr", "3", "--no-mixup", "--no-auto-aug", "--stop-if-not-learning",
                       "--save-frequency", "1", np_=None),
               fails=True)
    assert proc.returncode == 6, proc.stderr[-2000:]
    assert "not learning at epoch 2: the training loss rose" in proc.stderr and "effective lr 3" in proc.stderr
    warnings = [json.loads(line) for line in open(out / "metrics.jsonl") if '"warning"' in line]
    assert [w["kind"] for w in warnings][:1] == ["loss_rising"] and warnings[0]["epoch"] == 2
    assert "warning: not learning at epoch 2" in proc.stdout
    assert os.path.exists(out / "ckpt-0002.json")  # the epoch's checkpoint was still written


def test_the_learning_rate_follows_the_batch_and_says_so(recs, tmp_path):
    train_rec, _ = recs
    proc = run(command(train_rec, tmp_path / "run", "--num-epochs", "1", "--warmup-epochs", "0",
                       "--max-steps-per-epoch", "1", "--lr", "0.05", np_=None))
    assert "lr 0.05 per 128 images per worker x batch 8/128 x 1 worker(s) = 0.003125" in proc.stdout
    ckpt = json.load(open(tmp_path / "run" / "ckpt-0001.json"))
    assert ckpt["run"]["lr_rule"] == "linear" and ckpt["run"]["effective_lr"] == 0.003125


# The bad records of the `bad_rec` file: a damaged JPEG, an empty payload, broken framing (a zeroed magic word), and
# two damaged headers with whole framing (2**30 extra labels promised; a NaN label).
DAMAGED, EMPTY, BROKEN, FLAGGED, NAN_LABEL = 20, 77, 110, 45, 130
BAD = (DAMAGED, EMPTY, FLAGGED, BROKEN, NAN_LABEL)


@pytest.fixture(scope="module")
def bad_rec(tmp_path_factory):
    rec = make_class_rec(str(tmp_path_factory.mktemp("bad") / "train"), 150, damaged=(DAMAGED,), empty=(EMPTY,))
    recgen.break_framing(rec, rec[:-4] + ".idx", [BROKEN])
    recgen.break_header(rec, rec[:-4] + ".idx", [FLAGGED])
    recgen.break_header(rec, rec[:-4] + ".idx", [NAN_LABEL], how="label")
    return rec


@pytest.mark.parametrize("path", ["fast", "loader"])
def test_bad_records_are_skipped_named_once_and_ranks_agree(bad_rec, tmp_path, path):
    """Each kind of bad record (`BAD`): both ranks train to the end (same steps), no NaN loss, each
    record named once in stdout and metrics.jsonl with its index, byte offset and reason. The loader path meets them
    while training (two epochs: its shuffle deals every record within two), the fast path before (its scan) and
    reads a copy."""
    out = tmp_path / path
    flags = ["--no-auto-aug", "--num-epochs", "1"] if path == "fast" else ["--auto-aug", "--num-epochs", "2"]
    proc = run(command(bad_rec, out, *flags, "--warmup-epochs", "0", "--max-bad-records-fraction", "0.05"))
    offsets = {int(k): int(o) for k, o in (line.split("\t") for line in open(bad_rec[:-4] + ".idx"))}
    found = events(out, "bad_record")
    assert [(r["index"], r["key"], r["offset"]) for r in sorted(found, key=lambda r: r["index"])] == [
        (i, i, offsets[i]) for i in sorted(BAD)]
    assert all(r["reason"] and r["rec"] == bad_rec for r in found)
    assert sum(r["reason"].startswith("damaged header") for r in found) == 2
    named = [ln for ln in proc.stdout.splitlines() if "bad record:" in ln]
    assert len(named) == len(BAD) and any(f"record #{DAMAGED} (.idx key {DAMAGED}) at byte offset {offsets[DAMAGED]}" in ln
                                   for ln in named), named
    assert [e["epoch"] for e in epochs(out)] == ([1] if path == "fast" else [1, 2])
    assert all(np.isfinite(e["loss"]) for e in epochs(out))
    assert_ranks_agree(out)


@pytest.mark.parametrize("path", ["fast", "loader"])
def test_too_many_bad_records_stop_the_run_with_exit_7(bad_rec, tmp_path, path):
    """The default limit (0.1%): the fast path stops before training (its scan found 5 of 150), the loader path at
    the step that met the first (1 of 150), on every rank."""
    flags = ["--no-auto-aug"] if path == "fast" else ["--auto-aug"]
    proc = run(command(bad_rec, tmp_path / "strict", *flags, "--num-epochs", "2", "--warmup-epochs", "0",
                       "--max-bad-records", "0"), fails=True)
    assert "exit with status code 7" in proc.stdout + proc.stderr
    found = "5 of 150 records are undecodable (3.33%" if path == "fast" else "1 of 150 records are undecodable (0.67%"
    assert f"{found} > --max-bad-records-fraction 0.001 and > --max-bad-records 0); not training on damaged " \
           f"data" in proc.stderr
    assert not glob.glob(str(tmp_path / "strict" / "ckpt-*"))
