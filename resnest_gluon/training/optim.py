"""Optimizer settings of the ResNeSt recipe: which parameters get weight decay, NAG/SGD options, DropBlock ramp."""
import re
from dataclasses import dataclass

__all__ = ["NO_WD_PATTERN", "apply_no_wd", "apply_classifier_lr_mult", "optimizer_params", "dropblock_prob_at",
           "REFERENCE_BATCH", "LearningRate", "learning_rate"]

# BN scale/shift and every bias: decaying them only fights the normalisation (Bag of Tricks, "no bias decay").
NO_WD_PATTERN = r".*(gamma|beta|bias)$"


def apply_no_wd(net):
    """Sets ``wd_mult = 0`` on BN gamma/beta and biases; returns the sorted names it changed."""
    changed = []
    for name, param in net.collect_params().items():
        if re.match(NO_WD_PATTERN, name) and param.grad_req != "null":
            param.wd_mult = 0.0
            changed.append(name)
    return sorted(changed)


def apply_classifier_lr_mult(net, mult):
    """Sets ``lr_mult`` of the classifier's weight and bias (``net.fc``); returns their names.

    Why: with few classes the classifier's gradient is large against its weights (at 10 classes ~2x per step, the
    body's layers 0.1-0.7x), so it sets the highest stable learning rate; a smaller rate for it alone lets the body
    learn faster (``--recipe small``)."""
    if mult < 0:
        raise ValueError(f"--classifier-lr-mult must be >= 0, got {mult}")
    names = []
    for name, param in net.fc.collect_params().items():
        param.lr_mult = mult
        names.append(name)
    return sorted(names)


def optimizer_params(optimizer, lr_scheduler, momentum=0.9, wd=1e-4, dtype="float32"):
    """Keyword arguments for the optimizer; float16 keeps float32 master weights (``multi_precision``)."""
    if optimizer not in ("nag", "sgd"):
        raise ValueError(f"optimizer must be 'nag' or 'sgd', got {optimizer!r}")
    params = {"learning_rate": lr_scheduler.base_lr, "lr_scheduler": lr_scheduler, "momentum": momentum, "wd": wd}
    if dtype == "float16":
        params["multi_precision"] = True
    return params


def dropblock_prob_at(epoch, num_epochs, final_prob):
    """DropBlock probability for ``epoch`` (0-based): ``final_prob * (epoch + 1) / num_epochs``, GluonCV's
    ``DropBlockScheduler(net, 0, final_prob, num_epochs)`` of the official recipe: regularisation grows as the
    network starts to fit, reaching ``final_prob`` in the last epoch."""
    if final_prob <= 0:
        return 0.0
    return final_prob * (epoch + 1) / num_epochs


# The official recipe's learning rate: 0.05 per worker for 128 images per worker (linear scaling rule, Goyal et al.)
REFERENCE_BATCH = 128
LINEAR_RULE = "linear"          # lr x workers x batch / reference batch
GIVEN_RULE = "given"            # --effective-lr: used as it is
PER_WORKER_RULE = "per-worker"  # lr x workers: what checkpoints from before the batch rule meant


@dataclass(frozen=True)
class LearningRate:
    """The learning rate the optimizer gets (``effective``, before the schedule) and how it came from the flags."""

    base: float
    batch_size: int
    world: int
    reference_batch: int
    rule: str
    effective: float

    def describe(self):
        """One line for the start of a run: base, batch, workers, effective lr."""
        if self.rule == GIVEN_RULE:
            return (f"lr {self.effective:g} (given with --effective-lr; {self.world} worker(s) x batch "
                    f"{self.batch_size})")
        if self.rule == PER_WORKER_RULE:
            return (f"lr {self.base:g} per worker x {self.world} worker(s) = {self.effective:g} (the resumed run's "
                    f"rule, from before the lr followed the batch)")
        return (f"lr {self.base:g} per {self.reference_batch} images per worker x batch {self.batch_size}/"
                f"{self.reference_batch} x {self.world} worker(s) = {self.effective:g}")


def learning_rate(base, batch_size, world, reference_batch=REFERENCE_BATCH, effective=None, rule=LINEAR_RULE):
    """The :class:`LearningRate` of a run: ``base`` means the lr of one worker at ``reference_batch`` images (the
    recipe's 0.05 at 128) and is scaled linearly to ``batch_size`` and ``world`` workers; ``effective`` (if given)
    is used as it is; ``rule=PER_WORKER_RULE`` reproduces runs saved before the batch rule (``base x world``)."""
    if effective is not None:
        if effective < 0:
            raise ValueError(f"--effective-lr must be >= 0, got {effective}")
        return LearningRate(base, batch_size, world, reference_batch, GIVEN_RULE, effective)
    if reference_batch < 1:
        raise ValueError(f"--lr-reference-batch must be >= 1, got {reference_batch}")
    scale = world if rule == PER_WORKER_RULE else world * batch_size / reference_batch
    return LearningRate(base, batch_size, world, reference_batch, rule, base * scale)
