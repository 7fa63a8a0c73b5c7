"""bfloat16 inference on CPU: MXNet AMP's conversion, widened so that the whole feature map path stays in bfloat16.

AMP's default lists run only convolutions and dense layers in bfloat16 and put a cast before and after every other
operator (the split-attention slices, products and sums, the pooling): on a ResNeSt that is hundreds of full-size
casts per image. Here the layout and elementwise operators listed in :data:`BF16_SAFE_OPS` (MXNet has bfloat16 CPU
kernels for them) run in bfloat16 too; reductions with few outputs (softmax, sum, dot) stay in float32. The weights
are stored in bfloat16 (``cast_optional_params``), and oneDNN fusion (convolution + BatchNorm + ReLU + residual add)
runs on the converted graph.
"""
import warnings

import mxnet as mx

__all__ = ["BF16_SAFE_OPS", "to_bfloat16"]

# Layout and elementwise operators that AMP would run in float32 (or in the widest input type) although MXNet's CPU
# kernels take bfloat16. (Pooling, Activation, BatchNorm, Concat already follow their input; add_n and
# elemwise_add, elemwise_mul stay in bfloat16 when all their inputs are: AMP allows no other choice for them.)
BF16_SAFE_OPS = ("slice_axis", "SliceChannel", "split", "broadcast_mul", "Reshape", "Flatten")


def to_bfloat16(net, input_shape, ctx, fuse=True):
    """A bfloat16 ``SymbolBlock`` of the float32 HybridBlock ``net`` (traced once with ``input_shape`` on ``ctx``).

    It takes float32 inputs and returns bfloat16 outputs (``.astype('float32')`` to read them).
    """
    from mxnet.contrib import amp
    from mxnet.contrib.amp.lists import symbol_bf16 as lists

    x = mx.nd.zeros(input_shape, ctx=ctx)
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
