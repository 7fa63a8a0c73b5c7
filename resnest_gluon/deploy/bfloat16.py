"""bfloat16 inference on CPU: MXNet AMP's conversion, with oneDNN fusion and bfloat16 weights.

The convolutions, dense layers, pooling and the layout operators listed in :data:`BF16_SAFE_OPS` run in bfloat16;
the split-attention tail (the fused operator of :mod:`resnest_gluon.ops.attention_op`, which the block casts to
float32 itself, or ``broadcast_mul``, ``slice_axis``, ``add_n``) and the small reductions (softmax, sum) run in float32
between two casts. That is measured, not cautious: MXNet 1.9's bfloat16 ``broadcast_mul`` is a scalar kernel that
took twice as long as all the (AMX) convolutions of ResNeSt-50 together, while a cast is one oneDNN reorder
(docs/performance.md). The weights are stored in bfloat16 (``cast_optional_params``), and oneDNN fusion
(convolution + BatchNorm + ReLU + residual add) runs on the converted graph.

Grouped convolutions are regrouped first, so that they run on AMX (:func:`resnest_gluon.deploy.regroup.amx_groups`).
"""
import warnings

import mxnet as mx

from .regroup import amx_groups

__all__ = ["BF16_SAFE_OPS", "to_bfloat16"]

# Layout operators that AMP would run in float32 although MXNet's CPU kernels take bfloat16 at full speed.
# (Pooling, Activation, BatchNorm, Concat already follow their input; add_n, elemwise_add and elemwise_mul take the
# widest of their inputs.) Not here, because their bfloat16 kernels are slow: broadcast_mul, slice_axis.
BF16_SAFE_OPS = ("SliceChannel", "split", "Reshape", "Flatten")


def to_bfloat16(net, input_shape, ctx, fuse=True):
    """A bfloat16 ``SymbolBlock`` of the float32 HybridBlock ``net`` (traced once with ``input_shape`` on ``ctx``).

    It takes float32 inputs and returns bfloat16 outputs (``.astype('float32')`` to read them).
    """
    from mxnet.contrib import amp
    from mxnet.contrib.amp.lists import symbol_bf16 as lists

    x = mx.nd.zeros(input_shape, ctx=ctx)
    net(x)  # initialises deferred parameters before the regrouping reads them
    net, _ = amx_groups(net, ctx, "bfloat16")
    net.hybridize()
    net(x)  # convert_hybrid_block needs a traced graph
    target = list(lists.BF16_FUNCS) + [op for op in BF16_SAFE_OPS if op not in lists.BF16_FUNCS]
    fp32 = [op for op in lists.FP32_FUNCS if op not in BF16_SAFE_OPS]
    with warnings.catch_warnings():  # the SymbolBlock cannot type its weights before they are loaded: harmless
        warnings.filterwarnings("ignore", message="Cannot decide type")
        net = amp.convert_hybrid_block(net, target_dtype="bfloat16", target_dtype_ops=target, fp32_ops=fp32,
                                       ctx=ctx, cast_optional_params=True)
        if fuse:
            net.optimize_for(x, backend="MKLDNN", static_alloc=True, static_shape=True)
    net.hybridize(static_alloc=True, static_shape=True)
    return net
