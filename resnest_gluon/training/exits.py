"""How the training scripts end: each known failure is one line on stderr and its own exit code.

0 done, 2 unusable arguments or data (named), 3 diverged (NaN/inf), 4 a checkpoint or log could not be written
(disk full: the message names the path and the space needed; the last complete checkpoint is kept), 5 stopped by
SIGTERM/SIGINT after a checkpoint of its step (resumable with ``--resume DIR``), 6 not learning with
``--stop-if-not-learning``, 7 more undecodable training records than ``--max-bad-records-fraction`` and
``--max-bad-records`` allow. A second signal
ends the process at once, by that signal.
"""
import errno
import os
import signal
import sys

from ..data.bad_records import EXIT_BAD_RECORDS, TooManyBadRecords
from .preemption import EXIT_PREEMPTED, Preempted, StopNow
from .trainer import CheckpointNotSaved, NotLearning, TrainingDiverged

__all__ = ["run_training"]

_CODES = ((TrainingDiverged, 3, "error"), (TooManyBadRecords, EXIT_BAD_RECORDS, "error"), (NotLearning, 6, "error"),
          (CheckpointNotSaved, 4, "error"), ((ValueError, FileNotFoundError), 2, "error"),
          (Preempted, EXIT_PREEMPTED, "preempted"))


def run_training(train, *args):
    """``train(*args)``, then the exit code: 0, or the one of the failure it raised (message on stderr)."""
    try:
        train(*args)
    except StopNow as err:  # die of the signal, as without a handler (exit status 128 + its number)
        print(f"stopped: {err}; --resume DIR continues from the latest complete checkpoint", file=sys.stderr,
              flush=True)
        signal.signal(err.signum, signal.SIG_DFL)
        os.kill(os.getpid(), err.signum)
    except Exception as err:
        for kinds, code, word in _CODES:
            if isinstance(err, kinds):
                print(f"{word}: {err}", file=sys.stderr)
                return code
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):  # disk full outside a checkpoint
            print(f"error: {err}", file=sys.stderr)
            return 4
        raise
    return 0
