"""Training metrics as JSON lines (one object per event: easy to tail, grep and load) plus a PNG of the curves."""
import json
import math
import os

from ..atomic import atomic_write

__all__ = ["MetricsLog", "read_log", "plot_curves"]


def _clean(value):
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/inf
    return value


class MetricsLog:
    """Appends ``{"event": ..., **fields}`` lines to ``path``; each line is flushed as it is written."""

    def __init__(self, path):
        self.path = path
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)

    def write(self, event, **fields):
        record = {"event": event, **{k: _clean(v) for k, v in fields.items()}}
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
        return record


def read_log(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


CLASSIFICATION_SCORES = (("train_acc", "train top-1"), ("val_top1", "val top-1"), ("val_top5", "val top-5"))


def plot_curves(log_path, png_path, scores=CLASSIFICATION_SCORES):
    """Loss and LR per step and the per-epoch ``scores`` (``(field, label)`` pairs: accuracy, mAP) into one PNG
    (written atomically)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_log(log_path)
    steps = [r for r in records if r["event"] == "step"]
    epochs = [r for r in records if r["event"] == "epoch"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    if steps:
        axes[0].plot([r["global_step"] for r in steps], [float(r["loss"]) for r in steps])
        axes[1].plot([r["global_step"] for r in steps], [r["lr"] for r in steps])
    axes[0].set(title="training loss", xlabel="update")
    axes[1].set(title="learning rate", xlabel="update")
    for key, label in scores:
        pts = [(r["epoch"], r[key]) for r in epochs if r.get(key) is not None]
        if pts:
            axes[2].plot(*zip(*pts), marker="o", label=label)
    axes[2].set(title="scores", xlabel="epoch")
    axes[2].legend(loc="lower right")
    fig.tight_layout()
    atomic_write(png_path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return png_path
