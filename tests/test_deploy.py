"""resnest_gluon.optimize: the one fast-inference preparation (hybridize, oneDNN fusion, float16 / bfloat16)."""
import mxnet as mx
import numpy as np
import pytest

from conftest import needs_bfloat16, randomize_bn
from resnest_gluon import get_model, optimize
from resnest_gluon.deploy.amx import amx_enabled, bfloat16_supported

CLASSES, SIZE = 10, 64


def _net():
    net = get_model("resnest14", classes=CLASSES)
    net.initialize(mx.init.Xavier(magnitude=3), ctx=mx.cpu())
    return randomize_bn(net, seed=2)


@pytest.fixture(scope="module")
def images():
    return mx.nd.array(np.random.RandomState(0).normal(0, 1, (8, 3, SIZE, SIZE)).astype(np.float32))


def test_float32_is_the_plain_network_hybridized(images):
    net = _net()
    ref = net(images).asnumpy()
    out = optimize(net, fuse=False)(images).asnumpy()
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


def test_float32_onednn_fusion_keeps_the_numbers_and_any_batch_size(images):
    net = _net()
    ref = net(images).asnumpy()
    before = {k: p.data().asnumpy().copy() for k, p in net._collect_params_with_prefix().items()}
    fused = optimize(net, input_shape=(8, 3, SIZE, SIZE))
    assert fused is net
    np.testing.assert_allclose(fused(images).asnumpy(), ref, rtol=0, atol=1e-4)
    np.testing.assert_allclose(fused(images[:3]).asnumpy(), ref[:3], rtol=0, atol=1e-4)  # another batch size
    for k, p in net._collect_params_with_prefix().items():  # BN folding happens inside the graph, not in place
        np.testing.assert_array_equal(p.data().asnumpy(), before[k])


@needs_bfloat16
def test_bfloat16_logits_are_close_to_float32(images):
    net = _net()
    ref = net(images).asnumpy()
    out = optimize(net, dtype="bfloat16", input_shape=(1, 3, SIZE, SIZE))(images).astype("float32").asnumpy()
    assert out.shape == ref.shape
    scale = np.abs(ref).max()
    assert np.abs(out - ref).max() < 0.05 * scale  # bfloat16 keeps ~3 significant digits (here ~0.6%)
    assert (out.argmax(axis=1) == ref.argmax(axis=1)).mean() >= 0.75


@pytest.mark.skipif(bfloat16_supported(), reason="this CPU has bfloat16 convolutions")
def test_bfloat16_without_avx512_is_a_clear_error():
    with pytest.raises(ValueError, match="bfloat16 needs a CPU with AVX-512"):
        optimize(_net(), dtype="bfloat16")


def test_float16_on_cpu_is_a_clear_error():
    with pytest.raises(ValueError, match="float16 needs a GPU"):
        optimize(_net(), dtype="float16", ctx=mx.cpu())


def test_unknown_dtype_is_an_error():
    with pytest.raises(ValueError, match="float64"):
        optimize(_net(), dtype="float64")


@needs_bfloat16
def test_bfloat16_of_a_regrouped_model_is_close_to_float32(images):
    net = get_model("resnest50d_4s2x40d", classes=CLASSES)
    net.initialize(mx.init.Xavier(magnitude=3), ctx=mx.cpu())
    randomize_bn(net, seed=4)
    ref = net(images).asnumpy()
    fast = optimize(net, dtype="bfloat16", input_shape=(1, 3, SIZE, SIZE))
    out = fast(images).astype("float32").asnumpy()
    assert np.abs(out - ref).max() < 0.05 * np.abs(ref).max()
    weights = {name.split("_", 1)[1]: p.data().shape for name, p in fast.collect_params().items()}
    in_per_group = 160 if amx_enabled() else 20  # with AMX: 8 groups merged into 1 (resnest_gluon.deploy.regroup)
    assert weights["layers2_bottleneck0_splitattentionconv0_conv0_weight"] == (640, in_per_group, 3, 3)
