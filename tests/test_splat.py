"""Split-attention convolution against a direct NumPy transcription of the paper's formula."""
import os
import subprocess
import sys

import mxnet as mx
import numpy as np
import pytest

from resnest_gluon import SplitAttentionConv
from resnest_gluon.splat import set_fused_attention, set_inference_layout


def reference_splat(block, x):
    """The paper's block written with 5-D reshapes, from the block's own weights (NumPy, inference BN)."""
    def conv(layer, inp):
        return layer(mx.nd.array(inp)).asnumpy()

    def bn(layer, inp):
        g, b, m, v = (getattr(layer, n).data().asnumpy() for n in ("gamma", "beta", "running_mean", "running_var"))
        shape = (1, -1, 1, 1)
        return (inp - m.reshape(shape)) / np.sqrt(v.reshape(shape) + layer._kwargs["eps"]) * g.reshape(shape) \
            + b.reshape(shape)

    R, K, C = block.radix, block.cardinality, block.channels
    y = np.maximum(bn(block.bn, conv(block.conv, x)), 0)                    # (B, R*C, H, W), radix-major
    B, _, H, W = y.shape
    splits = y.reshape(B, R, C, H, W)
    gap = splits.sum(axis=1).mean(axis=(2, 3), keepdims=True)              # (B, C, 1, 1)
    a = conv(block.fc2, np.maximum(bn(block.bn1, conv(block.fc1, gap)), 0)).reshape(B, K, R, C // K)
    if R > 1:
        a = np.swapaxes(a, 1, 2)                                            # -> (B, R, K, C/K)
        a = np.exp(a - a.max(axis=1, keepdims=True))
        a = a / a.sum(axis=1, keepdims=True)
    else:
        a = 1 / (1 + np.exp(-a))
    a = a.reshape(B, R, C, 1, 1)
    return (a * splits).sum(axis=1)


@pytest.mark.parametrize("radix,cardinality", [(1, 1), (2, 1), (4, 1), (1, 4), (2, 2), (4, 2)])
@pytest.mark.parametrize("hybridize", [False, True])
@pytest.mark.parametrize("inference_layout", [False, True])
@pytest.mark.parametrize("fused", [False, True])
def test_split_attention_matches_formula(radix, cardinality, hybridize, inference_layout, fused, rng):
    block = SplitAttentionConv(channels=64, radix=radix, cardinality=cardinality, in_channels=32, strides=2)
    set_fused_attention(block, fused)
    assert block.fused_attention is fused
    block.initialize(mx.init.Xavier(magnitude=2))
    for name, p in block.collect_params().items():  # non-trivial BN so that a wrong channel order shows
        if name.endswith(("running_var", "gamma")):
            p.set_data(mx.nd.array(rng.uniform(0.5, 1.5, p.shape)))
        elif name.endswith(("running_mean", "beta", "bias")):
            p.set_data(mx.nd.array(rng.normal(0, 0.5, p.shape)))
    x = rng.normal(size=(2, 32, 9, 9)).astype("float32")
    set_inference_layout(block, inference_layout)
    assert block.inference_layout is inference_layout
    if hybridize:
        block.hybridize(static_alloc=True, static_shape=True)
    out = block(mx.nd.array(x)).asnumpy()
    assert out.shape == (2, 64, 5, 5)
    np.testing.assert_allclose(out, reference_splat(block, x), rtol=1e-4, atol=1e-5)


def test_attention_width_follows_spec():
    # inter = max(C * R // 4, 32)
    assert SplitAttentionConv(64, radix=2, in_channels=64).fc1._channels == 32
    assert SplitAttentionConv(640, radix=4, cardinality=2, in_channels=640).fc1._channels == 640
    assert SplitAttentionConv(512, radix=2, in_channels=512).fc1._channels == 256


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError, match="cardinality"):
        SplitAttentionConv(30, cardinality=4)
    with pytest.raises(ValueError, match="radix"):
        SplitAttentionConv(32, radix=0)


def test_both_layouts_give_the_same_gradients(rng):
    """The training layout (outer product) and the inference layout (broadcast_mul) differ only in speed."""
    from mxnet import autograd

    x = mx.nd.array(rng.normal(size=(2, 32, 9, 9)).astype("float32"))
    grads = []
    for inference_layout in (False, True):
        mx.random.seed(3)
        block = SplitAttentionConv(channels=64, radix=2, in_channels=32)
        block.initialize(mx.init.Xavier(magnitude=2))
        set_inference_layout(block, inference_layout)
        block.hybridize()
        with autograd.record(train_mode=False):  # BN on running statistics: no batch-of-2 noise in the gradients
            loss = (block(x) ** 2).sum()
        loss.backward()
        grads.append({k.split("_", 1)[1]: p.grad().asnumpy() for k, p in block.collect_params().items()
                      if p.grad_req != "null"})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        scale = np.abs(grads[0][name]).max()
        np.testing.assert_allclose(grads[0][name], grads[1][name], rtol=1e-4, atol=1e-5 * scale, err_msg=name)


GROUPED_BLOCK = """
import sys
import mxnet as mx
from mxnet import autograd
import resnest_gluon as rg
from resnest_gluon.resnest import Bottleneck
if sys.argv[2] == "splat20":  # resnest50_fast_4s2x40d, stage 2: 20 channels per group
    block, x = rg.SplitAttentionConv(160, radix=4, cardinality=2, in_channels=160), (2, 160, 8, 8)
elif sys.argv[2] == "bottleneck64":  # resnest50, stage 1
    block, x = Bottleneck(64, 256, radix=2), (2, 256, 16, 16)
else:  # its stage 3 bottleneck (1x1 conv, BN, ReLU, then the split conv with 40 channels per group)
    block, x = Bottleneck(256, 1024, radix=4, cardinality=2, bottleneck_width=40, avd_first=True), (2, 1024, 8, 8)
block.initialize()
x = mx.nd.random.uniform(shape=x)
if sys.argv[1] == "train":
    block.hybridize(static_alloc=True, static_shape=True)
    x.attach_grad()
    for _ in range(2):
        with autograd.record():
            y = block(x)
        y.backward()
        mx.nd.waitall()
else:
    block = rg.optimize(block, "float32", input_shape=x.shape)
    for _ in range(2):
        block(x).wait_to_read()
"""


@pytest.mark.parametrize("mode, block", [("train", "splat20"), ("infer", "splat20"), ("train", "bottleneck40"),
                                         ("train", "bottleneck64")])
def test_groups_of_20_or_40_channels_run_no_oneDNN_reference_kernel(mode, block):
    """oneDNN blocks such a grouped convolution's tensors by 4 or 8 channels, for which its batch norm and pooling have
    only reference kernels, several times slower than the convolution: with 20 channels per group on the output
    (the BN after it in training, the pooling in inference), with 20 or 40 in the gradient of its input (the BN
    before it, in the bottleneck). With the fused attention operator, the pooling's backward got a gradient buffer
    oneDNN has only a reference kernel for, at any channel count (resnest50's stage 1). The block reorders to plain
    NCHW there. Checked in oneDNN's own log."""
    env = {**os.environ, "DNNL_VERBOSE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", GROUPED_BLOCK, mode, block], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    ran = [ln for ln in proc.stdout.splitlines() if ln.startswith("dnnl_verbose,exec")]
    assert any(",convolution," in ln for ln in ran), "oneDNN ran no convolution (is MXNet built with oneDNN?)"
    slow = [ln for ln in ran if (",batch_normalization," in ln or ",pooling" in ln) and ("ref:" in ln or "_ref" in ln)]
    assert not slow, "\n".join(slow)
