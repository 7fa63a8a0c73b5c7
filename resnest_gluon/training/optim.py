"""Optimizer settings of the ResNeSt recipe: which parameters get weight decay, NAG/SGD options, DropBlock ramp."""
import re

__all__ = ["NO_WD_PATTERN", "apply_no_wd", "optimizer_params", "dropblock_prob_at"]

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
