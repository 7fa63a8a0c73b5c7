"""Evaluation input: the official protocol against an independent PIL computation, every image exactly once."""
import math
import os
import sys
import warnings

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, os.path.dirname(__file__))
import recgen  # noqa: E402
from resnest_gluon.data import ValRecordIter, eval_crop, eval_transform, preprocess_image  # noqa: E402
from resnest_gluon.zoo import DataConfig, get_config  # noqa: E402

N = 23
SIZES = [(60, 90), (100, 70), (120, 120), (45, 110)]


def pil_protocol(img, size, crop_pct, interpolation):
    """The verify protocol written independently with PIL resizing and numpy/PIL cropping."""
    pil, resample = Image.fromarray(img), {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}[interpolation]
    w, h = pil.size
    if size < 320:
        short = math.ceil(size / crop_pct)
        nw, nh = (short, short * h // w) if h > w else (short * w // h, short)
        out = np.asarray(pil.resize((nw, nh), resample)).astype(float)
        top, left = (nh - size) // 2, (nw - size) // 2
        return out[top:top + size, left:left + size]
    side = crop_pct * min(w, h)
    left, top = round((w - side) / 2), round((h - side) / 2)
    return np.asarray(pil.crop((left, top, left + side, top + side)).resize((size, size), resample)).astype(float)


# PIL and OpenCV differ in their kernels (PIL bicubic a=-0.5 vs OpenCV -0.75; PIL widens the kernel when it
# downscales, OpenCV does not) and in rounding: on these smooth test images that stays below 0.6 grey levels on
# average and 4 at worst. A crop one source pixel off costs more than that, which each case checks.
MEAN_TOL, MAX_TOL = 0.6, 4


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
@pytest.mark.parametrize("size,crop_pct", [(56, 0.875), (48, 0.875), (320, 320 / 352)])
def test_eval_geometry_matches_independent_pil_protocol(size, crop_pct, interpolation):
    for k, (h, w) in enumerate(SIZES):
        img = recgen.make_image(k, h, w, seed=4)
        ours = eval_crop(img, size, crop_pct, interpolation).astype(float)
        ref = pil_protocol(img, size, crop_pct, interpolation)
        assert ours.shape == ref.shape == (size, size, 3)
        diff = np.abs(ours - ref)
        assert diff.mean() < MEAN_TOL and diff.max() <= MAX_TOL, (h, w, diff.mean(), diff.max())
        shifted = pil_protocol(np.roll(img, 1, axis=1), size, crop_pct, interpolation)
        assert np.abs(ours - shifted).mean() > MEAN_TOL, "the tolerance must catch a one-source-pixel offset"


def test_eval_transform_normalises_a_known_colour():
    img = np.empty((90, 60, 3), np.uint8)
    img[:] = (10, 128, 250)
    cfg = get_config("resnest50").data
    out = eval_transform(cfg)(img)
    assert out.shape == (3, 224, 224) and out.dtype == np.float32
    expected = (np.array([10, 128, 250]) / 255.0 - np.array(cfg.mean)) / np.array(cfg.std)
    np.testing.assert_allclose(out.asnumpy().mean(axis=(1, 2)), expected, atol=1e-5)


def test_preprocess_image_from_file_equals_transform(tmp_path):
    img = recgen.make_image(1, 70, 100)
    Image.fromarray(img).save(tmp_path / "x.png")
    cfg = DataConfig(64, 0.875, "bicubic")
    x = preprocess_image(str(tmp_path / "x.png"), cfg)
    assert x.shape == (1, 3, 64, 64)
    np.testing.assert_array_equal(x[0].asnumpy(), eval_transform(cfg)(img).asnumpy())
    with pytest.raises(FileNotFoundError, match="nope.jpg"):
        preprocess_image(str(tmp_path / "nope.jpg"), cfg)


@pytest.fixture(scope="module")
def recs(tmp_path_factory):
    d = tmp_path_factory.mktemp("val")
    indexed = recgen.make_rec(str(d / "indexed"), N, seed=6, img_fmt=".jpg")
    plain = recgen.make_rec(str(d / "plain"), N, seed=6, img_fmt=".jpg", with_idx=False)
    return indexed, plain


def _labels(it):
    return [label.asnumpy().astype(int).tolist() for _, label in it]


@pytest.mark.parametrize("backend,with_idx", [("gluon", True), ("gluon", False), ("recorditer", True),
                                              ("recorditer", False)])
def test_every_image_exactly_once_with_partial_last_batch(recs, backend, with_idx):
    rec_path = (recs[0] if with_idx else recs[1])[0]
    it = ValRecordIter(rec_path, DataConfig(32, 0.875), batch_size=5, num_workers=2, backend=backend)
    batches = _labels(it)
    assert [len(b) for b in batches] == [5, 5, 5, 5, 3]
    assert sorted(sum(batches, [])) == list(range(N)) and it.num_images == N


@pytest.mark.parametrize("backend", ["gluon", "recorditer"])
@pytest.mark.parametrize("world", [2, 3])
def test_sharded_validation_covers_each_image_once(recs, world, backend):
    seen = []
    for rank in range(world):
        seen += sum(_labels(ValRecordIter(recs[0][0], DataConfig(32, 0.875), batch_size=4, num_workers=1,
                                          rank=rank, world=world, backend=backend)), [])
    assert sorted(seen) == list(range(N))


def test_recorditer_backend_equals_the_shared_transform(recs):
    cfg = DataConfig(40, 0.875, "bicubic")
    fast = list(ValRecordIter(recs[0][0], cfg, batch_size=8, backend="recorditer"))
    slow = list(ValRecordIter(recs[0][0], cfg, batch_size=8, num_workers=0))
    for (a, la), (b, lb) in zip(fast, slow):
        np.testing.assert_array_equal(la.asnumpy(), lb.asnumpy())
        np.testing.assert_allclose(a.asnumpy(), b.asnumpy(), atol=1e-5)


def test_recorditer_backend_refuses_the_large_protocol(recs):
    with pytest.raises(ValueError, match="input_size=320 needs backend='gluon'"):
        ValRecordIter(recs[0][0], get_config("resnest200").data, backend="recorditer")


def test_large_size_validation_runs_bicubic_square(recs):
    cfg = get_config("resnest200").data
    assert cfg.interpolation == "bicubic" and cfg.input_size == 320
    data, label = next(iter(ValRecordIter(recs[0][0], cfg, batch_size=3, num_workers=0)))
    assert data.shape == (3, 3, 320, 320)


@pytest.mark.parametrize("with_idx", [True, False])
def test_corrupt_records_are_skipped_and_reported(tmp_path, with_idx):
    rec_path, _, _ = recgen.make_rec(str(tmp_path / "bad"), 12, corrupt=(3, 10), with_idx=with_idx)
    it = ValRecordIter(rec_path, DataConfig(32, 0.875), batch_size=5, num_workers=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        labels = sum(_labels(it), [])
    assert labels == [i for i in range(12) if i not in (3, 10)] and it.num_images == 10
    assert [index for index, _ in it.corrupt] == [3, 10]
    assert "bad.rec record #3" in it.corrupt[0][1]
    assert sum("undecodable" in str(w.message) for w in caught) == 2
