"""Atomic file writes: a file appears under its final name complete or not at all.

The content is written to a unique temporary name in the same folder (so the rename cannot cross filesystems),
flushed to disk, then moved onto the final name with ``os.replace``; a reader sees the old file or the new one.
On any exception (KeyboardInterrupt included) the temporary file is removed and the final name is untouched.
"""
import contextlib
import json
import os
import uuid

__all__ = ["atomic_path", "atomic_write", "write_json", "fsync_path"]


def fsync_path(path):
    """Flushes a closed file's data to disk, so that a rename after it cannot expose an empty file after a crash."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(final_path):
    """Yields a temporary path to write; on leaving the block without an exception it becomes ``final_path``.

    The temporary name (hidden, unique per process and call) is not created here: the writer creates it, so the
    file gets the usual umask permissions. The folder of ``final_path`` is created if needed.
    """
    final_path = os.fspath(final_path)
    folder = os.path.dirname(os.path.abspath(final_path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(final_path)}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        yield tmp
        fsync_path(tmp)
        os.replace(tmp, final_path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)


def atomic_write(path, write):
    """Calls ``write(tmp_path)`` (e.g. ``net.save_parameters``) inside :func:`atomic_path` for ``path``."""
    with atomic_path(path) as tmp:
        write(tmp)


def write_json(path, obj, indent=2):
    """Writes ``obj`` as JSON to ``path`` atomically (results, summaries, reports)."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=indent)
