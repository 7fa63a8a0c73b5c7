"""Learning-rate schedules stepped once per parameter update (not per epoch), with linear warmup.

They are MXNet's own ``mx.lr_scheduler`` classes; the optimizer owns them, so ``Trainer.save_states`` stores the
scheduler together with the update count and a resumed run continues the curve where it stopped.
"""
import mxnet as mx

__all__ = ["build_lr_scheduler", "LR_MODES"]

LR_MODES = ("cosine", "step", "poly")


def build_lr_scheduler(mode, base_lr, num_epochs, steps_per_epoch, warmup_epochs=0, warmup_lr=0.0,
                       lr_decay=0.1, lr_decay_epoch=(30, 60, 90), final_lr=0.0, poly_power=2):
    """A scheduler over ``num_epochs * steps_per_epoch`` updates; the first ``warmup_epochs`` ramp linearly from
    ``warmup_lr`` to ``base_lr``. ``step`` multiplies by ``lr_decay`` at each epoch of ``lr_decay_epoch``."""
    if mode not in LR_MODES:
        raise ValueError(f"lr_mode must be one of {LR_MODES}, got {mode!r}")
    if steps_per_epoch < 1 or num_epochs < 1:
        raise ValueError(f"need num_epochs >= 1 and steps_per_epoch >= 1, got {num_epochs}, {steps_per_epoch}")
    if warmup_epochs < 0 or warmup_epochs >= num_epochs:
        raise ValueError(f"warmup_epochs must be in [0, num_epochs={num_epochs}), got {warmup_epochs}")
    total = int(num_epochs * steps_per_epoch)
    warmup = int(warmup_epochs * steps_per_epoch)
    common = dict(base_lr=base_lr, warmup_steps=warmup, warmup_begin_lr=warmup_lr)
    if mode == "cosine":
        return mx.lr_scheduler.CosineScheduler(max_update=total, final_lr=final_lr, **common)
    if mode == "poly":
        return mx.lr_scheduler.PolyScheduler(max_update=total, pwr=poly_power, final_lr=final_lr, **common)
    steps = [int(e * steps_per_epoch) for e in sorted(lr_decay_epoch) if 0 < e < num_epochs]
    steps = [s for s in steps if s > warmup]
    if not steps:  # MultiFactorScheduler needs at least one step: decay never happens within the run
        steps = [total + 1]
    return mx.lr_scheduler.MultiFactorScheduler(step=steps, factor=lr_decay, **common)
