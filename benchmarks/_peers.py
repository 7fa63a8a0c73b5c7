"""The peer implementations ``latency.py --compare`` and ``compare.py`` time against ours, and the client of their
worker processes.

Each peer runs in a persistent ``python -m benchmarks._peer_worker`` subprocess under the interpreter that can import
it: GluonCV (MXNet) from the repo's ``.venv``, timm (PyTorch) from ``.venv-torch`` (gluoncv cannot import beside
torch >= 2).
"""
import json
import os
import select
import subprocess
import tempfile

from ._launch import ROOT as REPO, module_command, module_env

WORKER = "_peer_worker"  # the worker's module in this package

_GLUON = ("resnest14", "resnest26", "resnest50", "resnest101", "resnest200", "resnest269")
_TIMM = ("resnest14d", "resnest26d", "resnest50d", "resnest101e", "resnest200e", "resnest269e")

# our model name -> the same architecture under each peer's name (ours registers both naming schemes)
MODELS = {
    "gluoncv": {**dict(zip(_GLUON, _GLUON)), **dict(zip(_TIMM, _GLUON))},
    "timm": {**dict(zip(_GLUON, _TIMM)), **dict(zip(_TIMM, _TIMM)),
             "resnest50_fast_1s4x24d": "resnest50d_1s4x24d", "resnest50_fast_4s2x40d": "resnest50d_4s2x40d",
             "resnest50d_1s4x24d": "resnest50d_1s4x24d", "resnest50d_4s2x40d": "resnest50d_4s2x40d"},
}
PEERS = tuple(MODELS)
DTYPES = ("float32", "float16", "bfloat16")  # what the peers are timed in (int8 is ours only)

# peer -> (default interpreter, the setup command that creates it)
PYTHON = {
    "gluoncv": (os.path.join(REPO, ".venv", "bin", "python"), "tools/setup_env.sh main"),
    "timm": (os.path.join(REPO, ".venv-torch", "bin", "python"), "tools/setup_env.sh torch"),
}


class PeerError(RuntimeError):
    """A peer worker could not be started or failed a command; the message says what to do."""


def check_python(peer, python):
    """Raises :class:`PeerError` naming the setup command when the peer's interpreter does not exist."""
    if not (os.path.isfile(python) and os.access(python, os.X_OK)):
        setup = PYTHON[peer][1]
        raise PeerError(f"--compare needs {peer}'s Python interpreter {python}, which does not exist: "
                        f"run `{setup}` to create it (or pass --{'torch' if peer == 'timm' else peer}-python PATH).")


class PeerWorker:
    """One live worker: ``load`` a model (built, prepared, warmed up), then ``measure`` it as often as needed."""

    def __init__(self, peer, python, threads, env=None, timeout=3600):
        """Starts the worker under ``python`` in ``env`` (default: this process's), the repository root first on
        its ``PYTHONPATH`` so that it imports this package."""
        check_python(peer, python)
        self.peer, self.python, self.timeout = peer, python, timeout
        fd, self._stderr_path = tempfile.mkstemp(prefix=f"peer-{peer}-", suffix=".log")
        os.close(fd)
        with open(self._stderr_path, "ab") as log:  # the worker appends its stderr; we read the tail on errors
            self._proc = subprocess.Popen(module_command(WORKER, python) + [peer, "--threads", str(threads)],
                                          cwd=REPO, env=module_env(env), stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, stderr=log, text=True, bufsize=1)
        try:
            hello = self._reply()
        except PeerError:
            self.close()
            raise
        self.versions = hello.get("versions", {})

    def load(self, model, input_size, batch_size, dtype, ctx, warmup, mode="infer"):
        """``mode``: "infer" (forward passes) or "train" (training steps of ``_recipe``, float32)."""
        return self._request(cmd="load", model=model, input_size=input_size, batch_size=batch_size, dtype=dtype,
                             ctx=ctx, warmup=warmup, mode=mode)["params"]

    def export_onnx(self, model, input_size, path):
        """Writes the peer's ONNX export of ``model`` (random weights) for ``input_size`` images to ``path`` (timm
        only); returns the parameter count."""
        return self._request(cmd="export_onnx", model=model, input_size=input_size, path=path)["params"]

    def measure(self, iters=None, seconds=None):
        return self._request(cmd="measure", iters=iters, seconds=seconds)["latencies_ms"]

    def close(self):
        if self._proc.poll() is None:
            try:
                self._proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                self._proc.stdin.flush()
                self._proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self._proc.kill()
                self._proc.wait()
        if os.path.exists(self._stderr_path):
            os.remove(self._stderr_path)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _request(self, **cmd):
        try:
            self._proc.stdin.write(json.dumps(cmd) + "\n")
            self._proc.stdin.flush()
        except OSError:
            pass  # the worker is gone: _reply reports why
        return self._reply()

    def _reply(self):
        ready, _, _ = select.select([self._proc.stdout], [], [], self.timeout)
        line = self._proc.stdout.readline() if ready else ""
        if not line:
            if ready or self._proc.poll() is not None:
                raise PeerError(f"the {self.peer} worker ({self.python}) exited: {self._stderr_tail()}")
            raise PeerError(f"the {self.peer} worker did not answer within {self.timeout} s")
        reply = json.loads(line)
        if not reply.get("ok"):
            raise PeerError(f"{self.peer} worker: {reply.get('error')} | stderr: {self._stderr_tail()}")
        return reply

    def _stderr_tail(self, lines=15):
        with open(self._stderr_path, errors="replace") as log:
            text = log.read().strip().splitlines()
        return "\n".join(text[-lines:]) or "(no output)"
