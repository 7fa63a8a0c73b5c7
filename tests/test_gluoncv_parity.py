"""Official Gluon / GluonCV weights load into our models by name and give the same logits.

gluoncv is a reference only: it is installed in the test environment (.venv) and imported here, never by the library.
"""
import mxnet as mx
import numpy as np
import pytest

from resnest_gluon import get_model, load_weights
from conftest import randomize_bn

from gluoncv import model_zoo as gluoncv_zoo  # noqa: E402  (installed in .venv by tools/setup_env.sh)


def random_gluoncv(name, path, seed, **kwargs):
    """GluonCV's model ``name`` with random weights (BN statistics too), saved to ``path``."""
    mx.random.seed(seed)
    ref = gluoncv_zoo.get_model(name, pretrained=False, **kwargs)
    ref.initialize(mx.init.Xavier(magnitude=2))
    randomize_bn(ref, seed=seed)
    ref.save_parameters(path)
    return ref


@pytest.mark.parametrize("name", ["resnest14", "resnest26", "resnest50", "resnest101"])
def test_gluoncv_params_file_loads_by_name_with_equal_logits(name, tmp_path):
    path = str(tmp_path / f"{name}.params")
    ref = random_gluoncv(name, path, seed=1)
    x = mx.nd.random.uniform(-2, 2, shape=(2, 3, 224, 224))
    expected = ref(x).asnumpy()
    assert expected.std() > 1e-2  # the weights are not trivial

    net = load_weights(get_model(name), path)
    np.testing.assert_allclose(net(x).asnumpy(), expected, rtol=0, atol=1e-4)
    net.hybridize(static_alloc=True, static_shape=True)
    np.testing.assert_allclose(net(x).asnumpy(), expected, rtol=0, atol=1e-4)
    ref.hybridize()
    np.testing.assert_allclose(net(x).asnumpy(), ref(x).asnumpy(), rtol=0, atol=1e-4)


@pytest.mark.parametrize("name, gluoncv_kwargs, output_stride", [
    ("resnest50", dict(dilated=True), 8), ("resnest50", dict(dilation=2), 16), ("resnest101", dict(dilated=True), 8)])
def test_gluoncv_dilated_backbone_loads_by_name_with_equal_outputs(name, gluoncv_kwargs, output_stride, tmp_path):
    """GluonCV's dilated ResNeSt (what its DeepLabV3 is built on) and ours at the same output stride: one weight
    file, the same logits, so every stage (strides, dilations, pools) computes the same."""
    path = str(tmp_path / f"{name}-os{output_stride}.params")
    ref = random_gluoncv(name, path, seed=2, **gluoncv_kwargs)
    x = mx.nd.random.uniform(-2, 2, shape=(1, 3, 96, 128))
    expected = ref(x).asnumpy()
    net = load_weights(get_model(name, output_stride=output_stride), path)
    net.hybridize(static_alloc=True, static_shape=True)
    np.testing.assert_allclose(net(x).asnumpy(), expected, rtol=0, atol=1e-4)
    classification = load_weights(get_model(name), path)  # same file, other strides: other numbers
    assert np.abs(classification(x).asnumpy() - expected).max() > 1e-3
