"""What the benchmark command lines share: the thread count fixed before MXNet loads, model specs, machine
information, and timing ours beside the peers in alternating rounds.

Importing it loads no framework (threads must be set before mxnet is imported); the functions that need MXNet import
it themselves.
"""
import argparse
import os
import platform
import sys
from dataclasses import dataclass

from . import _paper, _peers
from ._timing import time_batches


@dataclass(frozen=True)
class Spec:
    name: str
    input_size: int

    @property
    def label(self):
        return f"{self.name}@{self.input_size}"


def positive(text):
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def set_threads(requested):
    """Fixes the CPU thread count for MXNet, OpenMP/BLAS and the peer workers; must run before mxnet is imported."""
    if "mxnet" in sys.modules:
        raise RuntimeError("set_threads must run before mxnet is imported")
    if requested:
        n = requested
    elif os.environ.get("OMP_NUM_THREADS", "").isdigit():
        n = int(os.environ["OMP_NUM_THREADS"])
    else:
        n = len(os.sched_getaffinity(0))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "MXNET_OMP_MAX_THREADS"):
        os.environ[var] = str(n)
    os.environ.setdefault("MXNET_CPU_WORKER_NTHREADS", "1")
    return n


def parse_spec(text):
    """``'resnest50@256'`` or ``'resnest50'`` -> :class:`Spec`; unknown names raise ``ValueError`` with suggestions."""
    from resnest_gluon import get_config

    name, _, size = text.strip().lower().partition("@")
    if name == _paper.BASELINE:
        default = 224
    else:
        try:
            default = get_config(name).data.input_size
        except ValueError as err:
            raise ValueError(f"{err} (or {_paper.BASELINE}, MXNet's resnet50_v1 baseline)") from None
    if size and not size.isdigit():
        raise ValueError(f"{text!r}: the input size after '@' must be an integer, e.g. resnest50@224")
    size = int(size) if size else default
    if size < 32:
        raise ValueError(f"{text!r}: input size {size} is too small (at least 32 px)")
    return Spec(name, size)


def build(name):
    """Our model ``name``, or the baseline (MXNet model zoo resnet50_v1), uninitialised."""
    import mxnet as mx
    from resnest_gluon import get_model

    return mx.gluon.model_zoo.vision.resnet50_v1() if name == _paper.BASELINE else get_model(name)


def machine_info(threads):
    """CPU, thread count, versions and the load average now (callers add ``loadavg_end`` when done)."""
    import mxnet as mx
    import numpy as np
    from mxnet.runtime import Features

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    return {"platform": platform.platform(), "cpu": cpu, "cpus": os.cpu_count(),
            "cpus_allowed": len(os.sched_getaffinity(0)), "threads": threads, "python": platform.python_version(),
            "mxnet": mx.__version__, "numpy": np.__version__, "onednn": Features().is_enabled("MKLDNN"),
            "loadavg_start": list(os.getloadavg())}


def command_line():
    return [os.path.relpath(sys.argv[0], _peers.REPO)] + sys.argv[1:]


def in_process(step):
    """A side timed in this process: ``step`` as the timer :func:`alternate` takes."""
    return lambda iters, seconds: time_batches(step, iters, seconds)


def alternate(tag, timers, rounds, iters=None, seconds=None):
    """Times each side in turn (side 1, side 2, ..., side 1, ...) for ``rounds`` rounds, so a slow phase of a shared
    machine hits every side. ``timers``: {side: ``(iters, seconds) -> [latency ms per batch]``} (:func:`in_process`
    of a step, or a peer worker's ``measure``); returns {side: [latencies per round]}."""
    times = {side: [] for side in timers}
    for r in range(rounds):
        print(f"{tag}: round {r + 1}/{rounds}", file=sys.stderr, flush=True)
        for side, timer in timers.items():
            times[side].append(timer(iters, seconds))
    return times
