"""Atomic checkpoints and "latest complete checkpoint" resume.

A checkpoint of epoch E is three files: ``ckpt-E.params`` (network), ``ckpt-E.states`` (trainer: optimizer
momenta, update count and LR scheduler), and ``ckpt-E.json`` (epoch, seeds, scheduler position, file sizes).
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

_NAME = re.compile(r"ckpt-(\d+)\.json$")


def _write_json(path, obj):
    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=1, sort_keys=True)
    atomic_write(path, write)


def latest_checkpoint(directory):
    """The metadata dict (with absolute ``params``/``states`` paths) of the newest complete checkpoint, or None."""
    found = []
    for meta_path in glob.glob(os.path.join(directory, "ckpt-*.json")):
        m = _NAME.search(meta_path)
        if m:
            found.append((int(m.group(1)), meta_path))
    for _, meta_path in sorted(found, reverse=True):
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

    def save(self, epoch, net, trainer, **meta):
        """Checkpoint after ``epoch`` completed epochs; ``meta`` is stored in the JSON (must be JSON-serialisable)."""
        stem = os.path.join(self.directory, f"ckpt-{epoch:04d}")
        try:
            atomic_write(stem + ".params", net.save_parameters)
            atomic_write(stem + ".states", trainer.save_states)
            files = {k: (os.path.basename(stem + ext), os.path.getsize(stem + ext))
                     for k, ext in (("params", ".params"), ("states", ".states"))}
            _write_json(stem + ".json", {"epoch": epoch, "files": files, **meta})
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
        metas = sorted(glob.glob(os.path.join(self.directory, "ckpt-*.json")))
        for old in metas[:-self.keep]:
            stem = old[:-len(".json")]
            for ext in (".json", ".params", ".states"):  # JSON first: the rest is then no longer "complete"
                if os.path.exists(stem + ext):
                    os.remove(stem + ext)
