"""The split-attention tail as one fused CPU operator, ``resnest_radix_weighted_sum`` (``csrc/attention_op.cc``).

``out = sum_r attn[:, r] * x[:, r]`` over the radix splits, forward and backward, in one pass over memory where
MXNet's own operators take four (``broadcast_mul``, ``slice_axis`` x R, ``add_n``): ResNeSt-50 inference at batch 16
on two cores went from 10.9 to 12.8 img/s, bfloat16 from 32 to 51 (docs/performance.md).

The operator is C++ against MXNet's operator-library API (``mxnet/lib_api.h``, shipped in the MXNet wheel): it is
compiled once per machine and MXNet version with the system C++ compiler (``$CXX``, default ``g++``) into
``$RESNEST_GLUON_OPS_CACHE`` (default ``~/.cache/resnest_gluon/ops``) and loaded with ``mx.library.load`` when the
first split-attention block is built (not at import). Without a compiler, or with ``RESNEST_GLUON_FUSED_OPS=0``,
the networks use MXNet's operators (same numbers, slower on CPU) and :func:`unavailable_reason` says why. The operator is CPU-only: a network on a GPU
uses MXNet's operators (:func:`resnest_gluon.splat.set_fused_attention`).
"""
import contextlib
import hashlib
import logging
import os
import shlex
import shutil
import subprocess
import sys
import time
import warnings

import mxnet as mx

from ..atomic import atomic_path

__all__ = ["OP_NAME", "available", "unavailable_reason", "load", "build", "library_path", "prune_cache"]

OP_NAME = "resnest_radix_weighted_sum"
SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "csrc", "attention_op.cc")
# -Bsymbolic: the library's calls into its own copy of MXNet's lib_api.cc stay inside it. Horovod's MXNet module
# exports the same symbols; without it, either load order crashed (free(): invalid pointer, SIGFPE at load).
CXXFLAGS = ("-shared", "-fPIC", "-O3", "-fopenmp", "-std=c++17", "-Wl,-Bsymbolic")
STALE_DAYS = 30  # a build no process has loaded for this long is deleted when a new one is made
_log = logging.getLogger(__name__)
_state = {"loaded": False, "tried": False, "reason": "not loaded yet"}


def _mxnet_api_files():
    """MXNet's operator-library header folder and its ``lib_api.cc`` (both ship in the MXNet 1.9 wheel)."""
    root = os.path.dirname(os.path.abspath(mx.__file__))
    include, lib_api = os.path.join(root, "include"), os.path.join(root, "src", "lib_api.cc")
    for path in (os.path.join(include, "mxnet", "lib_api.h"), lib_api):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"MXNet {mx.__version__} at {root} has no {os.path.relpath(path, root)} "
                                    "(needed to build custom operators)")
    return include, lib_api


def _compiler():
    cxx = os.environ.get("CXX", "g++")
    if shutil.which(cxx) is None:
        raise FileNotFoundError(f"no C++ compiler: {cxx!r} is not on PATH (set CXX)")
    return cxx


def library_path(cache_dir=None):
    """Where the compiled library for this source, MXNet version, compiler and flags is (or will be) cached."""
    cache_dir = cache_dir or os.environ.get("RESNEST_GLUON_OPS_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "resnest_gluon", "ops")
    include, lib_api = _mxnet_api_files()
    key = hashlib.sha1()
    for path in (SOURCE, os.path.join(include, "mxnet", "lib_api.h"), lib_api):
        with open(path, "rb") as f:
            key.update(f.read())
    key.update(" ".join((mx.__version__, _compiler()) + CXXFLAGS).encode())
    return os.path.join(cache_dir, f"libresnest_ops-{key.hexdigest()[:16]}.so")


def build(path):
    """Compiles the operator library to ``path`` (atomically: a failed or interrupted build leaves nothing)."""
    include, lib_api = _mxnet_api_files()
    with atomic_path(path) as tmp:
        cmd = [_compiler(), *CXXFLAGS, "-I", include, SOURCE, lib_api, "-o", tmp]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode:
            raise RuntimeError(f"compiling {SOURCE} failed ({shlex.join(cmd)}):\n{done.stderr[-2000:]}")
    return path


def prune_cache(cache_dir, keep, max_age_days=STALE_DAYS):
    """Deletes the other builds in ``cache_dir`` that no process has loaded for ``max_age_days`` (each load touches
    its library); returns their paths. Builds for other MXNet versions or compilers in use stay."""
    cutoff, removed = time.time() - max_age_days * 86400, []
    for name in sorted(os.listdir(cache_dir)):
        path = os.path.join(cache_dir, name)
        if not (name.startswith("libresnest_ops-") and name.endswith(".so")) or path == keep:
            continue
        with contextlib.suppress(OSError):
            if os.path.getmtime(path) < cutoff:
                os.remove(path)
                removed.append(path)
                with contextlib.suppress(FileNotFoundError):
                    os.remove(path + ".lock")
    return removed


@contextlib.contextmanager
def _build_lock(path):
    """One build at a time per cache folder (e.g. 64 Horovod workers importing the package together)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    try:
        import fcntl
    except ImportError:  # not POSIX: the atomic rename alone keeps concurrent builds safe
        yield
        return
    with open(path + ".lock", "w", encoding="utf-8") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@contextlib.contextmanager
def _keep_operator_functions():
    """``mx.library.load`` regenerates every ``mx.nd`` / ``mx.sym`` operator function. Libraries that captured one
    before (GluonCV's FPN compares its norm layer to ``mx.sym.contrib.SyncBatchNorm`` by identity) would then hold
    stale objects, depending on whether they were imported before or after our first network was built. The old
    function objects are put back (they call the same operators); only the new operator's functions are added."""
    modules = [m for name, m in list(sys.modules.items())
               if m is not None and name.startswith(("mxnet.ndarray", "mxnet.symbol"))]
    before = [(m, {k: v for k, v in vars(m).items() if callable(v)}) for m in modules]
    try:
        yield
    finally:
        for module, functions in before:
            for name, old in functions.items():
                if getattr(module, name, old) is not old:
                    setattr(module, name, old)


def load(cache_dir=None):
    """Builds (once) and loads the operator; returns whether it is usable. Never raises: a failure warns once and
    is remembered (later calls return False at once; an explicit ``cache_dir`` tries again)."""
    if _state["loaded"]:
        return True
    if _state["tried"] and cache_dir is None:
        return False
    _state["tried"] = True
    if os.environ.get("RESNEST_GLUON_FUSED_OPS", "1") == "0":
        _state["reason"] = "disabled by RESNEST_GLUON_FUSED_OPS=0"
        return False
    try:
        path = library_path(cache_dir)
        with _build_lock(path):
            if not os.path.isfile(path):
                _log.warning("resnest_gluon: compiling the fused split-attention operator once, to %s", path)
                build(path)
                prune_cache(os.path.dirname(path), keep=path)
        with contextlib.suppress(OSError):  # marks the build as in use (read-only caches are fine)
            os.utime(path)
        with _keep_operator_functions():
            mx.library.load(path, False)
        if not hasattr(mx.nd, OP_NAME):
            raise RuntimeError(f"{path} loaded but did not register {OP_NAME}")
    except Exception as err:  # pylint: disable=broad-except
        _state["reason"] = f"{type(err).__name__}: {err}"
        warnings.warn(f"resnest_gluon: the fused split-attention operator is unavailable ({_state['reason']}); "
                      "using MXNet's operators (same results, slower on CPU)", RuntimeWarning, stacklevel=2)
        return False
    _state.update(loaded=True, reason=None)
    return True


def available():
    """Whether the fused operator is loaded in this process."""
    return _state["loaded"]


def unavailable_reason():
    """Why the fused operator is not loaded (``None`` when it is)."""
    return _state["reason"]
