"""resnest_gluon.deploy.regroup: grouped convolutions merged into AMX-sized groups compute the same numbers."""
import json

import mxnet as mx
import numpy as np
import pytest
from mxnet.gluon import nn

from conftest import needs_bfloat16, randomize_bn
from resnest_gluon import get_model, optimize
from resnest_gluon.deploy import regroup


@pytest.mark.parametrize("dtype, groups, in_per_group, expected", [
    ("bfloat16", 8, 10, 8),  # resnest50d_4s2x40d stage 1: no merge of its 8 groups reaches 32 channels
    ("bfloat16", 8, 20, 1),  # stage 2: 160 channels in one group
    ("bfloat16", 8, 40, 2),  # stage 3
    ("bfloat16", 8, 80, 4),  # stage 4
    ("bfloat16", 2, 64, 2),  # resnest50: already AMX-sized
    ("int8", 8, 10, 4),      # stage 1 in int8: pairs of groups
    ("int8", 8, 20, 8),
])
def test_groups_are_merged_until_amx_takes_them(dtype, groups, in_per_group, expected):
    assert regroup._merged_group_count(groups, in_per_group, regroup.AMX_CHANNEL_MULTIPLE[dtype]) == expected


def _conv_groups(block):
    nodes = json.loads(block(mx.sym.var("data")).tojson())["nodes"]
    return sorted({int(n["attrs"].get("num_group", 1)) for n in nodes if n["op"] == "Convolution"})


@pytest.mark.parametrize("dtype, regrouped, groups", [
    # the 3x3 split-attention convolutions of stages 2-4 and the two attention 1x1s of stage 2 (2 groups of 80)
    ("bfloat16", (4 + 6 + 3) + 4 * 2, [1, 2, 4, 8]),
    ("int8", 3, [1, 2, 4, 8]),  # the 3x3s of stage 1 (8 groups -> 4)
])
def test_the_regrouped_network_computes_the_same_numbers(dtype, regrouped, groups):
    net = get_model("resnest50d_4s2x40d", classes=10)
    net.initialize(mx.init.Xavier(magnitude=3), ctx=mx.cpu())
    randomize_bn(net, seed=3)
    x = mx.nd.array(np.random.RandomState(0).normal(0, 1, (2, 3, 64, 64)).astype(np.float32))
    before = {k: p.data().asnumpy().copy() for k, p in net._collect_params_with_prefix().items()}
    ref = net(x).asnumpy()
    block, count = regroup.merge_conv_groups(net, mx.cpu(), regroup.AMX_CHANNEL_MULTIPLE[dtype])
    assert count == regrouped
    assert _conv_groups(block) == groups
    np.testing.assert_allclose(block(x).asnumpy(), ref, rtol=0, atol=1e-4)
    block.hybridize()
    np.testing.assert_allclose(block(x).asnumpy(), ref, rtol=0, atol=1e-4)
    for k, p in net._collect_params_with_prefix().items():  # the network itself is unchanged
        np.testing.assert_array_equal(p.data().asnumpy(), before[k])


def test_a_network_without_grouped_convolutions_is_the_same_graph():
    net = get_model("resnest14d", classes=10)
    net.initialize(ctx=mx.cpu())
    block, count = regroup.merge_conv_groups(net, mx.cpu(), regroup.AMX_CHANNEL_MULTIPLE["bfloat16"])
    assert count == 0 and _conv_groups(block) == [1, 2]


def test_without_amx_nothing_is_regrouped(monkeypatch):
    net = get_model("resnest50d_4s2x40d", classes=10)
    net.initialize(ctx=mx.cpu())
    monkeypatch.setattr(regroup, "amx_enabled", lambda: False)
    assert regroup.amx_groups(net, mx.cpu(), "bfloat16") == (net, 0)  # merged groups would only cost time


@needs_bfloat16
def test_deferred_parameters_are_initialised_before_the_regrouping():
    net = nn.HybridSequential()
    net.add(nn.Conv2D(64, 3, padding=1, groups=8), nn.GlobalAvgPool2D(), nn.Dense(3))  # 8 channels per group
    net.initialize(mx.init.Xavier(magnitude=3))  # shapes unknown until the first call
    x = mx.nd.array(np.random.RandomState(1).normal(0, 1, (2, 64, 8, 8)).astype(np.float32))
    fast = optimize(net, "bfloat16", input_shape=(1, 64, 8, 8))
    out = fast(x).astype("float32").asnumpy()
    ref = net(x).asnumpy()
    assert np.abs(out - ref).max() < 0.05 * np.abs(ref).max()
