"""How the training scripts end: the project's runner (:mod:`resnest_gluon.exits`: each known failure one line on
stderr and its own exit code) with training's own rows.

0 done, 2 unusable arguments or data (named), 3 diverged (NaN/inf), 4 a checkpoint or log could not be written
(disk full: the message names the path and the space needed; the last complete checkpoint is kept), 5 stopped by
SIGTERM/SIGINT after a checkpoint of its step (resumable with ``--resume DIR``), 6 not learning with
``--stop-if-not-learning``, 7 more undecodable training records than ``--max-bad-records-fraction`` and
``--max-bad-records`` allow, 8 pretrained weights unavailable. A second signal ends the process at once, by that
signal.
"""
import os
import signal
import sys

from ..data.bad_records import EXIT_BAD_RECORDS, TooManyBadRecords
from ..exits import EXIT_DISK_FULL, run_script
from .preemption import EXIT_PREEMPTED, Preempted, StopNow
from .trainer import CheckpointNotSaved, NotLearning, TrainingDiverged

__all__ = ["run_training", "TRAINING_FAILURES", "EXIT_DIVERGED", "EXIT_NOT_LEARNING"]

EXIT_DIVERGED = 3
EXIT_NOT_LEARNING = 6
# checked before the project's own rows (resnest_gluon.exits.KNOWN_FAILURES)
TRAINING_FAILURES = ((TrainingDiverged, EXIT_DIVERGED, "error"), (TooManyBadRecords, EXIT_BAD_RECORDS, "error"),
                     (NotLearning, EXIT_NOT_LEARNING, "error"), (CheckpointNotSaved, EXIT_DISK_FULL, "error"),
                     (Preempted, EXIT_PREEMPTED, "preempted"))


class _SecondSignal(BaseException):
    """Carries a :class:`StopNow` past the runner (which reads a KeyboardInterrupt as Ctrl-C, exit 130)."""

    def __init__(self, stop):
        super().__init__(str(stop))
        self.signum = stop.signum


def _unless_second_signal(train, *args):
    try:
        return train(*args)
    except StopNow as stop:
        raise _SecondSignal(stop) from None


def run_training(train, *args):
    """``train(*args)``, then the exit code: 0, or the one of the failure it raised (one line on stderr). After a
    second SIGTERM/SIGINT the process dies of that signal, as without a handler (exit status 128 + its number)."""
    try:
        return run_script(_unless_second_signal, train, *args, failures=TRAINING_FAILURES)
    except _SecondSignal as err:
        print(f"stopped: {err}; --resume DIR continues from the latest complete checkpoint", file=sys.stderr,
              flush=True)
        signal.signal(err.signum, signal.SIG_DFL)
        os.kill(os.getpid(), err.signum)
