"""Drops known, harmless lines that MXNet's C++ code writes to stderr, in the process that writes them.

MXNet 1.9.1's oneDNN average pooling logs ``MKLDNN Pooling: training with prop_kind is forward_scoring`` each time
it creates a training primitive (per input shape, per thread, per rank: dozens of lines in a short run). Average
pooling needs no workspace for its backward pass, so the line asks nothing of anyone. ``ImageRecordIter`` says
how many decoding threads it uses at the start of every epoch. Both come from dmlc's ``LOG(INFO)``, which has no
level switch. :func:`filter_native_stderr` routes the process's file descriptor 2
through a small filter process that drops such lines and passes everything else through unchanged.
"""
import os
import subprocess
import sys

__all__ = ["HARMLESS", "filter_native_stderr"]

# Substrings of whole stderr lines known to be harmless (see the module docstring for each).
HARMLESS = ("MKLDNN Pooling: training with prop_kind is forward_scoring",
            "threads for decoding..")  # ImageRecordIter's "use N threads for decoding..": every epoch, every rank

# The filter: complete lines are dropped when they hold a pattern; a partial line is passed on at once unless it
# may be the start of a C++ log line ("[12:34:56] src/..."), which waits for its end (at most 0.2 s), so progress
# bars (\r redraws) are not delayed. It ignores SIGINT/SIGTERM and ends when every writer has closed the pipe, so
# the last words of a crashing or killed process still get through.
_FILTER = r"""
import os, re, select, signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
patterns = [p.encode() for p in sys.argv[1:]]
out, pending = sys.stdout.buffer, b""
log_start = re.compile(rb"\[[0-9:]{0,8}\]?")
def emit(data):
    out.write(data)
    out.flush()
while True:
    ready, _, _ = select.select([0], [], [], 0.2)
    chunk = os.read(0, 65536) if ready else None
    if chunk == b"":
        break
    if chunk:
        pending += chunk
        parts = re.split(rb"(?<=[\r\n])", pending)
        pending = parts.pop()
        emit(b"".join(p for p in parts if not any(x in p for x in patterns)))
        if pending and log_start.fullmatch(pending[:10]) is None:
            emit(pending)
            pending = b""
    elif pending:
        emit(pending)
        pending = b""
if pending and not any(x in pending for x in patterns):
    emit(pending)
"""


def filter_native_stderr(patterns=HARMLESS):
    """Sends this process's stderr (C++ and Python alike) through a filter dropping lines that contain one of
    ``patterns``; returns the filter process (None when stderr is not a real file descriptor, e.g. under pytest's
    capture)."""
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        return None
    sys.stderr.flush()
    target = os.dup(fd)
    proc = subprocess.Popen([sys.executable, "-c", _FILTER, *patterns], stdin=subprocess.PIPE, stdout=target,
                            close_fds=True)
    os.close(target)
    os.dup2(proc.stdin.fileno(), fd)
    proc.stdin.close()  # fd 2 is now the only write end: the filter ends when this process does
    return proc
