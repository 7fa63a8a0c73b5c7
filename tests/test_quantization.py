"""int8 (resnest_gluon.deploy.quantization) and bfloat16 (resnest_gluon.deploy.bfloat16) through deploy.optimize, against float32."""
import json
import os
import subprocess
import sys

import mxnet as mx
import numpy as np
import pytest

from conftest import needs_bfloat16, REPO, randomize_bn
from resnest_gluon import get_model, optimize
from resnest_gluon.deploy.amx import amx_enabled, amx_supported
from resnest_gluon.deploy.bfloat16 import BF16_SAFE_OPS
from resnest_gluon.deploy.quantization import calibration_batches, first_conv_name

CLASSES, SIZE = 10, 64


def _net():
    mx.random.seed(7)
    net = get_model("resnest14", classes=CLASSES)
    net.initialize(mx.init.Xavier(magnitude=3), ctx=mx.cpu())
    return randomize_bn(net, seed=2)


def _batches(n, seed, size=8):
    rng = np.random.RandomState(seed)
    return [mx.nd.array(rng.normal(0, 1, (size, 3, SIZE, SIZE)).astype(np.float32)) for _ in range(n)]


@pytest.fixture(scope="module")
def images():
    return _batches(1, seed=0, size=16)[0]  # held out: calibration uses other batches


def _relative_error(out, ref):
    """Logit error relative to the spread of the float32 logits (1 for a network that outputs noise or constants)."""
    return np.abs(out - ref).max() / (ref.max(axis=1) - ref.min(axis=1)).mean()


@pytest.mark.parametrize("calib_mode", ["naive", "entropy"])
def test_int8_agrees_with_float32_on_held_out_images(images, calib_mode):
    net = _net()
    ref = net(images).asnumpy()
    q = optimize(net, "int8", calib_data=_batches(2, seed=1, size=4), calib_mode=calib_mode)
    out = q(images).asnumpy()
    assert out.shape == ref.shape and out.dtype == np.float32
    assert (out.argmax(axis=1) == ref.argmax(axis=1)).mean() >= 0.8
    assert _relative_error(out, ref) < 0.5
    assert np.corrcoef(out.ravel(), ref.ravel())[0, 1] > 0.97
    np.testing.assert_allclose(q(images[:3]).asnumpy(), out[:3], rtol=0, atol=1e-5)  # another batch size


def test_int8_of_a_regrouped_model_agrees_with_float32(images):
    net = get_model("resnest50d_4s2x40d", classes=CLASSES)  # stage 1 runs in 4 groups instead of 8 (regroup)
    net.initialize(mx.init.Xavier(magnitude=3), ctx=mx.cpu())
    randomize_bn(net, seed=5)
    ref = net(images).asnumpy()
    q = optimize(net, "int8", calib_data=_batches(2, seed=1, size=4))
    out = q(images).asnumpy()
    assert _relative_error(out, ref) < 0.5
    weights = {name.split("_", 1)[1]: p.data().shape for name, p in q.collect_params().items()}
    in_per_group = 20 if amx_enabled() else 10  # with AMX: 8 groups merged into 4 (resnest_gluon.deploy.regroup)
    assert weights["layers1_bottleneck0_splitattentionconv0_conv0_weight"] == (320, in_per_group, 3, 3)
    assert np.corrcoef(out.ravel(), ref.ravel())[0, 1] > 0.97


def test_int8_graph_is_quantized_and_exclude_first_conv_keeps_it_float():
    def first_conv_attrs(q):
        nodes = json.loads(q._cached_graph[1].tojson())["nodes"]
        conv = next(n for n in nodes if n["op"] == "_sg_mkldnn_conv")
        return conv.get("attrs", {}), sum(n["op"] == "_sg_mkldnn_conv" and n.get("attrs", {}).get("quantized") ==
                                          "true" for n in nodes)

    calib = _batches(1, seed=1)
    q = optimize(_net(), "int8", calib_data=calib)
    q(calib[0])
    attrs, quantized = first_conv_attrs(q)
    assert attrs.get("quantized") == "true" and "min_calib_range" in attrs  # calibrated: no ranges at run time
    kept = optimize(_net(), "int8", calib_data=calib, exclude_first_conv=True)
    kept(calib[0])
    attrs_kept, quantized_kept = first_conv_attrs(kept)
    assert "quantized" not in attrs_kept and quantized_kept == quantized - 1


def test_first_conv_name_is_the_stem_conv():
    net = _net()
    net.hybridize()
    net(mx.nd.zeros((1, 3, SIZE, SIZE)))
    assert first_conv_name(net) == net.conv1[0].name + "_fwd"


def test_calibration_sources_ndarray_list_pairs_dataloader_dataiter():
    batches = _batches(4, seed=3, size=2)
    data = mx.nd.concat(*batches, dim=0)
    labels = mx.nd.zeros((8,))
    loader = mx.gluon.data.DataLoader(mx.gluon.data.ArrayDataset(data, labels), batch_size=2)
    for source in (batches, iter(batches), [(b, labels[:2]) for b in batches], loader,
                   mx.io.NDArrayIter(data, labels, batch_size=2)):
        got = calibration_batches(source, num_calib_batches=3)
        assert len(got) == 3
        for g, b in zip(got, batches):
            np.testing.assert_array_equal(g.asnumpy(), b.asnumpy())
    assert len(calibration_batches(batches[0])) == 1
    assert len(calibration_batches(batches)) == 4


@pytest.mark.parametrize("kwargs, message", [
    ({}, "int8 needs calibration data"),
    ({"calib_data": []}, "calib_data gave no batches"),
    ({"calib_data": 3}, "calib_data must be an NDArray batch or an iterable"),
    ({"calib_data": [mx.nd.zeros((3, SIZE, SIZE))]}, r"batch 0 has shape \(3, 64, 64\)"),
    ({"calib_data": [mx.nd.zeros((1, 3, SIZE, SIZE))], "calib_mode": "kl"}, "calib_mode must be one of naive, entropy"),
    ({"calib_data": [mx.nd.zeros((1, 3, SIZE, SIZE))], "num_calib_batches": 0}, "num_calib_batches must be >= 1"),
    ({"calib_data": [mx.nd.zeros((1, 3, SIZE, SIZE))], "ctx": mx.gpu(0)}, "int8 runs on CPU only"),
])
def test_calibration_errors_are_clear(kwargs, message):
    with pytest.raises(ValueError, match=message):
        optimize(_net(), "int8", **kwargs)


def test_calib_data_with_another_dtype_is_an_error():
    with pytest.raises(ValueError, match="calib_data is only used with dtype='int8'"):
        optimize(_net(), "bfloat16", calib_data=_batches(1, seed=1))


@needs_bfloat16
def test_bfloat16_keeps_the_feature_maps_in_bfloat16(images):
    net = _net()
    ref = net(images).asnumpy()
    b = optimize(net, "bfloat16", input_shape=(1, 3, SIZE, SIZE))
    out = b(images).astype("float32").asnumpy()
    assert (out.argmax(axis=1) == ref.argmax(axis=1)).mean() >= 0.9
    assert _relative_error(out, ref) < 0.1
    nodes = json.loads(b._cached_graph[1].tojson())["nodes"]
    casts = sum(n["op"] == "amp_cast" for n in nodes)
    convs = sum(n["op"] == "_sg_mkldnn_conv" for n in nodes)
    assert convs > 0 and casts < convs  # fused, and not a cast around every operator (AMP's default lists)


@pytest.mark.parametrize("op", BF16_SAFE_OPS)
def test_bfloat16_safe_ops_compute_what_float32_does(op):
    from mxnet.contrib.amp.amp import bfloat16

    rng = np.random.RandomState(0)
    x = mx.nd.array(rng.normal(0, 1, (2, 4, 3, 3)).astype(np.float32))
    w = mx.nd.array(rng.normal(0, 1, (2, 4, 1, 1)).astype(np.float32))
    calls = {"SliceChannel": lambda a, b: mx.nd.SliceChannel(a, num_outputs=2, axis=1)[1],
             "split": lambda a, b: mx.nd.split(a, num_outputs=2, axis=1)[1],
             "Reshape": lambda a, b: a.reshape((0, -1)),
             "Flatten": lambda a, b: mx.nd.Flatten(a)}
    low = calls[op](mx.nd.amp_cast(x, dtype=bfloat16), mx.nd.amp_cast(w, dtype=bfloat16))
    np.testing.assert_allclose(mx.nd.amp_cast(low, dtype="float32").asnumpy(), calls[op](x, w).asnumpy(),
                               rtol=2e-2, atol=2e-2)


def test_float16_on_cpu_is_still_refused():
    with pytest.raises(ValueError, match="float16 needs a GPU"):
        optimize(_net(), "float16", ctx=mx.cpu())


AMX_CHECK = """
import os, mxnet as mx
from resnest_gluon import get_model, optimize
net = get_model("resnest14", classes=10)
net.initialize()
out = optimize(net, "bfloat16", input_shape=(2, 3, 64, 64))(mx.nd.ones((2, 3, 64, 64))).astype("float32").asnumpy()
print("shape", out.shape, "isa variable left:", "DNNL_MAX_CPU_ISA" in os.environ)
"""


@pytest.mark.skipif(not amx_supported(), reason="the CPU has no AMX")
def test_amx_is_used_without_crashing_and_leaves_no_variable_behind():
    env = {k: v for k, v in os.environ.items() if k not in ("DNNL_MAX_CPU_ISA", "MKLDNN_MAX_CPU_ISA")}
    env.update(DNNL_VERBOSE="1", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", AMX_CHECK], capture_output=True, text=True, timeout=300, cwd=REPO,
                          env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]  # without the permission request this is SIGILL
    assert "shape (2, 10) isa variable left: False" in proc.stdout
    assert "avx512_core_amx" in proc.stdout  # oneDNN picked its AMX convolution kernels
