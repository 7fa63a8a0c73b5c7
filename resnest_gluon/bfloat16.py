"""bfloat16 inference on CPU: MXNet AMP's conversion, with oneDNN fusion and bfloat16 weights.

The convolutions, dense layers, pooling and the layout operators listed in :data:`BF16_SAFE_OPS` run in bfloat16;
the split-attention tail (the fused operator of :mod:`resnest_gluon.attention_op`, which the block casts to float32
itself, or ``broadcast_mul``, ``slice_axis``, ``add_n``) and the small reductions (softmax, sum) run in float32
between two casts. That is measured, not cautious: MXNet 1.9's bfloat16 ``broadcast_mul`` is a scalar kernel that
took twice as long as all the (AMX) convolutions of ResNeSt-50 together, while a cast is one oneDNN reorder
(README, "Performance"). The weights are stored in bfloat16 (``cast_optional_params``), and oneDNN fusion
(convolution + BatchNorm + ReLU + residual add) runs on the converted graph.

Grouped convolutions are regrouped first (:func:`merge_conv_groups`): oneDNN 2.4 has AMX kernels only for
convolutions whose input channels per group are a multiple of 32, and runs the others on AVX-512 at a tenth of the
speed, slower than float32. Merging neighbouring groups into one with block-diagonal weights computes the same
numbers with more (zero) multiplications but on AMX.
"""
import json
import warnings

import mxnet as mx
import numpy as np

__all__ = ["AMX_CHANNEL_MULTIPLE", "BF16_SAFE_OPS", "merge_conv_groups", "to_bfloat16"]

# Input channels per group that oneDNN 2.4's bfloat16 AMX convolutions need (measured: 32, 64, 160, 256 run on AMX;
# 10, 20, 40, 80 on AVX-512).
AMX_CHANNEL_MULTIPLE = 32

# Layout operators that AMP would run in float32 although MXNet's CPU kernels take bfloat16 at full speed.
# (Pooling, Activation, BatchNorm, Concat already follow their input; add_n, elemwise_add and elemwise_mul take the
# widest of their inputs.) Not here, because their bfloat16 kernels are slow: broadcast_mul, slice_axis.
BF16_SAFE_OPS = ("SliceChannel", "split", "Reshape", "Flatten")


def _merged_group_count(groups, in_per_group, multiple):
    """The most groups (a divisor of ``groups``) whose input channels per group are a multiple of ``multiple``."""
    for merge in range(1, groups + 1):
        if groups % merge == 0 and (in_per_group * merge) % multiple == 0:
            return groups // merge
    return groups


def _block_diagonal(weight, groups, new_groups):
    """Grouped-convolution weights ``(out, in/groups, kh, kw)`` as the weights of ``new_groups`` groups."""
    merge = groups // new_groups
    out_per_group, in_per_group = weight.shape[0] // groups, weight.shape[1]
    merged = np.zeros((weight.shape[0], in_per_group * merge) + weight.shape[2:], dtype=weight.dtype)
    for group in range(groups):
        rows = slice(group * out_per_group, (group + 1) * out_per_group)
        cols = slice((group % merge) * in_per_group, (group % merge + 1) * in_per_group)
        merged[rows, cols] = weight[rows]
    return merged


def merge_conv_groups(net, ctx, multiple=AMX_CHANNEL_MULTIPLE):
    """A ``SymbolBlock`` computing what the HybridBlock ``net`` computes, with its grouped convolutions regrouped so
    that their input channels per group are a multiple of ``multiple`` where the group count allows (neighbouring
    groups merged, block-diagonal weights); returns ``(block, number of convolutions regrouped)``.
    ``net`` itself is not changed. Its parameters must be initialised on ``ctx``.
    """
    data = mx.sym.var("data")
    out = net(data)
    sym = mx.sym.Group(list(out)) if isinstance(out, (list, tuple)) else out
    params = {name: p.data(ctx) for name, p in net.collect_params().items()}
    graph = json.loads(sym.tojson(remove_amp_cast=False))  # keep the blocks' casts
    regrouped = 0
    for node in graph["nodes"]:
        groups = int(node.get("attrs", {}).get("num_group", 1))
        if node["op"] != "Convolution" or groups == 1:
            continue
        weight_name = graph["nodes"][node["inputs"][1][0]]["name"]
        weight = params[weight_name]
        new_groups = _merged_group_count(groups, weight.shape[1], multiple)
        if new_groups != groups:
            node["attrs"]["num_group"] = str(new_groups)
            params[weight_name] = mx.nd.array(_block_diagonal(weight.asnumpy(), groups, new_groups), ctx=ctx,
                                              dtype=weight.dtype)
            regrouped += 1
    with warnings.catch_warnings():  # the SymbolBlock cannot type its weights before they are loaded: harmless
        warnings.filterwarnings("ignore", message="Cannot decide type")
        block = mx.gluon.SymbolBlock(mx.sym.load_json(json.dumps(graph)), data)
    block.collect_params().load_dict(params, ctx=ctx)
    return block, regrouped


def to_bfloat16(net, input_shape, ctx, fuse=True):
    """A bfloat16 ``SymbolBlock`` of the float32 HybridBlock ``net`` (traced once with ``input_shape`` on ``ctx``).

    It takes float32 inputs and returns bfloat16 outputs (``.astype('float32')`` to read them).
    """
    from mxnet.contrib import amp
    from mxnet.contrib.amp.lists import symbol_bf16 as lists

    x = mx.nd.zeros(input_shape, ctx=ctx)
    net, _ = merge_conv_groups(net, ctx)
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
