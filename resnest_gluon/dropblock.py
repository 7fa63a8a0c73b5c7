"""DropBlock (Ghiasi et al., 2018) that stays correct after ``hybridize()``.

The official ResNeSt and GluonCV DropBlock test ``autograd.is_training()`` in Python inside ``hybrid_forward``; a
hybridized graph freezes the answer of its first call, so the block keeps dropping at evaluation (or never drops in
training), and changing the probability means re-hybridizing. Here both are read at run time, inside the graph:

- the mode comes from a ``Dropout(p=0.5)`` on a ones tensor: at inference it is the identity (exactly 1); in training
  every output is 0 or 2, never 1. ``!= 1`` is therefore an exact, deterministic training-mode flag;
- the probability is a non-trainable parameter (``drop_prob``), set with :func:`set_drop_prob` between steps.
"""
from mxnet import initializer
from mxnet.gluon import nn

__all__ = ["DropBlock", "set_drop_prob", "get_drop_prob"]


class DropBlock(nn.HybridBlock):
    """Drops contiguous ``block_size`` x ``block_size`` regions of each channel map in training mode.

    The seed rate follows the paper: ``gamma = p / bs**2 * (H * W) / ((H - bs + 1) * (W - bs + 1))``, from the run-time
    shape; kept activations are rescaled per sample so that the expected sum is unchanged. Identity at inference.
    """

    def __init__(self, drop_prob=0.0, block_size=3, **kwargs):
        super().__init__(**kwargs)
        if block_size < 1 or block_size % 2 == 0:
            raise ValueError(f"DropBlock block_size must be odd and >= 1, got {block_size}")
        if not 0.0 <= drop_prob < 1.0:
            raise ValueError(f"DropBlock drop_prob must be in [0, 1), got {drop_prob}")
        self.block_size = block_size
        with self.name_scope():
            self.drop_prob = self.params.get("drop_prob", shape=(1,), grad_req="null",
                                             init=initializer.Constant(drop_prob), differentiable=False)

    def hybrid_forward(self, F, x, drop_prob):
        bs = self.block_size
        # 1 in training mode, 0 at inference, decided when the graph runs (see the module docstring)
        training = F.Dropout(F.ones_like(drop_prob), p=0.5) != 1
        hw = F.slice_axis(F.shape_array(x), axis=0, begin=2, end=4).astype("float32")
        valid = F.maximum(hw - (bs - 1), 1)
        gamma = drop_prob * training * (F.prod(hw) / F.prod(valid) / (bs * bs))
        seeds = F.broadcast_lesser(F.random.uniform_like(x), gamma.reshape((1, 1, 1, 1)))
        dropped = F.Pooling(seeds, kernel=(bs, bs), stride=(1, 1), pad=(bs // 2, bs // 2), pool_type="max")
        keep = 1 - dropped
        # per-sample rescale; exactly 1 when nothing is dropped (at inference every element is kept)
        kept = F.sum(keep, axis=(1, 2, 3), keepdims=True)
        total = F.sum(F.ones_like(keep), axis=(1, 2, 3), keepdims=True)
        return F.broadcast_mul(x * keep, total / F.maximum(kept, 1))

    def __repr__(self):
        return f"{type(self).__name__}(block_size={self.block_size})"


def set_drop_prob(net, prob):
    """Sets the drop probability of every DropBlock in ``net``; takes effect at the next call, hybridized or not."""
    if not 0.0 <= prob < 1.0:
        raise ValueError(f"drop probability must be in [0, 1), got {prob}")
    count = 0

    def _set(block):
        nonlocal count
        if isinstance(block, DropBlock):
            param = block.drop_prob
            if param._data is None:  # not initialised yet: becomes the initial value
                param.init = initializer.Constant(prob)
            else:
                param.set_data(param.data().ones_like() * prob)
            count += 1

    net.apply(_set)
    return count


def get_drop_prob(net):
    """The drop probabilities of the DropBlocks in ``net`` (a sorted list of distinct values)."""
    values = set()

    def _get(block):
        if isinstance(block, DropBlock) and block.drop_prob._data is not None:
            values.add(round(float(block.drop_prob.data().asscalar()), 7))

    net.apply(_get)
    return sorted(values)
