"""Preemption: SIGTERM or SIGINT stops training at the next step boundary, with a checkpoint of that step.

Cluster schedulers send SIGTERM (a terminal sends SIGINT) some time before they kill a job. The first signal only
sets a flag. The training loop adds the flag to its per-step allreduce, so every rank sees the request after the
same step, also when only some ranks were signalled: a rank leaving its collectives alone would hang the others.
Rank 0 then writes a checkpoint of that position and every rank exits with :data:`EXIT_PREEMPTED`.

A second signal means "now": the handler raises :class:`StopNow` wherever the main thread is (Python runs handlers
between bytecodes, so a C call in progress ends first), ``finally`` clauses remove temporary files, and a
checkpoint being written is dropped (its JSON, written last, is what marks a checkpoint complete), so the previous
complete one stays the latest. An exception raised in a handler that runs inside a ``__del__`` (MXNet frees
arrays there) is printed and dropped by Python, so the loops also call :meth:`StopSignals.poll` once per step,
which raises it again. From then on the signals have their default action: a third one kills the process
even inside a long C call. The handlers are installed only inside ``with StopSignals()``; the previous ones come
back when it ends.
"""
import signal
import threading

__all__ = ["EXIT_PREEMPTED", "Preempted", "StopNow", "StopSignals"]

# The process exit code of a run that stopped on a signal and wrote a checkpoint of its position: resumable.
EXIT_PREEMPTED = 5


class Preempted(Exception):
    """Training stopped on SIGTERM/SIGINT after writing a checkpoint of its position; ``--resume`` continues it."""


class StopNow(KeyboardInterrupt):
    """A second SIGTERM/SIGINT: stop at once, without finishing a checkpoint being written. A KeyboardInterrupt,
    so that no ``except Exception`` swallows it; ``signum`` lets the script die of that signal afterwards."""

    def __init__(self, signum):
        self.signum = signum
        super().__init__(f"{signal.Signals(signum).name} received a second time: stopping at once")


class StopSignals:
    """``with StopSignals() as stop:`` -- ``stop.requested`` turns True at the first SIGTERM/SIGINT; the second
    raises :class:`StopNow`. Outside the main thread (where Python cannot install handlers) it does nothing, and
    the signals keep their usual effect."""

    def __init__(self, signals=(signal.SIGTERM, signal.SIGINT)):
        self.signals = tuple(signals)
        self.received = None  # number of the first signal
        self.forced = None  # number of the second one
        self._previous = {}

    @property
    def requested(self):
        return self.received is not None

    def poll(self):
        """Once per step: whether a stop was asked; raises :class:`StopNow` if a second signal came and its
        exception was lost (raised inside a ``__del__``)."""
        if self.forced is not None:
            raise StopNow(self.forced)
        return self.requested

    def _handle(self, signum, frame):
        if self.received is None:
            self.received = signum
            return
        for s in self.signals:  # any further signal: the default action, at once
            signal.signal(s, signal.SIG_DFL)
        self.forced = signum
        raise StopNow(signum)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for s in self.signals:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc):
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()
        return False
