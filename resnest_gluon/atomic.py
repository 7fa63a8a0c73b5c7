"""Atomic file writes: a file appears under its final name complete or not at all.

The content is written to a unique temporary name in the same folder (so the rename cannot cross filesystems),
flushed to disk, then moved onto the final name with ``os.replace``; a reader sees the old file or the new one.
On any exception (KeyboardInterrupt included) the temporary file is removed and the final name is untouched.
A full disk (or quota) becomes a :class:`DiskFullError` naming the final path and the space it needed.
"""
import contextlib
import errno
import json
import os
import uuid

from .exits import add_note

__all__ = ["atomic_path", "atomic_write", "write_json", "fsync_path", "DiskFullError", "as_disk_full", "check_not_full",
           "free_bytes"]

_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# MXNet's C++ writers (``save_parameters``, RecordIO) lose errno ("FileStream.Write incomplete"), and when the disk
# fills during their last buffered bytes they drop them silently (measured on a full tmpfs: a cut file, no error).
# So a writer failure, or a finished write, that leaves less than this free on the filesystem counts as disk full.
FULL_MARGIN = 1 << 20


class DiskFullError(OSError):
    """No space left (or quota exceeded) while writing ``path``; the previous file under that name is untouched."""

    def __init__(self, path, needed, free, mount):
        super().__init__(errno.ENOSPC, f"no space left on device writing {path}: needed about "
                                       f"{_mb(needed)} MB, {_mb(free)} MB free on {mount}")
        self.path, self.needed, self.free, self.mount = path, needed, free, mount

    def __str__(self):
        return self.strerror


def _mb(n):
    return f"{n / 1e6:.1f}" if n < 1e8 else f"{n / 1e6:.0f}"


def free_bytes(path):
    """Bytes this process may still write on ``path``'s filesystem (root may use the reserved blocks)."""
    st = os.statvfs(path)
    return (st.f_bfree if os.geteuid() == 0 else st.f_bavail) * st.f_frsize


def _mount_point(path):
    path = os.path.abspath(path)
    while not os.path.ismount(path):
        path = os.path.dirname(path)
    return path


def as_disk_full(err, final_path, temp_paths, expected=None):
    """A :class:`DiskFullError` for ``err`` raised while writing ``temp_paths`` for ``final_path`` when the disk
    was full (ENOSPC/EDQUOT, or a non-OSError writer failure with under ``FULL_MARGIN`` free), else None.
    The space needed is ``expected`` or, when larger, the bytes already written to the temporary files."""
    if isinstance(err, DiskFullError):
        return None
    folder = os.path.dirname(os.path.abspath(temp_paths[0] if temp_paths else final_path))
    try:
        free = free_bytes(folder)
    except OSError:
        return None
    if isinstance(err, OSError) and err.errno in _FULL_ERRNOS or (
            isinstance(err, Exception) and not isinstance(err, OSError) and free < FULL_MARGIN):
        written = sum(os.path.getsize(t) for t in temp_paths if os.path.isfile(t))
        return DiskFullError(final_path, max(written, expected or 0), free, _mount_point(folder))
    return None


def check_not_full(final_path, temp_paths):
    """Raises :class:`DiskFullError` when a finished write left under ``FULL_MARGIN`` free: MXNet may have cut it."""
    folder = os.path.dirname(os.path.abspath(temp_paths[0]))
    free = free_bytes(folder)
    if free < FULL_MARGIN and os.statvfs(folder).f_blocks:  # some FUSE mounts report no size at all: not judged
        written = sum(os.path.getsize(t) for t in temp_paths if os.path.isfile(t))
        raise DiskFullError(final_path, written + FULL_MARGIN - free, free, _mount_point(folder))


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
        check_not_full(final_path, [tmp])
        os.replace(tmp, final_path)
    except BaseException as err:
        full = as_disk_full(err, final_path, [tmp])
        if full is not None:
            raise full from err
        if isinstance(err, OSError) and err.filename == tmp:  # the message names the file asked for, too
            add_note(err, f"(writing {final_path})")
        raise
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
