"""Says when a run is not learning, instead of writing checkpoints and curves of a network stuck at chance.

After warm-up, these signs are checked once per epoch (the same numbers on every rank, so all ranks agree):

* ``loss_rising``: the epoch's training loss is well above the first epoch's (``rise`` times it): the learning rate
  is too high for this batch, typically;
* ``loss_flat``: no new best training loss (by ``min_gain``) for ``patience`` epochs;
* ``val_chance``: validation top-1 within two standard errors of guessing (``1 / classes``; classifiers);
* ``val_zero``: a validation score without a chance level (detection's VOC07 mAP) at zero, within
  :data:`ZERO_SCORE`: what a network that learned nothing scores (a detector none of whose detections of the right
  class overlaps an object).

The last two are one check: the task's validation score (:meth:`~.trainer.Task.watch_values`) against the floor of a
network that learned nothing, chance for a classifier (``num_classes``), zero for a task that names its score
(``score``) instead; a task that gives no validation value (segmentation: mIoU has no such floor, a network that
labels everything background scores above zero) gets the loss signs only.

Each sign is reported once, with the likely causes; :class:`NotLearning` is what a run that asked to stop raises.
"""
import math
from dataclasses import asdict, dataclass

__all__ = ["Finding", "LearningWatch", "NotLearning", "ZERO_SCORE"]

# a validation score without a chance level at or below this is zero (a detector that learned a little scores more:
# 0.014 after 400 images from scratch, docs/dense-prediction.md)
ZERO_SCORE = 1e-4

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
    """``findings = watch.update(epoch, loss, val_score, val_images)`` after each epoch (1-based epochs).

    ``num_classes``: a classifier's, whose validation score is top-1 with a chance level; None for a task without
    one. ``score``: the name of such a task's validation score (e.g. ``"VOC07 mAP"``), whose floor is zero; None:
    its validation is not watched. ``causes``: the likely causes a finding names, in the task's flags."""

    def __init__(self, num_classes, warmup_epochs, num_epochs, effective_lr, rise=1.25, min_gain=0.005,
                 patience=None, causes=_CAUSES, score=None):
        self.chance = 1.0 / num_classes if num_classes else None
        # what validation gives a network that learned nothing: chance, else zero for a named score, else unwatched
        self.floor = self.chance if self.chance is not None else (0.0 if score else None)
        self.score = score
        self.causes = causes
        self.warmup, self.lr, self.rise, self.min_gain = warmup_epochs, effective_lr, rise, min_gain
        self.patience = patience or max(3, num_epochs // 10)
        self.start = self.best = None
        self.best_epoch = 0
        self.findings = []

    def update(self, epoch, loss, val_score=None, val_images=None):
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
            if self.floor is not None and val_score is not None and val_images:
                found = self._at_floor(val_score, val_images)
                if found:
                    new.append(found)
        seen = {f.kind for f in self.findings}
        found = [Finding(kind, epoch, f"not learning at epoch {epoch}: {what}. Likely causes: "
                                      + "; ".join(c.format(lr=self.lr) for c in self.causes))
                 for kind, what in new if kind not in seen]
        self.findings += found
        return found

    def _at_floor(self, score, images):
        """``(kind, what)`` when the validation score over ``images`` images is what learning nothing gives: chance
        within two standard errors (a binomial's over that many images), or zero within :data:`ZERO_SCORE`."""
        if self.chance is not None:
            margin = 2 * math.sqrt(self.chance * (1 - self.chance) / images)
            if score <= self.chance + margin:
                return "val_chance", (f"validation top-1 {score:.2%} is at chance (1/{round(1 / self.chance)} = "
                                      f"{self.chance:.2%}, +-{margin:.2%} over {images} images)")
        elif score <= self.floor + ZERO_SCORE:
            return "val_zero", (f"validation {self.score} {score:.4g} is zero over {images} images (what a network "
                                f"that learned nothing scores)")
        return None
