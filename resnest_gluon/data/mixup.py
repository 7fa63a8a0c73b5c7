"""Mixup and label smoothing as one batch-level step, for either training path.

The result feeds ``gluon.loss.SoftmaxCrossEntropyLoss(sparse_label=False)``: the targets are distributions.
"""
import mxnet as mx
import numpy as np

__all__ = ["smooth_targets", "MixupLabelSmoothing"]


def smooth_targets(label, num_classes, smoothing=0.1):
    """One-hot targets with ``1 - smoothing + smoothing / num_classes`` on the true class and
    ``smoothing / num_classes`` elsewhere (rows sum to 1)."""
    off = smoothing / num_classes
    return mx.nd.one_hot(label.astype("int32"), num_classes, on_value=1 - smoothing + off, off_value=off)


class MixupLabelSmoothing:
    """``mix(data, label, epoch) -> (data, targets)``.

    Mixes each sample with the batch reversed (``lam * x + (1 - lam) * x[::-1]``, ``lam ~ Beta(alpha, alpha)``,
    one ``lam`` per batch) and mixes the smoothed targets alike. Mixup is off (``lam = 1``) in the last
    ``off_epoch`` of ``num_epochs`` epochs, so the model ends on clean images; smoothing always applies.
    ``alpha=0`` disables mixup, ``smoothing=0`` gives plain one-hot targets.
    """

    def __init__(self, num_classes, alpha=0.2, smoothing=0.1, off_epoch=0, num_epochs=None, seed=None):
        if off_epoch and num_epochs is None:
            raise ValueError("off_epoch needs num_epochs (mixup stops at epoch num_epochs - off_epoch)")
        if not 0 <= smoothing < 1:
            raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
        self.num_classes, self.alpha, self.smoothing = int(num_classes), float(alpha), float(smoothing)
        self.off_epoch, self.num_epochs = int(off_epoch), num_epochs
        self.rng = np.random.RandomState(seed)
        self.last_lam = 1.0

    def active(self, epoch):
        """Whether mixup runs in ``epoch`` (0-based)."""
        if self.alpha <= 0:
            return False
        return self.num_epochs is None or epoch < self.num_epochs - self.off_epoch

    def skip(self, steps, epoch=0):
        """Advances ``rng`` as ``steps`` calls in ``epoch`` would (resuming inside an epoch: the next call then
        draws the ``lam`` an uninterrupted run draws at that step)."""
        if self.active(epoch):
            for _ in range(steps):
                self.rng.beta(self.alpha, self.alpha)

    def __call__(self, data, label, epoch=0):
        label = label.reshape((-1,))
        targets = smooth_targets(label, self.num_classes, self.smoothing).astype(data.dtype)
        if not self.active(epoch):
            self.last_lam = 1.0
            return data, targets
        lam = float(self.rng.beta(self.alpha, self.alpha))
        self.last_lam = lam
        flipped = mx.nd.flip(data, axis=0)
        data = lam * data + (1 - lam) * flipped
        targets = lam * targets + (1 - lam) * mx.nd.flip(targets, axis=0)
        return data, targets
