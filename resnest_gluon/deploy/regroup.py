"""Grouped convolutions regrouped for Intel AMX: same numbers; in bfloat16 and int8 the affected ones run 2-5x faster.

oneDNN 2.4 (MXNet 1.9) has AMX kernels only for convolutions whose input channels per group are a multiple of 32
in bfloat16 and of 4 in int8; it runs the others on AVX-512 at a tenth of the speed (resnest50d_4s2x40d has 10, 20,
40 and 80; three of those four convolutions ran slower in bfloat16 than in float32). Merging neighbouring groups with
block-diagonal weights does more multiplications, by zeros, but on AMX: 4s2x40d at batch 16 went from 1190 to
819 ms of convolutions per batch in bfloat16 and from 505 to 370 ms of oneDNN time in int8 (docs/performance.md).
float32, and any CPU where AMX is not enabled, are left alone: there the extra multiplications only cost time.
"""
import json
import warnings

import mxnet as mx
import numpy as np

from .amx import amx_enabled

__all__ = ["AMX_CHANNEL_MULTIPLE", "amx_groups", "merge_conv_groups"]

# Input channels per group that oneDNN 2.4's AMX convolutions need (measured with DNNL_VERBOSE on resnest50d_4s2x40d:
# bfloat16 ran 32, 64, 160, 256 on AMX and 10, 20, 40, 80 on AVX-512; int8 ran 20 and up on AMX and 10 on AVX-512).
AMX_CHANNEL_MULTIPLE = {"bfloat16": 32, "int8": 4}


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


def merge_conv_groups(net, ctx, multiple):
    """A ``SymbolBlock`` computing what the HybridBlock ``net`` computes, with its grouped convolutions regrouped so
    that their input channels per group are a multiple of ``multiple`` where the group count allows (neighbouring
    groups merged, block-diagonal weights); returns ``(block, number of convolutions regrouped)``.
    ``net`` itself is not changed. Its parameters must be initialised on ``ctx`` (call it once for deferred ones).
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
        weight_node = graph["nodes"][node["inputs"][1][0]]
        if weight_node["op"] != "null" or weight_node["name"] not in params:  # a computed weight: left as it is
            continue
        weight = params[weight_node["name"]]
        new_groups = _merged_group_count(groups, weight.shape[1], multiple)
        if new_groups != groups:
            node["attrs"]["num_group"] = str(new_groups)
            merged = _block_diagonal(weight.asnumpy(), groups, new_groups)
            params[weight_node["name"]] = mx.nd.array(merged, ctx=ctx, dtype=weight.dtype)
            weight_node.get("attrs", {}).pop("__shape__", None)  # Gluon's recorded shape: now inferred
            regrouped += 1
    with warnings.catch_warnings():  # the SymbolBlock cannot type its weights before they are loaded: harmless
        warnings.filterwarnings("ignore", message="Cannot decide type")
        block = mx.gluon.SymbolBlock(mx.sym.load_json(json.dumps(graph)), data)
    block.collect_params().load_dict(params, ctx=ctx)
    return block, regrouped


def amx_groups(net, ctx, dtype):
    """:func:`merge_conv_groups` with the channel multiple AMX needs in ``dtype`` (``'bfloat16'`` or ``'int8'``);
    ``(net, 0)`` unchanged when AMX is not enabled (:func:`~resnest_gluon.deploy.amx.enable_amx`), since without AMX the
    merged groups only add multiplications."""
    if not amx_enabled():
        return net, 0
    return merge_conv_groups(net, ctx, AMX_CHANNEL_MULTIPLE[dtype])
