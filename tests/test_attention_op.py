"""The fused split-attention operator (resnest_gluon/ops/csrc/attention_op.cc): built, loaded, and equal to MXNet's ops."""
import os
import time

import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd

import resnest_gluon as rg
from resnest_gluon.ops import attention_op
from resnest_gluon.splat import fused_attention_off_device, set_fused_attention

from conftest import randomize_bn, run_python


def mxnet_tail(x, attn, radix):
    """What the operator replaces: scale every channel, then sum the radix splits."""
    out = mx.nd.broadcast_mul(x, attn.reshape((0, -1, 1, 1)))
    c = x.shape[1] // radix
    return mx.nd.add_n(*[mx.nd.slice_axis(out, axis=1, begin=r * c, end=(r + 1) * c) for r in range(radix)])


def test_the_operator_is_built_and_loaded_here():
    # The test environment has a C++ compiler, so the fast path is what the rest of the suite exercises.
    assert attention_op.load(), attention_op.unavailable_reason()
    assert attention_op.unavailable_reason() is None
    assert os.path.isfile(attention_op.library_path())
    assert rg.get_model("resnest14d").layer1[0].conv2.fused_attention


@pytest.mark.parametrize("radix, attn_4d", [(1, False), (2, False), (2, True), (4, False)])
def test_forward_and_backward_equal_mxnet_operators(radix, attn_4d, rng):
    x = mx.nd.array(rng.normal(size=(3, radix * 6, 5, 7)).astype("float32"))
    attn = mx.nd.array(rng.uniform(size=(3, radix * 6)).astype("float32"))
    if attn_4d:
        attn = attn.reshape((3, -1, 1, 1))
    head = mx.nd.array(rng.normal(size=(3, 6, 5, 7)).astype("float32"))
    results = []
    for op in (mxnet_tail, getattr(mx.nd, attention_op.OP_NAME)):
        xs, a = x.copy(), attn.copy()
        xs.attach_grad()
        a.attach_grad()
        with autograd.record():
            out = op(xs, a, radix=radix)
        out.backward(head)
        results.append([out.asnumpy(), xs.grad.asnumpy(), a.grad.asnumpy()])
    for name, ours, theirs in zip(("out", "d_x", "d_attn"), results[1], results[0]):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5, err_msg=name)


def test_bad_shapes_and_dtypes_name_the_operator():
    op = getattr(mx.nd, attention_op.OP_NAME)
    with pytest.raises(mx.MXNetError, match="resnest_radix_weighted_sum: x must be"):
        op(mx.nd.zeros((2, 5, 3, 3)), mx.nd.zeros((2, 5)), radix=2).wait_to_read()
    with pytest.raises(mx.MXNetError, match="resnest_radix_weighted_sum: attn must hold"):
        op(mx.nd.zeros((2, 8, 3, 3)), mx.nd.zeros((2, 4)), radix=2).wait_to_read()
    with pytest.raises(mx.MXNetError, match="only float32"):
        op(mx.nd.zeros((2, 8, 3, 3), dtype="float64"), mx.nd.zeros((2, 8), dtype="float64"), radix=2).wait_to_read()


def test_a_network_is_the_same_with_and_without_the_operator(rng):
    x = mx.nd.array(rng.normal(size=(2, 3, 64, 64)).astype("float32"))
    net = rg.get_model("resnest14d", classes=10)
    net.initialize(mx.init.Xavier())
    randomize_bn(net)
    net.hybridize()
    fused = net(x).asnumpy()
    set_fused_attention(net, False)
    assert not net.layer1[0].conv2.fused_attention
    net.hybridize()  # rebuild the graph
    np.testing.assert_allclose(fused, net(x).asnumpy(), rtol=1e-4, atol=1e-4)


class _OnGpu:
    """Stands in for an input on a GPU (there is none here): all the guard reads is the context."""
    context = mx.gpu(0)


def test_a_network_fed_from_a_gpu_drops_the_cpu_only_operator():
    net = rg.get_model("resnest14d")
    blocks = [b.conv2 for stage in (net.layer1, net.layer2) for b in stage]
    assert all(b.fused_attention for b in blocks)
    fused_attention_off_device(net, mx.nd.zeros((1,)))  # a CPU input changes nothing
    assert all(b.fused_attention for b in blocks)
    fused_attention_off_device(net, _OnGpu())
    assert not any(b.fused_attention for b in blocks)
    # built for a GPU, it never has it (also when it becomes part of a larger hybridized graph)
    gpu_net = rg.get_model("resnest14d", ctx=[mx.cpu(), mx.gpu(0)])
    assert not any(b.conv2.fused_attention for stage in (gpu_net.layer1, gpu_net.layer4) for b in stage)


def test_build_is_atomic_and_a_failed_compile_says_why(tmp_path, monkeypatch):
    path = attention_op.build(str(tmp_path / "ok" / "lib.so"))
    assert os.path.getsize(path) > 0
    monkeypatch.setenv("CXX", "false")  # a "compiler" that always fails
    target = tmp_path / "bad" / "lib.so"
    with pytest.raises(RuntimeError, match="compiling .*attention_op.cc failed"):
        attention_op.build(str(target))
    assert not target.exists() and os.listdir(target.parent) == []  # no partial library left behind


def test_a_new_build_deletes_builds_unused_for_30_days(tmp_path):
    now = time.time()
    for name, age_days in [("libresnest_ops-old.so", 31), ("libresnest_ops-recent.so", 2), ("libresnest_ops-new.so", 40),
                           ("notes.txt", 90)]:
        (tmp_path / name).write_bytes(b"x")
        os.utime(tmp_path / name, (now - age_days * 86400,) * 2)
    (tmp_path / "libresnest_ops-old.so.lock").touch()
    removed = attention_op.prune_cache(str(tmp_path), keep=str(tmp_path / "libresnest_ops-new.so"))
    assert removed == [str(tmp_path / "libresnest_ops-old.so")]
    assert sorted(os.listdir(tmp_path)) == ["libresnest_ops-new.so", "libresnest_ops-recent.so", "notes.txt"]


@pytest.mark.parametrize("env, reason", [({"CXX": "/nonexistent/c++"}, "no C++ compiler"),
                                         ({"RESNEST_GLUON_FUSED_OPS": "0"}, "disabled by RESNEST_GLUON_FUSED_OPS=0")])
def test_without_the_operator_the_networks_fall_back_to_mxnet_operators(env, reason, tmp_path):
    code = (
        "import warnings, mxnet as mx\n"
        "import resnest_gluon as rg\n"
        "from resnest_gluon.ops import attention_op\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        "    net = rg.get_model('resnest14d', classes=4)  # the first network built loads the operator\n"
        "    rg.get_model('resnest14d', classes=4)  # a second one does not try (or warn) again\n"
        "warned = [m for m in w if 'fused split-attention operator is unavailable' in str(m.message)]\n"
        "print('warned:', bool(warned), len(warned))\n"
        "print('reason:', attention_op.unavailable_reason())\n"
        "net.initialize(); net.hybridize()\n"
        "print('fused:', net.layer1[0].conv2.fused_attention, net(mx.nd.zeros((1, 3, 32, 32))).shape)\n")
    proc = run_python(code, env={**os.environ, "RESNEST_GLUON_OPS_CACHE": str(tmp_path), **env},
                      cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert reason in proc.stdout.split("reason:")[1].splitlines()[0]
    assert "fused: False (1, 4)" in proc.stdout
    assert ("warned: True 1" in proc.stdout) == ("CXX" in env)  # disabling on purpose is not worth a warning
    assert "warned: True 2" not in proc.stdout


@pytest.mark.parametrize("first", ["horovod", "resnest_gluon"])
def test_the_operator_and_horovod_share_a_process_in_either_import_order(first):
    # Horovod's MXNet module exports its own copy of MXNet's library-API symbols; a library that let them
    # interpose crashed at load or at the first call (free(): invalid pointer).
    imports = ["import horovod.mxnet as hvd", "from resnest_gluon.ops import attention_op; assert attention_op.load()"]
    code = "\n".join((imports if first == "horovod" else imports[::-1]) + [
        "import mxnet as mx",
        "hvd.init()",
        "x, a = mx.nd.ones((2, 4, 3, 3)), mx.nd.ones((2, 4))",
        "x.attach_grad()",
        "with mx.autograd.record():",
        f"    y = mx.nd.{attention_op.OP_NAME}(x, a, radix=2)",
        "y.backward()",
        "print('sum', hvd.allreduce(x.grad).sum().asscalar(), y.sum().asscalar())"])
    proc = run_python(code, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "sum 72.0 72.0" in proc.stdout  # d_x: 72 ones; out: 36 sums of two ones
