"""Atomic checkpoints and "latest complete checkpoint" resume.

A checkpoint after epoch E is three files: ``ckpt-E.params`` (network), ``ckpt-E.states`` (trainer: optimizer
momenta, update count and LR scheduler), and ``ckpt-E.json`` (epoch, seeds, scheduler position, file sizes).
A run stopped inside epoch E + 1 after K steps (preemption) writes ``ckpt-(E+1)-stepK`` (6 digits), whose JSON
says ``"epoch": E, "step": K``; it orders between ``ckpt-E`` and ``ckpt-(E+1)``, for resume and for pruning alike.
Each is written atomically (:mod:`resnest_gluon.atomic`); the JSON goes last, so a JSON whose listed files exist
with the listed sizes marks a complete checkpoint. A process killed while writing leaves at worst stray hidden
``.tmp`` files, never a checkpoint that looks complete but is not. A save that fails (a full disk:
:class:`resnest_gluon.atomic.DiskFullError`) removes its own files and leaves the previous checkpoint the latest.
"""
import glob
import json
import os
import re

from ..atomic import atomic_write

__all__ = ["CheckpointManager", "latest_checkpoint"]

_NAME = re.compile(r"ckpt-(\d+)(?:-step(\d+))?\.json$")


def _position(meta_path):
    """``(completed epochs, steps into the next epoch)`` from a checkpoint's JSON name, or None if not one."""
    m = _NAME.search(os.path.basename(meta_path))
    if m is None:
        return None
    epoch, step = int(m.group(1)), m.group(2)
    return (epoch, 0) if step is None else (epoch - 1, int(step))


def _checkpoints(directory):
    """The checkpoint JSON paths in ``directory``, oldest position first."""
    found = [(_position(p), p) for p in glob.glob(os.path.join(directory, "ckpt-*.json"))]
    return [p for pos, p in sorted(x for x in found if x[0] is not None)]


def _write_json(path, obj):
    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=1, sort_keys=True)
    atomic_write(path, write)


def latest_checkpoint(directory):
    """The metadata dict (with absolute ``params``/``states`` paths) of the newest complete checkpoint, or None."""
    for meta_path in reversed(_checkpoints(directory)):
        try:
            with open(meta_path) as f:
                meta = json.load(f)
        except (OSError, ValueError):
            continue
        files = meta.get("files", {})
        paths = {k: os.path.join(directory, name) for k, (name, _) in files.items()}
        if set(files) >= {"params", "states"} and all(
                os.path.isfile(paths[k]) and os.path.getsize(paths[k]) == size for k, (_, size) in files.items()):
            return {**meta, **paths, "meta_path": meta_path}
    return None


class CheckpointManager:
    """Writes checkpoints into ``directory`` (call on the writing rank only) and keeps the newest ``keep``."""

    def __init__(self, directory, keep=3):
        self.directory, self.keep = directory, keep
        os.makedirs(directory, exist_ok=True)

    def save(self, epoch, net, trainer, step=0, **meta):
        """Checkpoint after ``epoch`` completed epochs and ``step`` steps of the next one (preemption); ``meta`` is
        stored in the JSON (must be JSON-serialisable)."""
        name = f"ckpt-{epoch + 1:04d}-step{step:06d}" if step else f"ckpt-{epoch:04d}"
        stem = os.path.join(self.directory, name)
        try:
            atomic_write(stem + ".params", net.save_parameters)
            atomic_write(stem + ".states", trainer.save_states)
            files = {k: (os.path.basename(stem + ext), os.path.getsize(stem + ext))
                     for k, ext in (("params", ".params"), ("states", ".states"))}
            _write_json(stem + ".json", {"epoch": epoch, **({"step": step} if step else {}), "files": files, **meta})
        except BaseException:  # e.g. DiskFullError: drop this epoch's finished files (space), older ones stay
            for ext in (".json", ".params", ".states"):
                if os.path.exists(stem + ext):
                    os.remove(stem + ext)
            raise
        self._prune()
        return stem + ".json"

    def _prune(self):
        if not self.keep:
            return
        for old in _checkpoints(self.directory)[:-self.keep]:
            stem = old[:-len(".json")]
            for ext in (".json", ".params", ".states"):  # JSON first: the rest is then no longer "complete"
                if os.path.exists(stem + ext):
                    os.remove(stem + ext)
