"""Shared helpers for the tests: small inputs, randomised (but not trivial) weights."""
import importlib.util
import json
import os
import subprocess
import sys
import time

import mxnet as mx
import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def randomize_bn(net, seed=0):
    """Random BN statistics and affine terms, so that BN is not the identity and name mix-ups show in the logits."""
    rng = np.random.RandomState(seed)
    for name, p in sorted(net._collect_params_with_prefix().items()):
        if name.endswith("running_mean") or name.endswith("beta"):
            p.set_data(mx.nd.array(rng.normal(0, 0.1, p.shape)))
        elif name.endswith("running_var") or name.endswith("gamma"):
            p.set_data(mx.nd.array(rng.uniform(0.5, 1.5, p.shape)))
    return net


def load_script(name):
    """``scripts/<name>.py`` as a module, to call its ``main(argv)`` in the test's process."""
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "scripts", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def start(cmd, log_path, env=None):
    """``cmd`` in the background, its output in ``log_path`` (a pipe nobody reads would fill and block it)."""
    with open(log_path, "w") as log:
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True, env=env)


def wait_for_step(save_dir, proc, epoch, step, timeout=120):
    """Returns once metrics.jsonl has logged ``step`` of ``epoch`` (1-based); fails if ``proc`` ended first."""
    path, deadline = os.path.join(save_dir, "metrics.jsonl"), time.time() + timeout
    while proc.poll() is None and time.time() < deadline:
        if os.path.exists(path):
            for line in open(path):
                try:
                    r = json.loads(line)
                except ValueError:  # a line being written
                    continue
                if r["event"] == "step" and (r["epoch"], r["step"]) >= (epoch, step):
                    return
        time.sleep(0.02)
    raise AssertionError(f"run ended (exit {proc.poll()}) or timed out before epoch {epoch} step {step}")


def wait_for_file(path, proc, timeout=180):
    """Returns once ``path`` exists (a checkpoint written); fails if ``proc`` ended first."""
    deadline = time.time() + timeout
    while not os.path.exists(path) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be killed"


def events(save_dir, kind):
    """The ``kind`` events of a run's metrics.jsonl."""
    return [r for r in map(json.loads, open(os.path.join(save_dir, "metrics.jsonl"))) if r["event"] == kind]


def params_of(path):
    """A .params file as ``{name: numpy array}``."""
    return {k: v.asnumpy() for k, v in mx.nd.load(str(path)).items()}


def assert_same_run_end(whole, resumed, epoch=2):
    """A resumed run ended with the uninterrupted one's weights and last epoch loss."""
    name = f"ckpt-{epoch:04d}.params"
    a, b = params_of(whole / name), params_of(resumed / name)
    assert sorted(a) == sorted(b)
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-6, err_msg=k)
    assert events(resumed, "epoch")[-1]["loss"] == pytest.approx(events(whole, "epoch")[-1]["loss"], rel=1e-5)


@pytest.fixture
def rng():
    return np.random.RandomState(0)


def run_python(code, python=sys.executable, **kwargs):
    """Runs ``code`` in a fresh interpreter (for import-time behaviour) and returns the completed process."""
    return subprocess.run([python, "-c", code], capture_output=True, text=True, cwd=kwargs.pop("cwd", "/"),
                          timeout=kwargs.pop("timeout", 300), **kwargs)


@pytest.fixture(scope="session")
def quick_demo(tmp_path_factory):
    """``python -m demos.classification --quick`` (make demo's program) run once: tests/test_demo.py checks it, the
    detection demo's test takes its checkpoint as the backbone."""
    if not os.path.exists(os.path.join(os.path.dirname(sys.executable), "horovodrun")):
        pytest.skip("needs horovodrun next to the interpreter")
    out = tmp_path_factory.mktemp("demo") / "out"
    out.mkdir()
    (out / "stale.txt").write_text("from an older run")
    (out / ".resnest-demo").write_text("")  # a previous demo's folder: deleted, not reused
    proc = subprocess.run([sys.executable, "-m", "demos.classification", "--out", str(out), "--quick"],
                          capture_output=True, text=True, timeout=400, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return out, proc


def _bfloat16_supported():
    from resnest_gluon.deploy.amx import bfloat16_supported

    return bfloat16_supported()


# MXNet 1.9.1's oneDNN has bfloat16 convolutions only for AVX-512 CPUs; elsewhere optimize() refuses bfloat16 with
# a clear error (tests/test_deploy.py checks it) and these tests cannot run.
needs_bfloat16 = pytest.mark.skipif(not _bfloat16_supported(),
                                    reason="this CPU has no AVX-512: MXNet 1.9.1's oneDNN has no bfloat16 convolutions")


def run_training(cmd, fails=False, timeout=300):
    """Runs a training command line from the repo root at one thread; asserts it failed exactly when ``fails``
    (showing its last 50 lines, progress bars left out) and returns the finished process."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO, env=env)
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if "s/step" not in ln and "step/s" not in ln]
    assert (proc.returncode != 0) == fails, "\n".join(lines[-50:])
    return proc


def kill_in_epoch_2_and_resume(cmd, save_dir):
    """Starts training ``cmd`` (saving to ``save_dir``), SIGKILLs it once epoch 1's checkpoint is written (so inside
    epoch 2), resumes it with ``--resume`` to the end and asserts it resumed from epoch 1."""
    import signal

    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))
    wait_for_file(os.path.join(save_dir, "ckpt-0001.json"), proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert not os.path.exists(os.path.join(save_dir, "ckpt-0002.json"))  # killed inside epoch 2
    run_training(cmd + ["--resume", str(save_dir)])
    assert [r["epoch"] for r in events(save_dir, "resume")] == [1]
