"""Split-attention convolution (ResNeSt, arXiv 2004.08955, section 3).

The radix splits are handled with ``split`` + ``add_n`` on 4-D tensors instead of a 5-D reshape and a ``sum`` over
the radix axis: on CPU the 5-D reduction dominates the block's time, the 4-D form does the same arithmetic.
Child names (``conv``, ``bn``, ``fc1``, ``bn1``, ``fc2``) match the official Gluon / GluonCV parameter files.
"""
from mxnet.gluon import nn

__all__ = ["SplitAttentionConv", "radix_softmax"]


def radix_softmax(F, logits, radix, cardinality):
    """rSoftMax: attention weights of shape (B, radix * C) ordered radix-major.

    ``fc2`` produces its channels cardinality-major (it is grouped by cardinality), the split convolution produces
    them radix-major, hence the swap of the two axes before the softmax over the radix axis. Radix 1 uses a sigmoid.
    """
    if radix == 1:
        return F.sigmoid(logits).reshape((0, -1))
    attn = logits.reshape((0, cardinality, radix, -1)).swapaxes(1, 2)
    return F.softmax(attn, axis=1).reshape((0, -1))


class SplitAttentionConv(nn.HybridBlock):
    """A grouped k x k convolution whose ``radix`` splits are mixed by channel attention.

    Parameters
    ----------
    channels : int       output channels C (each of the radix splits has C channels)
    kernel_size, strides, padding, dilation : as in ``nn.Conv2D``
    radix : int          number of splits R per cardinal group
    cardinality : int    number of cardinal groups K
    in_channels : int    input channels (0 to infer)
    reduction : int      attention bottleneck: ``inter = max(C * R // reduction, 32)``
    norm_layer, norm_kwargs : normalisation after the convolution and ``fc1``
    """

    def __init__(self, channels, kernel_size=3, strides=1, padding=1, dilation=1, radix=2, cardinality=1,
                 in_channels=0, reduction=4, norm_layer=nn.BatchNorm, norm_kwargs=None, **kwargs):
        super().__init__(**kwargs)
        norm_kwargs = norm_kwargs or {}
        if radix < 1 or cardinality < 1:
            raise ValueError(f"radix and cardinality must be >= 1, got radix={radix}, cardinality={cardinality}")
        if channels % cardinality:
            raise ValueError(f"channels={channels} is not divisible by cardinality={cardinality}")
        inter = max(channels * radix // reduction, 32)
        self.radix, self.cardinality, self.channels = radix, cardinality, channels
        with self.name_scope():
            self.conv = nn.Conv2D(channels * radix, kernel_size, strides, padding, dilation,
                                  groups=cardinality * radix, use_bias=False, in_channels=in_channels)
            self.bn = norm_layer(in_channels=channels * radix, **norm_kwargs)
            self.fc1 = nn.Conv2D(inter, 1, groups=cardinality, in_channels=channels)
            self.bn1 = norm_layer(in_channels=inter, **norm_kwargs)
            self.fc2 = nn.Conv2D(channels * radix, 1, groups=cardinality, in_channels=inter)

    def hybrid_forward(self, F, x):
        x = F.Activation(self.bn(self.conv(x)), act_type="relu")
        splits = F.split(x, num_outputs=self.radix, axis=1) if self.radix > 1 else [x]
        gap = F.add_n(*splits) if self.radix > 1 else x
        gap = F.Pooling(gap, kernel=(1, 1), pool_type="avg", global_pool=True)
        attn = self.fc2(F.Activation(self.bn1(self.fc1(gap)), act_type="relu"))
        attn = radix_softmax(F, attn, self.radix, self.cardinality)
        if self.radix == 1:
            return F.broadcast_mul(x, attn.reshape((0, 0, 1, 1)))
        weights = F.split(attn.reshape((0, self.radix, -1, 1, 1)), num_outputs=self.radix, axis=1,
                          squeeze_axis=True)
        return F.add_n(*[F.broadcast_mul(s, w) for s, w in zip(splits, weights)])

    def __repr__(self):
        return (f"{type(self).__name__}(channels={self.channels}, radix={self.radix}, "
                f"cardinality={self.cardinality}, conv={self.conv!r})")
