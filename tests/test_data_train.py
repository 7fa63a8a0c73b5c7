"""Training inputs: equal steps on every rank, shards from the right part, normalisation, AutoAugment, 320 px."""
import json
import os
import subprocess
import sys

import mxnet as mx
import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
import recgen  # noqa: E402
from resnest_gluon.data import (IMAGENET_POLICY, ImageNetAutoAugment, RecordTrainIter, RecordTrainLoader,  # noqa
                                ShardSampler, count_records)

N = 23  # not divisible by any world size 2..4 or by the batch sizes used
MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


@pytest.fixture(scope="module")
def rec(tmp_path_factory):
    rec_path, idx_path, _ = recgen.make_rec(str(tmp_path_factory.mktemp("train") / "data"), N, seed=3)
    return rec_path, idx_path


@pytest.mark.parametrize("last_batch", ["discard", "keep"])
@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_shard_sampler_disjoint_equal_and_nothing_lost(world, last_batch):
    samplers = [ShardSampler(N, batch_size=3, rank=r, world=world, seed=7, last_batch=last_batch)
                for r in range(world)]
    carry = []
    for epoch in range(3):
        for s in samplers:
            s.set_epoch(epoch)
        shards = [list(s) for s in samplers]
        assert len({len(s) for s in shards}) == 1, "every rank gets the same count"
        flat = sum(shards, [])
        assert len(flat) == len(set(flat)), "no sample twice within an epoch"
        assert set(carry) <= set(flat), "last epoch's leftovers open this epoch"
        taken, carry = samplers[0].epoch_order(epoch)
        assert sorted(flat) == sorted(taken.tolist())
        assert sorted(flat + carry.tolist()) == list(range(N)), "dealt + carried = every sample exactly once"
    if last_batch == "discard":
        assert len(samplers[0]) == (N // (world * 3)) * 3


def test_shard_sampler_reshuffles_per_epoch_and_is_seeded():
    a, b = ShardSampler(N, 2, 0, 2, seed=1), ShardSampler(N, 2, 0, 2, seed=1)
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first
    b.set_epoch(1)
    assert list(b) == list(a)


def test_shard_sampler_too_few_records_names_the_numbers():
    with pytest.raises(ValueError, match="5 records.*world \\(2\\) x batch_size \\(4\\)"):
        ShardSampler(5, batch_size=4, world=2)


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_recorditer_equal_batches_from_own_part(rec, world):
    rec_path, idx_path = rec
    bs = 2
    part = -(-N // world)  # ImageRecordIter with an .idx: blocks of ceil(N / world) records
    counts = []
    for rank in range(world):
        it = RecordTrainIter(rec_path, idx_path, batch_size=bs, data_shape=32, num_workers=1, rank=rank,
                             world=world, seed=rank)
        own = set(range(rank * part, min(N, (rank + 1) * part)))
        for _ in range(2):  # two epochs
            batches = [(d.shape, label.asnumpy().astype(int)) for d, label in it]
            counts.append(len(batches))
            assert all(shape == (bs, 3, 32, 32) for shape, _ in batches)
            assert set(np.concatenate([lab for _, lab in batches])) <= own
        assert len(it) == N // (world * bs)
    assert set(counts) == {N // (world * bs)}


def test_recorditer_short_last_shard_wraps():
    """N = 13, world 4: shards of 4, 4, 4, 1 records; every rank still runs floor(13 / 4) = 3 steps."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        rec_path, idx_path, _ = recgen.make_rec(os.path.join(tmp, "d"), 13, seed=1)
        it = RecordTrainIter(rec_path, idx_path, batch_size=1, data_shape=32, num_workers=1, rank=3, world=4)
        labels = [int(label.asscalar()) for _, label in it]
        assert labels == [12, 12, 12] and it.wraps >= 1


def _constant_rec(prefix, colour, n=4):
    writer = mx.recordio.MXIndexedRecordIO(prefix + ".idx", prefix + ".rec", "w")
    for i in range(n):
        img = np.empty((50 + 10 * i, 70, 3), np.uint8)
        img[:] = colour
        writer.write_idx(i, mx.recordio.pack_img(mx.recordio.IRHeader(0, float(i), i, 0), img[:, :, ::-1],
                                                 img_fmt=".png"))
    writer.close()
    return prefix + ".rec", prefix + ".idx"


@pytest.mark.parametrize("path", ["recorditer", "loader"])
def test_normalisation_of_a_known_colour(tmp_path, path):
    colour = np.array([200, 100, 30])
    rec_path, idx_path = _constant_rec(str(tmp_path / "c"), colour)
    kwargs = dict(batch_size=2, num_workers=1, jitter=0, lighting=0)
    it = (RecordTrainIter(rec_path, idx_path, data_shape=40, **kwargs) if path == "recorditer"
          else RecordTrainLoader(rec_path, idx_path, input_size=40, **kwargs))
    data, _ = next(iter(it))
    assert data.shape == (2, 3, 40, 40) and data.dtype == np.float32
    expected = (colour / 255.0 - MEAN) / STD
    np.testing.assert_allclose(data.asnumpy().mean(axis=(0, 2, 3)), expected, atol=1e-4)
    np.testing.assert_allclose(data.asnumpy().std(axis=(0, 2, 3)), 0, atol=1e-4)


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_loader_shards_disjoint_with_equal_steps(rec, world):
    rec_path, idx_path = rec
    seen, steps = [], set()
    for rank in range(world):
        ld = RecordTrainLoader(rec_path, idx_path, batch_size=2, input_size=32, num_workers=0, rank=rank,
                               world=world, seed=5, jitter=0, lighting=0)
        labels = [label.asnumpy().astype(int) for _, label in ld]
        steps.add(len(labels))
        assert len(labels) == len(ld)
        seen += np.concatenate(labels).tolist()
    assert steps == {N // (world * 2)}
    assert len(seen) == len(set(seen)), "no record on two ranks in one epoch"


def test_loader_augmentation_is_seeded_not_worker_dependent(rec):
    rec_path, idx_path = rec
    runs = [next(iter(RecordTrainLoader(rec_path, idx_path, batch_size=4, input_size=32, num_workers=w, seed=11,
                                        autoaugment=True)))[0].asnumpy() for w in (0, 2)]
    np.testing.assert_array_equal(runs[0], runs[1])
    other = next(iter(RecordTrainLoader(rec_path, idx_path, batch_size=4, input_size=32, num_workers=0, seed=12)))
    assert not np.array_equal(other[0].asnumpy(), runs[0])


def test_loader_dtype_float16(rec):
    data, label = next(iter(RecordTrainLoader(rec[0], rec[1], batch_size=2, input_size=32, num_workers=0,
                                              dtype="float16")))
    assert data.dtype == np.float16 and label.shape == (2,)


@pytest.mark.parametrize("index", range(len(IMAGENET_POLICY)))
def test_autoaugment_subpolicy_changes_image_deterministically(index):
    img = recgen.make_image(5, 64, 80, seed=2)
    aug = ImageNetAutoAugment()
    out = aug.apply_subpolicy(img, index, np.random.RandomState(0), force=True)
    again = aug.apply_subpolicy(img, index, np.random.RandomState(0), force=True)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert not np.array_equal(out, img), f"sub-policy {index} {IMAGENET_POLICY[index]} left the image unchanged"
    np.testing.assert_array_equal(out, again)


def test_autoaugment_rejects_unknown_operation():
    with pytest.raises(ValueError, match="unknown operation 'Blur'"):
        ImageNetAutoAugment(policy=[(("Blur", 0.5, 3), ("Equalize", 0.5, None))])


def test_large_size_training_is_bicubic_and_runs(rec):
    ld = RecordTrainLoader(rec[0], rec[1], batch_size=2, input_size=320, num_workers=0, autoaugment=True)
    assert ld.transform.interpolation == "bicubic"
    data, _ = next(iter(ld))
    assert data.shape == (2, 3, 320, 320) and np.isfinite(data.asnumpy()).all()
    it = RecordTrainIter(rec[0], rec[1], batch_size=2, data_shape=320, num_workers=1)
    assert it.iter_args["inter_method"] == 2
    assert next(iter(it))[0].shape == (2, 3, 320, 320)


def test_missing_idx_is_a_clear_error(tmp_path):
    rec_path, _, _ = recgen.make_rec(str(tmp_path / "noidx"), 4, with_idx=False)
    with pytest.raises(FileNotFoundError, match="noidx.rec.*idx"):
        RecordTrainIter(rec_path, batch_size=2, data_shape=32)
    assert count_records(recgen.make_rec(str(tmp_path / "x"), 7)[1]) == 7


def test_benchmark_script_writes_its_report(tmp_path):
    script = os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks", "data_throughput.py")
    proc = subprocess.run([sys.executable, script, "--make-data", "24", "--data-dir", str(tmp_path / "data"),
                           "--input-size", "32", "--batch-size", "4", "--batches", "2", "--warmup", "1",
                           "--cores", "1", "--out", str(tmp_path / "out")], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.load(open(tmp_path / "out" / "data_throughput.json"))
    assert set(report) >= {"config", "results", "ratios", "goal_2x_default_vs_official"}
    assert {r["pipeline"] for r in report["results"]} == {"ours_recorditer", "ours_loader", "official"}
    for r in report["results"]:
        assert r["cores"] == 1 and r["images"] == 8 and r["images_per_s"] > 0 and r["shape"] == [4, 3, 32, 32]
    assert set(report["ratios"]["1"]) == {"ours_recorditer/official", "ours_loader/official"}
    assert (tmp_path / "out" / "data_throughput.png").stat().st_size > 0
