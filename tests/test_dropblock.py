"""DropBlock: active in training mode and identity at inference in ONE hybridized graph, probability changeable.

The official/GluonCV DropBlock reads ``autograd.is_training()`` in Python, so ``hybridize()`` freezes the mode of the
first call. ``test_mode_is_not_baked_in_by_first_call`` fails on that implementation.
"""
import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd

from resnest_gluon import DropBlock, get_drop_prob, get_model, set_drop_prob


def _block(prob, size=3, hybridize=True):
    block = DropBlock(prob, size)
    block.initialize()
    if hybridize:
        block.hybridize(static_alloc=True, static_shape=True)
    return block


def _ones(shape=(4, 16, 28, 28)):
    return mx.nd.ones(shape)


def _dropped_fraction(y):
    return float((y.asnumpy() == 0).mean())


@pytest.mark.parametrize("first_call_training", [False, True])
def test_mode_is_not_baked_in_by_first_call(first_call_training):
    block, x = _block(0.2), _ones()
    calls = [True, False, True, False] if first_call_training else [False, True, False, True]
    for training in calls:
        with autograd.record(train_mode=training):
            y = block(x)
        if training:
            assert 0.1 < _dropped_fraction(y) < 0.35, "DropBlock must drop in training mode"
        else:
            assert (y.asnumpy() == x.asnumpy()).all(), "DropBlock must be the identity at inference"


def test_inference_outside_record_is_identity():
    block, x = _block(0.3), mx.nd.random.normal(shape=(2, 8, 14, 14))
    np.testing.assert_array_equal(block(x).asnumpy(), x.asnumpy())
    with autograd.train_mode():  # training mode without recording also drops, like Dropout
        assert _dropped_fraction(block(_ones())) > 0.1


def test_probability_changes_without_rehybridize():
    block, x = _block(0.0), _ones()
    with autograd.record():
        assert _dropped_fraction(block(x)) == 0.0
    assert set_drop_prob(block, 0.3) == 1
    with autograd.record():
        frac = _dropped_fraction(block(x))
    assert 0.2 < frac < 0.4  # the drop fraction follows p (per the paper's gamma), same cached graph
    assert get_drop_prob(block) == [0.3]


def test_blocks_are_contiguous_and_rescaled():
    block, x = _block(0.1, size=5), _ones((2, 4, 40, 40))
    with autograd.record():
        y = block(x).asnumpy()
    # every dropped pixel has a 5x5 dropped block around some seed: dropped pixels come in runs of >= 5 along a row
    row_runs = []
    for row in (y[..., :] == 0).reshape(-1, 40):
        run = 0
        for v in list(row) + [False]:
            if v:
                run += 1
            elif run:
                row_runs.append(run)
                run = 0
    assert row_runs and min(row_runs) >= 3  # runs cut by the border can be shorter than 5, not shorter than 3
    per_sample = y.reshape(2, -1)
    np.testing.assert_allclose(per_sample.sum(axis=1), x[0].size, rtol=1e-5)  # expected sum preserved per sample
    for sample in per_sample:  # one scale per sample
        kept = sample[sample != 0]
        assert np.allclose(kept, kept[0]) and kept[0] > 1


def test_gradient_flows_through_kept_units():
    block, x = _block(0.2), _ones((2, 4, 16, 16))
    x.attach_grad()
    with autograd.record():
        y = block(x)
    y.backward()
    grad, out = x.grad.asnumpy(), y.asnumpy()
    np.testing.assert_allclose(grad, out)  # d(sum(x * mask * scale))/dx = mask * scale = y for x = 1


def test_bad_arguments():
    with pytest.raises(ValueError, match="odd"):
        DropBlock(0.1, 4)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        DropBlock(1.0, 3)
    with pytest.raises(ValueError):
        set_drop_prob(_block(0.1), -0.1)


def test_network_dropblock_in_stages_3_and_4_only():
    net = get_model("resnest14", dropblock_prob=0.1)
    found = []
    net.apply(lambda b: found.append(b) if isinstance(b, DropBlock) else None)
    assert len(found) == 2 * 3  # one block in each of stages 3-4, three DropBlocks per bottleneck
    assert all(b.prefix.startswith(net.prefix + "layers3_") or b.prefix.startswith(net.prefix + "layers4_")
               for b in found)
    assert not any(isinstance(b, DropBlock) for b in _children(get_model("resnest14")))


def _children(net):
    out = []
    net.apply(out.append)
    return out


def test_network_eval_is_deterministic_and_training_drops():
    net = get_model("resnest14", dropblock_prob=0.2)
    net.initialize(mx.init.Xavier())
    net.hybridize(static_alloc=True, static_shape=True)
    x = mx.nd.random.uniform(shape=(2, 3, 64, 64))
    reference = get_model("resnest14")  # the same weights without DropBlock
    reference.initialize()
    for name, p in reference._collect_params_with_prefix().items():
        p.set_data(net._collect_params_with_prefix()[name].data())
    with autograd.record(train_mode=False):
        np.testing.assert_allclose(net(x).asnumpy(), reference(x).asnumpy(), rtol=1e-5, atol=1e-5)
    with autograd.record(train_mode=True):
        a, b = net(x).asnumpy(), net(x).asnumpy()
    assert np.abs(a - b).max() > 1e-3  # random blocks differ between two training calls
    set_drop_prob(net, 0.0)
    with autograd.record(train_mode=True):
        np.testing.assert_allclose(net(x).asnumpy(), reference(x).asnumpy(), rtol=1e-4, atol=1e-4)
