"""How the project's commands end: a known failure is one line on stderr, ``error: <message>``, and its exit code.

    from resnest_gluon.exits import run_script

    def run(argv=None):          # raises the library's errors; returns a report, or an exit code (an int)
        ...

    def main(argv=None):
        return run_script(run, argv)

    if __name__ == "__main__":
        sys.exit(main())

=====  ==========================================================================================================
code   meaning
=====  ==========================================================================================================
0      done
1      a bug: anything not below ends with Python's traceback, as usual
2      unusable arguments, input, file or model, named by the message: a ``ValueError`` (a wrong weights file, a
       model that does not fit, a damaged file, a flag out of range), a missing, unreadable or misplaced file
       (``FileNotFoundError``, ``FileExistsError``, ``PermissionError``, ``IsADirectoryError``,
       ``NotADirectoryError``), an optional package the arguments need (the project's ``ImportError`` saying what
       to install); argparse's errors too (:class:`ArgumentParser`: one line as well)
3      some inputs skipped, the others done (predict.py, detect.py, segment.py: the skipped files are listed);
       training: diverged (NaN/inf)
4      disk full (``OSError`` ENOSPC / EDQUOT): an output could not be written, the message names it
5      training: stopped by SIGTERM/SIGINT after a checkpoint (resumable)
6      training: not learning (``--stop-if-not-learning``)
7      training: too many undecodable records
8      pretrained weights unavailable (:class:`WeightsUnavailableError`): no network or an unreachable mirror, a
       download with the wrong SHA-1, no published weights for the name; the message says what to do
130    interrupted (Ctrl-C), as a shell reports SIGINT
=====  ==========================================================================================================

Training's own rows (3, 5, 6, 7) live with the trainer (``resnest_gluon.training.exits``); a caller adds its rows
with ``run_script(main, ..., failures=[(kind, code, word), ...])``, checked before :data:`KNOWN_FAILURES`. A row's
``kind`` is an exception class, a tuple of them or a predicate ``kind(err) -> bool``; ``word`` starts the line
(``error``, or e.g. ``preempted``). ``SystemExit`` passes through (``--help``, argparse, an explicit
``sys.exit``). A caller on the way up adds context to the line with :func:`add_note`. ``RESNEST_GLUON_TRACEBACK=1``
in the environment shows the traceback of known failures too.

Messages name files, records and flags, never object reprs: :func:`plain_reason` turns a library's error text (an
MXNet ``Check failed`` block, PIL's ``<_io.BytesIO object at 0x...>``) into a short reason to put after a name.

This module is the bottom layer of the package: it imports the standard library only.
"""
import argparse
import errno
import os
import re
import sys

__all__ = ["EXIT_OK", "EXIT_BUG", "EXIT_USAGE", "EXIT_SKIPPED", "EXIT_DISK_FULL", "EXIT_WEIGHTS_UNAVAILABLE",
           "EXIT_INTERRUPTED", "KNOWN_FAILURES", "ArgumentParser", "WeightsUnavailableError", "add_note",
           "exit_code_of", "is_disk_full", "one_line", "plain_reason", "report_skipped", "run_script"]

EXIT_OK = 0
EXIT_BUG = 1  # Python's own code for an uncaught exception
EXIT_USAGE = 2  # argparse's
EXIT_SKIPPED = 3
EXIT_DISK_FULL = 4
EXIT_WEIGHTS_UNAVAILABLE = 8
EXIT_INTERRUPTED = 130

TRACEBACK_ENV = "RESNEST_GLUON_TRACEBACK"


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights cannot be provided; the message says why and what to do about it (exit code 8).

    Raised by :mod:`resnest_gluon.store` (which exports it); a ``RuntimeError`` so existing handlers still catch it.
    """


def is_disk_full(err):
    """True for an ``OSError`` meaning no space (or quota) left."""
    return isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT)


def _project_import_error(err):
    """An ``ImportError`` the project raised to say which optional package to install (``name`` unset), not a
    broken import of a module (``ModuleNotFoundError`` / ``cannot import name``: a bug, shown with its traceback)."""
    return isinstance(err, ImportError) and getattr(err, "name", None) is None


# (kind, exit code, first word of the line), first match wins.
KNOWN_FAILURES = (
    (WeightsUnavailableError, EXIT_WEIGHTS_UNAVAILABLE, "error"),
    (is_disk_full, EXIT_DISK_FULL, "error"),
    ((ValueError, FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError, NotADirectoryError),
     EXIT_USAGE, "error"),
    (_project_import_error, EXIT_USAGE, "error"),
)

_OBJECT_REPR = re.compile(r"\s*<[\w.]+ object at 0x[0-9A-Fa-f]+>")
_LIBRARY_PREFIX = re.compile(r"^[A-Za-z_][\w.]*: ")  # MXNetError: / LocalFileSystem: ...


def plain_reason(text):
    """A library's error text as a short one-line reason: object reprs left out (``cannot identify image file
    <_io.BytesIO object at 0x7f..>`` -> ``cannot identify image file``); of an MXNet message (its C++ "Traceback" and
    ``File "...cc", line N``), the last line without its ``MXNetError:`` and ``Check failed: <expression>:``
    parts (``Invalid NDArray file format``)."""
    text = _OBJECT_REPR.sub("", str(text))
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return ""
    if lines[0].startswith("Traceback (most recent call last)"):  # MXNet's: the reason is the last line
        line = _LIBRARY_PREFIX.sub("", lines[-1])
        if line.startswith("Check failed:"):
            line = line.rsplit(": ", 1)[-1]
        return line.strip()
    return " ".join(lines)


def add_note(err, note):
    """``err.add_note(note)`` (Python >= 3.11, shown after the traceback) on any Python: context a caller adds to a
    failure on its way up (``(model.onnx left as it was)``); :func:`one_line` appends the notes to the message."""
    notes = getattr(err, "__notes__", None)
    if notes is None:
        notes = err.__notes__ = []
    notes.append(note)
    return err


def one_line(err):
    """``err``'s message (:func:`plain_reason`) and its notes (:func:`add_note`) on one line, or the exception's class
    name when it has no message."""
    parts = [plain_reason(err), *getattr(err, "__notes__", ())]
    text = " ".join(line.strip() for part in parts for line in part.splitlines() if line.strip())
    return text or type(err).__name__


def _matches(kind, err):
    if isinstance(kind, (type, tuple)):
        return isinstance(err, kind)
    return bool(kind(err))


def exit_code_of(err, failures=()):
    """``(code, word)`` of the first row of ``failures`` then :data:`KNOWN_FAILURES` that ``err`` matches, or None
    (a bug)."""
    for kind, code, word in (*failures, *KNOWN_FAILURES):
        if _matches(kind, err):
            return code, word
    return None


def run_script(main, *args, failures=()):
    """``main(*args)``, then the exit code: ``main``'s own when it returns an int, else 0; for a known failure (a
    row of ``failures``, then of :data:`KNOWN_FAILURES`) its code, after printing ``<word>: <message>`` as one line
    on stderr. Any other exception propagates with its traceback (a bug); ``SystemExit`` passes through."""
    try:
        result = main(*args)
    except KeyboardInterrupt:
        if os.environ.get(TRACEBACK_ENV):
            raise
        print("interrupted", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    except Exception as err:
        found = exit_code_of(err, failures)
        if found is None or os.environ.get(TRACEBACK_ENV):
            raise
        code, word = found
        sys.stdout.flush()
        print(f"{word}: {one_line(err)}", file=sys.stderr, flush=True)
        return code
    return result if isinstance(result, int) and not isinstance(result, bool) else EXIT_OK


def report_skipped(skipped, total, file=None):
    """Prints the inputs a command skipped (exit code 3) on stderr: ``skipped 1 of N files: <reason>`` on one line
    for one, else that header and one indented line each; ``skipped`` holds ``(path, reason)`` pairs, the path left out
    of the line when the reason names it already."""
    file = file or sys.stderr
    lines = [reason if path in reason else f"{path}: {reason}" for path, reason in skipped]
    if len(lines) == 1:
        print(f"skipped 1 of {total} files: {lines[0]}", file=file)
    elif lines:
        print(f"skipped {len(lines)} of {total} files:", file=file)
        for line in lines:
            print(f"  {line}", file=file)


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser whose usage errors are one line too: ``error: <what> (see <prog> --help)``, exit code 2
    (argparse prints the whole usage first)."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"error: {message} (see {self.prog} --help)\n")
