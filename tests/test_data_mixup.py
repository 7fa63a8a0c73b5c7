"""Mixup + label smoothing: convex combinations, the off-epoch, and targets that are distributions."""
import mxnet as mx
import numpy as np
import pytest

from resnest_gluon.data import MixupLabelSmoothing, smooth_targets

K = 10


def test_smoothed_targets_sum_to_one_with_the_right_values():
    t = smooth_targets(mx.nd.array([3, 0, 9]), K, 0.1).asnumpy()
    np.testing.assert_allclose(t.sum(axis=1), 1, rtol=1e-6)
    assert np.allclose(t[0, 3], 1 - 0.1 + 0.1 / K) and np.allclose(t[0, [0, 1, 2, 4]], 0.1 / K)
    np.testing.assert_array_equal(smooth_targets(mx.nd.array([2]), K, 0).asnumpy(), np.eye(K)[[2]])


def test_mixup_is_a_convex_combination_of_the_batch_and_its_reverse():
    x = mx.nd.random.uniform(shape=(4, 3, 8, 8))
    y = mx.nd.array([1, 2, 3, 4])
    mix = MixupLabelSmoothing(K, alpha=0.2, smoothing=0.1, seed=0)
    data, targets = mix(x, y, epoch=0)
    lam = mix.last_lam
    assert 0 < lam < 1
    xn, tn = x.asnumpy(), smooth_targets(y, K, 0.1).asnumpy()
    np.testing.assert_allclose(data.asnumpy(), lam * xn + (1 - lam) * xn[::-1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(targets.asnumpy(), lam * tn + (1 - lam) * tn[::-1], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(targets.asnumpy().sum(axis=1), 1, rtol=1e-5)


def test_off_epoch_disables_mixup_in_the_last_epochs():
    x, y = mx.nd.random.uniform(shape=(4, 3, 4, 4)), mx.nd.array([0, 1, 2, 3])
    mix = MixupLabelSmoothing(K, alpha=0.2, smoothing=0.1, off_epoch=2, num_epochs=10, seed=0)
    assert [mix.active(e) for e in (0, 7, 8, 9)] == [True, True, False, False]
    data, targets = mix(x, y, epoch=8)
    np.testing.assert_array_equal(data.asnumpy(), x.asnumpy())
    np.testing.assert_allclose(targets.asnumpy(), smooth_targets(y, K, 0.1).asnumpy())
    data, _ = mix(x, y, epoch=7)
    assert not np.allclose(data.asnumpy(), x.asnumpy())


def test_usable_with_the_soft_label_loss():
    data, targets = MixupLabelSmoothing(K, seed=1)(mx.nd.ones((2, K)), mx.nd.array([0, 5]))
    loss = mx.gluon.loss.SoftmaxCrossEntropyLoss(sparse_label=False)(data, targets)
    assert loss.shape == (2,) and np.isfinite(loss.asnumpy()).all()


def test_off_epoch_without_num_epochs_is_an_error():
    with pytest.raises(ValueError, match="off_epoch needs num_epochs"):
        MixupLabelSmoothing(K, off_epoch=5)
