"""Says when a run is not learning, instead of writing checkpoints and curves of a network stuck at chance.

After warm-up, three signs are checked once per epoch (the same numbers on every rank, so all ranks agree):

* ``loss_rising``: the epoch's training loss is well above the first epoch's (``rise`` times it): the learning rate
  is too high for this batch, typically;
* ``loss_flat``: no new best training loss (by ``min_gain``) for ``patience`` epochs;
* ``val_chance``: validation top-1 within two standard errors of guessing (``1 / classes``; classifiers only).

Each sign is reported once, with the likely causes; :class:`NotLearning` is what a run that asked to stop raises.
"""
import math
from dataclasses import asdict, dataclass

__all__ = ["Finding", "LearningWatch", "NotLearning"]

_CAUSES = ("the learning rate for this batch size (effective lr {lr:g}; try a smaller --lr, or --effective-lr)",
           "augmentation too strong for this data (--min-random-area larger, --no-auto-aug, --no-mixup, "
           "--dropblock-prob 0)")


class NotLearning(RuntimeError):
    """The run showed a sign of not learning and ``--stop-if-not-learning`` was given."""


@dataclass(frozen=True)
class Finding:
    kind: str
    epoch: int
    message: str

    def to_dict(self):
        return asdict(self)


class LearningWatch:
    """``findings = watch.update(epoch, loss, val_top1, val_images)`` after each epoch (1-based epochs)."""

    def __init__(self, num_classes, warmup_epochs, num_epochs, effective_lr, rise=1.25, min_gain=0.005,
                 patience=None, causes=_CAUSES):
        self.chance = 1.0 / num_classes if num_classes else None  # None: no chance level (detection)
        self.causes = causes
        self.warmup, self.lr, self.rise, self.min_gain = warmup_epochs, effective_lr, rise, min_gain
        self.patience = patience or max(3, num_epochs // 10)
        self.start = self.best = None
        self.best_epoch = 0
        self.findings = []

    def update(self, epoch, loss, val_top1=None, val_images=None):
        """The findings new at this epoch (each kind at most once per run)."""
        new = []
        if self.start is None:
            self.start = loss
        if self.best is None or loss < self.best * (1 - self.min_gain):
            self.best, self.best_epoch = loss, epoch
        if epoch > self.warmup and math.isfinite(loss):
            if loss > self.rise * self.start:
                new.append(("loss_rising", f"the training loss rose to {loss:.4g}, {loss / self.start:.2f}x the "
                                           f"first epoch's {self.start:.4g}"))
            if epoch - max(self.best_epoch, self.warmup) >= self.patience:
                new.append(("loss_flat", f"the training loss has not improved for {epoch - self.best_epoch} epochs "
                                         f"(best {self.best:.4g} at epoch {self.best_epoch})"))
            if self.chance is not None and val_top1 is not None and val_images:
                margin = 2 * math.sqrt(self.chance * (1 - self.chance) / val_images)
                if val_top1 <= self.chance + margin:
                    new.append(("val_chance", f"validation top-1 {val_top1:.2%} is at chance "
                                              f"(1/{round(1 / self.chance)} = {self.chance:.2%}, +-{margin:.2%} over "
                                              f"{val_images} images)"))
        seen = {f.kind for f in self.findings}
        found = [Finding(kind, epoch, f"not learning at epoch {epoch}: {what}. Likely causes: "
                                      + "; ".join(c.format(lr=self.lr) for c in self.causes))
                 for kind, what in new if kind not in seen]
        self.findings += found
        return found
