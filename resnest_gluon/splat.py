"""Split-attention convolution (ResNeSt, arXiv 2004.08955, section 3).

The block is laid out for MXNet's CPU kernels (measured on ResNeSt-50; docs/performance.md):
- the global pooling runs on all radix splits at once and the radix sum happens on the pooled (B, R*C) vector: a mean
  commutes with a sum, and this skips a full-size add (GluonCV reduces a 5-D tensor over the radix axis, which
  dominates its forward time);
- for training, the attention scales the channels through an outer product (``dot``) instead of ``broadcast_mul``:
  the backward pass to the attention weights is then a matrix-vector product instead of MXNet's generic broadcast
  reduction, which alone took a fifth of a training step; for inference (:func:`set_inference_layout`, called by
  :func:`resnest_gluon.optimize`) it is ``broadcast_mul``, which has bfloat16 kernels where ``dot`` has none;
- the radix splits are summed with ``slice_axis`` + ``add_n`` on 4-D tensors;
- on CPU, when the fused operator is built (:mod:`resnest_gluon.ops.attention_op`), the scaling and the radix sum
  (the three items above) are one operator, forward and backward (``fused_attention``, :func:`set_fused_attention`);
- a grouped convolution whose groups have a channel count that is not a multiple of 8 (``resnest50_fast_2s2x40d``
  and ``4s2x40d``) gets a plain-layout output (:func:`_plain_after_conv`): for 4k channels oneDNN makes it
  4-channel-blocked, for which its batch norm (training) and pooling (inference) have only reference kernels (over
  half of a resnest50d_4s2x40d training step, a third of its inference); in training, with 4k or 8k (not 16k)
  channels per group the gradient to its input is made plain as well (:func:`_plain_input_grad`), for the batch
  norm before it.
Child names (``conv``, ``bn``, ``fc1``, ``bn1``, ``fc2``) match the official Gluon / GluonCV parameter files.
"""
import mxnet as mx
from mxnet.autograd import pause as autograd_pause
from mxnet.gluon import nn

from .ops import attention_op

__all__ = ["SplitAttentionConv", "radix_softmax", "scale_channels", "set_inference_layout", "set_fused_attention",
           "set_onnx_layout", "fused_attention_off_device"]


def radix_softmax(F, logits, radix, cardinality, transpose=False):
    """rSoftMax: attention weights of shape (B, radix * C) ordered radix-major.

    ``fc2`` produces its channels cardinality-major (it is grouped by cardinality), the split convolution produces
    them radix-major, hence the swap of the two axes before the softmax over the radix axis. Radix 1 uses a sigmoid.
    ``transpose``: the swap as a ``transpose`` (the ONNX layout: MXNet's exporter turns ``swapaxes`` into a Pad to
    8-D and a ScatterND chain).
    """
    if radix == 1:
        return F.sigmoid(logits).reshape((0, -1))
    attn = logits.reshape((0, cardinality, radix, -1))
    attn = F.transpose(attn, axes=(0, 2, 1, 3)) if transpose else attn.swapaxes(1, 2)
    return F.softmax(attn, axis=1).reshape((0, -1))


def scale_channels(F, x, scale, inference=False):
    """``x * scale[:, :, None, None]`` for ``x`` of shape (B, C, H, W) and ``scale`` of shape (B, C).

    Training layout: the broadcast is an outer product with a row of ones, so the gradient to ``scale`` is a ``dot``
    (a GEMV) rather than ``broadcast_mul``'s slow reduction; the forward pass costs the same. Inference layout:
    ``broadcast_mul`` (it keeps bfloat16 and int8 graphs free of float32 islands).
    """
    if inference:
        return F.broadcast_mul(x, scale.reshape((0, 0, 1, 1)))
    rows = x.reshape((-3, -1))                                         # (B*C, H*W)
    ones = F.ones_like(F.slice_axis(rows, axis=0, begin=0, end=1))     # (1, H*W), no gradient
    return (rows * F.dot(scale.reshape((-1, 1)), ones)).reshape_like(x)


def _plain_after_conv(channels_per_group):
    """Whether to reorder the grouped convolution's output to plain NCHW: before the batch norm in training, after
    the fused convolution + BN + ReLU in inference (a reshape to the same shape makes MXNet reorder).

    oneDNN gives a convolution whose groups have 4k (not 8k) input channels a 4-channel-blocked output, for which its
    batch norm and pooling have only reference kernels; other counts that are not multiples of 8 get plain NCHW
    already, where the reshape costs nothing. Measured on the 4s2x40d stage-2 convolution (20 channels per
    group, 16 x 28 x 28, one thread, forward + backward): 3.7 -> 0.7 s. Unknown channel counts (``in_channels=0``)
    are left alone.
    """
    return channels_per_group > 0 and channels_per_group % 8 != 0


def _plain_input_grad(channels_per_group):
    """Whether the convolution's input goes through a full-range ``slice_axis`` in training, so that the gradient
    to it comes out plain NCHW (the backward of ``slice_axis`` is MXNet's own kernel; a reshape's stays in oneDNN).

    With 4k or 8k (not 16k) channels per group oneDNN returns that gradient 4- or 8-channel-blocked, while the
    bottleneck's BN before the convolution holds its data 16-blocked: oneDNN's batch norm backward has only a
    reference kernel for the mismatch (~0.1 s per call on resnest50d_4s2x40d stage 3, 12 calls per step). MXNet
    reorders a plain gradient to the data's layout itself. Other counts (e.g. 10) are plain already.
    Measured on resnest50d_4s2x40d, training step at batch 16: 15.4 -> 12.4 CPU-s.
    """
    return channels_per_group > 0 and channels_per_group % 16 != 0 and channels_per_group % 4 == 0


def set_inference_layout(net, enabled=True, dtype="float32"):
    """Puts every split-attention block in ``net`` in its inference (or training) layout; same numbers either way.

    ``dtype`` is the precision the graph will be converted to. ``'int8'``: the quantized convolution and pooling
    keep oneDNN's layout better than a reorder between a dequantize and a quantize would (resnest50d_4s2x40d int8:
    23.5 vs 21.0 img/s at batch 16). ``'bfloat16'``: the fused operator's input is cast to float32 in the graph
    (AMP passes unknown operators bfloat16, which MXNet's operator-library API cannot hand over).
    Takes effect at the next ``hybridize()`` (which rebuilds the graph) or imperative call.
    """
    if dtype not in ("float32", "float16", "bfloat16", "int8"):
        raise ValueError(f"dtype must be float32, float16, bfloat16 or int8, got {dtype!r}")

    def put(block):
        if isinstance(block, SplitAttentionConv):
            block.inference_layout, block.inference_dtype = enabled, dtype

    net.apply(put)
    return net


def _onnx_radix_sum(F, x, weights, radix, channels, size):
    """``sum_r x_r * weights_r`` as the ONNX graph has it: one broadcast multiplication on a (B, R, C, H, W) view
    and a sum over the radix axis (``slice_axis`` + ``add_n`` become R Slice copies and a Sum). ``size``: the
    feature map's (H, W), so that the view's shape is a constant for the engines (MXNet's exporter turns a reshape
    that copies H and W into a chain of shape arithmetic)."""
    if radix == 1:
        return F.broadcast_mul(x, weights.reshape((0, 0, 1, 1)))
    splits = x.reshape((-1, radix, channels) + tuple(size))                  # (B, R, C, H, W)
    return F.sum(F.broadcast_mul(splits, weights.reshape((0, radix, channels, 1, 1))), axis=1)


def set_onnx_layout(net, input_size=None):
    """Puts every split-attention block in ``net`` in the layout :func:`resnest_gluon.deploy.export_onnx` traces
    for images of ``input_size`` x ``input_size`` (``None``: back to the default layout: training, the fused operator
    when it is built): the inference layout, MXNet's operators instead of the fused one, and operators that MXNet's
    exporter turns into plain ONNX (Transpose, Softmax, Mul, ReduceSum) with constant shapes. Same numbers. Runs
    ``net`` once on a zero batch to learn each block's feature-map size; takes effect at the next ``hybridize()`` or
    imperative call."""
    enabled = input_size is not None
    set_inference_layout(net, enabled)
    set_fused_attention(net, not enabled)
    blocks = []
    net.apply(lambda b: blocks.append(b) if isinstance(b, SplitAttentionConv) else None)
    for block in blocks:
        block.onnx_layout = None
    if enabled:
        sizes, hooks = {}, []
        for block in blocks:
            hooks.append(block.conv.register_forward_hook(
                lambda conv, inputs, output, block=block: sizes.__setitem__(block, output.shape[2:])))
        try:
            ctx = next(iter(net.collect_params().values())).list_ctx()[0]
            with autograd_pause():
                net(mx.nd.zeros((1, 3, input_size, input_size), ctx=ctx))
        finally:
            for hook in hooks:
                hook.detach()
        for block in blocks:
            block.onnx_layout = tuple(sizes[block])
    return net


def set_fused_attention(net, enabled=True):
    """Makes every split-attention block in ``net`` use the fused operator (when it is loaded) or MXNet's operators.

    Same numbers either way (float32 rounding aside); the fused operator runs on CPU only. Takes effect at the next
    ``hybridize()`` or imperative call. Turn it off before ``export()`` for a graph that loads without this package.
    """
    enabled = enabled and attention_op.load()

    def put(block):
        if isinstance(block, SplitAttentionConv):
            block.fused_attention = enabled

    net.apply(put)
    return net


def fused_attention_off_device(net, x):
    """Called by the networks' ``forward``: off a CPU, the fused operator (CPU only) is turned off and the cached
    graph dropped, so that ``net.collect_params().reset_ctx(mx.gpu())`` just works."""
    ctx = getattr(x, "context", None)
    if ctx is None or ctx.device_type in ("cpu", "cpu_pinned", "cpu_shared"):
        return
    blocks = []
    net.apply(blocks.append)
    fused = [b for b in blocks if isinstance(b, SplitAttentionConv) and b.fused_attention]
    if fused:
        for b in fused:
            b.fused_attention = False
        for b in blocks:
            if isinstance(b, nn.HybridBlock):
                b._clear_cached_op()


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
        self.inference_layout, self.inference_dtype = False, "float32"  # see set_inference_layout
        self.onnx_layout = None  # see set_onnx_layout: the feature map's (H, W) in that layout
        self.fused_attention = attention_op.load()  # built or loaded on first use; see set_fused_attention
        self._plain_after_conv = _plain_after_conv(in_channels // (cardinality * radix))
        self._plain_input_grad = _plain_input_grad(in_channels // (cardinality * radix))
        with self.name_scope():
            self.conv = nn.Conv2D(channels * radix, kernel_size, strides, padding, dilation,
                                  groups=cardinality * radix, use_bias=False, in_channels=in_channels)
            self.bn = norm_layer(in_channels=channels * radix, **norm_kwargs)
            self.fc1 = nn.Conv2D(inter, 1, groups=cardinality, in_channels=channels)
            self.bn1 = norm_layer(in_channels=inter, **norm_kwargs)
            self.fc2 = nn.Conv2D(channels * radix, 1, groups=cardinality, in_channels=inter)

    def hybrid_forward(self, F, x):
        if self._plain_input_grad and not self.inference_layout:  # training: the gradient of the input goes plain
            x = F.slice_axis(x, axis=1, begin=0, end=None)
        x = self.conv(x)
        if self._plain_after_conv and not self.inference_layout:  # training: before the batch norm
            x = x.reshape((0, 0, 0, 0))
        x = F.Activation(self.bn(x), act_type="relu")                       # (B, R*C, H, W), radix-major
        quantized = self.inference_layout and self.inference_dtype == "int8"
        if self._plain_after_conv and self.inference_layout and not quantized:  # after fused conv+BN+ReLU
            x = x.reshape((0, 0, 0, 0))
        pooled = x
        if self.fused_attention and not self.inference_layout:
            # Training: with the fused operator also reading x, oneDNN's pooling backward was handed a gradient
            # buffer in a layout it has only a reference kernel for (3.9 of 5 s of a resnest50 step); through a
            # full-range slice the pooling's gradient is plain NCHW.
            pooled = F.slice_axis(x, axis=1, begin=0, end=None)
        gap = F.Pooling(pooled, kernel=(1, 1), pool_type="avg", global_pool=True)
        if self.radix > 1:                                                   # sum of the splits' means
            gap = F.sum(gap.reshape((0, self.radix, -1)), axis=1).reshape((0, -1, 1, 1))
        attn = self.fc2(F.Activation(self.bn1(self.fc1(gap)), act_type="relu"))
        weights = radix_softmax(F, attn, self.radix, self.cardinality, transpose=self.onnx_layout is not None)
        if self.onnx_layout is not None:
            return _onnx_radix_sum(F, x, weights, self.radix, self.channels, self.onnx_layout)
        if self.fused_attention:
            if self.inference_layout and self.inference_dtype == "bfloat16":  # the operator takes float32 only
                x, weights = F.amp_cast(x, dtype="float32"), F.amp_cast(weights, dtype="float32")
            return getattr(F, attention_op.OP_NAME)(x, weights, radix=self.radix)
        out = scale_channels(F, x, weights, self.inference_layout)
        if self.radix == 1:
            return out
        c = self.channels
        return F.add_n(*[F.slice_axis(out, axis=1, begin=r * c, end=(r + 1) * c) for r in range(self.radix)])

    def forward(self, x, *args):
        fused_attention_off_device(self, x)
        return super().forward(x, *args)

    def __repr__(self):
        return (f"{type(self).__name__}(channels={self.channels}, radix={self.radix}, "
                f"cardinality={self.cardinality}, conv={self.conv!r})")
