"""Write a group of files so that readers see either all the old versions or all the new ones.

A pack writes ``.rec`` and ``.idx`` together; an interrupted or failed run must never leave a half-written
``.rec`` under the final name, nor a new ``.rec`` beside an old ``.idx``.
"""
import contextlib
import os
import tempfile

from resnest_gluon.atomic import as_disk_full, check_not_full, fsync_path


def _remove(path):
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _backup(path):
    """Hard-links an existing ``path`` aside (cheap, no copy) so a failed commit can put it back."""
    if not os.path.exists(path):
        return None
    backup = "%s.bak-%d" % (path, os.getpid())
    _remove(backup)
    try:
        os.link(path, backup)
    except OSError:  # filesystem without hard links: commit without rollback
        return None
    return backup


def _commit(pairs):
    """Renames every temp file onto its final name; on failure restores the finals already replaced."""
    backups = [(final, _backup(final)) for _, final in pairs]
    done = []
    try:
        for tmp, final in pairs:
            os.replace(tmp, final)
            done.append(final)
    except BaseException:
        for final, backup in backups:
            if final in done:
                if backup:
                    os.replace(backup, final)
                else:
                    _remove(final)
        raise
    finally:
        for _, backup in backups:
            if backup:
                _remove(backup)


@contextlib.contextmanager
def atomic_files(*finals):
    """Yields temp paths (same directory as each final path); renames them onto ``finals`` only on success.

    On any exception (including KeyboardInterrupt) the temp files are deleted and the finals are untouched; a full
    disk raises ``resnest_gluon.atomic.DiskFullError`` naming the files and the space already written.
    """
    temps = []
    try:
        for final in finals:
            directory = os.path.dirname(os.path.abspath(final))
            os.makedirs(directory, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=os.path.basename(final) + ".", suffix=".partial", dir=directory)
            os.close(fd)
            temps.append(tmp)
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; datasets are usually shared
        yield list(temps)
        for tmp in temps:
            fsync_path(tmp)
        check_not_full(" + ".join(finals), temps)
        _commit(list(zip(temps, finals)))
    except BaseException as err:
        full = as_disk_full(err, " + ".join(finals), temps)
        if full is not None:
            raise full from err
        raise
    finally:
        for tmp in temps:
            _remove(tmp)
