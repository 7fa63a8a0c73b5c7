"""Preemption building blocks: the signal handler (first signal asks, second stops at once), checkpoints written
inside an epoch (their order, pruning, a second signal during the write), and resuming inside an epoch (skipping
batches on both input paths, replaying mixup draws). End to end runs are in test_training_e2e.py."""
import os
import signal
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
import recgen  # noqa: E402
from resnest_gluon.data import MixupLabelSmoothing, RecordTrainIter, RecordTrainLoader  # noqa: E402
from resnest_gluon.data.sharding import ShardSampler  # noqa: E402
from resnest_gluon.training import CheckpointManager, latest_checkpoint  # noqa: E402
from resnest_gluon.training.preemption import StopNow, StopSignals  # noqa: E402


def test_first_signal_asks_to_stop_the_second_stops_now_and_handlers_come_back():
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with StopSignals() as stop:
        assert not stop.requested
        signal.raise_signal(signal.SIGTERM)  # runs the Python handler before returning
        assert stop.requested and stop.received == signal.SIGTERM
        with pytest.raises(StopNow) as err:
            signal.raise_signal(signal.SIGINT)
        assert err.value.signum == signal.SIGINT and "SIGINT received a second time" in str(err.value)
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # a third signal would kill outright
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


class _SignalledOnDelete:
    def __del__(self):  # as an MXNet array freed while the second signal arrives
        signal.raise_signal(signal.SIGTERM)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the exception it loses on purpose
def test_a_second_signal_lost_inside_a_destructor_still_stops_at_the_next_poll():
    """Python prints and drops an exception raised in ``__del__``: the next per-step poll raises it again."""
    with StopSignals() as stop:
        signal.raise_signal(signal.SIGINT)
        assert stop.poll()
        obj = _SignalledOnDelete()
        del obj  # StopNow raised in the destructor is "ignored" by Python
        with pytest.raises(StopNow) as err:
            stop.poll()
        assert err.value.signum == signal.SIGTERM


class _Net:
    def save_parameters(self, path):
        with open(path, "wb") as f:
            f.write(b"params")


class _Trainer:
    def __init__(self, interrupt=False):
        self.interrupt = interrupt

    def save_states(self, path):
        with open(path, "wb") as f:
            f.write(b"sta")
            if self.interrupt:  # a preempted run is writing its checkpoint when the second signal comes
                signal.raise_signal(signal.SIGTERM)
                signal.raise_signal(signal.SIGTERM)
            f.write(b"tes")


def test_a_checkpoint_inside_an_epoch_sorts_between_the_epochs_and_is_pruned_in_order(tmp_path):
    mgr = CheckpointManager(str(tmp_path), keep=3)
    mgr.save(1, _Net(), _Trainer())
    path = mgr.save(1, _Net(), _Trainer(), step=12)  # stopped after step 12 of epoch 2
    assert os.path.basename(path) == "ckpt-0002-step000012.json"
    ckpt = latest_checkpoint(str(tmp_path))
    assert (ckpt["epoch"], ckpt["step"]) == (1, 12) and ckpt["params"].endswith("ckpt-0002-step000012.params")
    mgr.save(1, _Net(), _Trainer(), step=3)  # an older position written later still sorts by position
    assert latest_checkpoint(str(tmp_path))["step"] == 12
    mgr.save(2, _Net(), _Trainer())  # epoch 2 complete
    assert "step" not in latest_checkpoint(str(tmp_path)) and latest_checkpoint(str(tmp_path))["epoch"] == 2
    assert sorted(f for f in os.listdir(tmp_path) if f.endswith(".json")) == [
        "ckpt-0002-step000003.json", "ckpt-0002-step000012.json", "ckpt-0002.json"]  # ckpt-0001 pruned first


def test_a_second_signal_during_the_write_leaves_the_previous_checkpoint_the_latest(tmp_path):
    mgr = CheckpointManager(str(tmp_path), keep=3)
    mgr.save(1, _Net(), _Trainer())
    with StopSignals() as stop, pytest.raises(StopNow):
        mgr.save(1, _Net(), _Trainer(interrupt=True), step=4)  # its .params were already complete
    assert stop.requested
    assert sorted(os.listdir(tmp_path)) == ["ckpt-0001.json", "ckpt-0001.params", "ckpt-0001.states"]  # no .tmp
    assert latest_checkpoint(str(tmp_path))["epoch"] == 1


def test_shard_sampler_skips_the_first_samples_of_the_rank_shard():
    sampler = ShardSampler(103, batch_size=4, rank=1, world=2, seed=7)
    sampler.set_epoch(3)
    whole = list(sampler)
    sampler.set_epoch(3, skip=8)
    assert list(sampler) == whole[8:] and len(sampler) == len(whole) - 8
    sampler.set_epoch(4)
    assert len(list(sampler)) == len(whole)  # the skip is for one epoch only
    with pytest.raises(ValueError, match="skip must be in"):
        sampler.set_epoch(3, skip=len(whole) + 1)


def _batches(data):
    return [(x.asnumpy(), y.asnumpy()) for x, y in data]


@pytest.mark.parametrize("path", ["ImageRecordIter", "DataLoader"])
def test_skipping_batches_gives_the_rest_of_the_uninterrupted_epoch(tmp_path, path):
    rec, idx, _ = recgen.make_rec(str(tmp_path / "d"), 40, seed=1)
    if path == "ImageRecordIter":  # decodes and drops the skipped batches (its RNG runs image by image)
        make = lambda: RecordTrainIter(rec, idx, batch_size=4, data_shape=32, num_workers=1, rank=1,  # noqa
                                       world=2, seed=3)
    else:  # skips by index: nothing is read for the skipped batches
        make = lambda: RecordTrainLoader(rec, idx, batch_size=4, input_size=32, num_workers=0, rank=1,  # noqa
                                         world=2, seed=3, autoaugment=True)
    whole = make()
    whole.set_epoch(2)
    expected = _batches(whole)
    resumed = make()
    resumed.set_epoch(2, skip=3)
    got = _batches(resumed)
    assert len(expected) == resumed.steps == 5 and len(got) == 2
    for (x, y), (ex, ey) in zip(got, expected[3:]):
        assert np.array_equal(x, ex) and np.array_equal(y, ey)
    assert len(_batches(resumed)) == 5  # the next epoch is whole again


def test_mixup_skip_replays_the_draws_of_the_skipped_steps():
    import mxnet as mx
    x, y = mx.nd.random.uniform(shape=(4, 3, 2, 2)), mx.nd.array([0, 1, 2, 3])
    ran = MixupLabelSmoothing(4, alpha=0.2, seed=11)
    for _ in range(3):
        ran(x, y)
    skipped = MixupLabelSmoothing(4, alpha=0.2, seed=11)
    skipped.skip(3)
    ran(x, y), skipped(x, y)
    assert skipped.last_lam == ran.last_lam != 1.0
    off = MixupLabelSmoothing(4, alpha=0.2, off_epoch=1, num_epochs=2, seed=11)
    off.skip(3, epoch=1)  # no mixup in that epoch: no draws to replay
    assert off.rng.random_sample() == np.random.RandomState(11).random_sample()
