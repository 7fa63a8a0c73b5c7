"""Undecodable training records: MXNet's index cannot leave them out, the scan finds them once, both training
paths step over them with the same steps on every rank, and too many stop the run."""
import json
import os
import sys

import mxnet as mx
import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
import recgen  # noqa: E402
from resnest_gluon.data import RecordTrainIter, RecordTrainLoader  # noqa: E402
from resnest_gluon.data import bad_records  # noqa: E402
from resnest_gluon.data.bad_records import (BadRecordLimit, TooManyBadRecords, check_bad_fraction,  # noqa: E402
                                            scan_bad_records)

N = 30
DAMAGED, EMPTY = 7, 19


@pytest.fixture
def rec(tmp_path):
    rec_path, idx_path, _ = recgen.make_rec(str(tmp_path / "train"), N, img_fmt=".jpg", damaged=(DAMAGED,),
                                            empty=(EMPTY,))
    return rec_path, idx_path


def labels_of(it, **kwargs):
    """Every label ``mx.io.ImageRecordIter`` yields in one pass (batch 2: the test files hold even counts)."""
    it = mx.io.ImageRecordIter(batch_size=2, data_shape=(3, 16, 16), preprocess_threads=1, round_batch=False,
                               **kwargs)
    return [int(v) for b in it for v in b.label[0].asnumpy()[:2 - b.pad]]


@pytest.mark.parametrize("shuffle", [False, True])
def test_imagerecorditer_reads_records_left_out_of_its_idx(tmp_path, shuffle):
    """Why the fast path needs a copy: dmlc's indexed_recordio reads each listed record up to the next listed
    offset, so a record missing from the .idx comes along with the one before it."""
    rec_path, idx_path, _ = recgen.make_rec(str(tmp_path / "good"), 20, img_fmt=".jpg")
    left_out = {4, 11}
    filtered = str(tmp_path / "filtered.idx")
    with open(idx_path) as src, open(filtered, "w") as dst:
        dst.writelines(line for line in src if int(line.split("\t")[0]) not in left_out)
    seen = labels_of(None, path_imgrec=rec_path, path_imgidx=filtered, shuffle=shuffle)
    assert sorted(seen) == list(range(20))


def test_scan_names_damaged_and_empty_records_once_per_file(rec, monkeypatch):
    rec_path, idx_path = rec
    bad = scan_bad_records(rec_path, idx_path)
    assert [(b.index, b.key) for b in bad] == [(DAMAGED, DAMAGED), (EMPTY, EMPTY)]
    offsets = {int(k): int(o) for k, o in (line.split("\t") for line in open(idx_path))}
    assert [b.offset for b in bad] == [offsets[DAMAGED], offsets[EMPTY]]
    assert all("cannot decode" in b.reason for b in bad)
    cached = json.load(open(rec_path + ".bad.json"))
    assert cached["identity"]["rec_size"] == os.path.getsize(rec_path) and len(cached["bad"]) == 2

    from resnest_gluon.data import bad_records

    monkeypatch.setattr(bad_records, "check", lambda *a, **k: pytest.fail("scanned twice"))
    assert scan_bad_records(rec_path, idx_path) == bad  # from the cache
    os.utime(rec_path, ns=(0, 0))  # a changed file is scanned again
    with pytest.raises(pytest.fail.Exception, match="scanned twice"):
        scan_bad_records(rec_path, idx_path)


def test_copy_without_bad_records_has_every_good_record_and_only_those(rec):
    rec_path, idx_path = rec
    bad = scan_bad_records(rec_path, idx_path)
    out_rec, out_idx = bad_records.records_without_bad(rec_path, idx_path, bad)
    assert out_rec != rec_path and os.path.dirname(out_rec) == os.path.dirname(rec_path)
    good = [i for i in range(N) if i not in (DAMAGED, EMPTY)]
    assert sorted(labels_of(None, path_imgrec=out_rec, path_imgidx=out_idx, shuffle=True)) == good
    reader = mx.recordio.MXIndexedRecordIO(out_idx, out_rec, "r")
    assert reader.keys == good and mx.recordio.unpack(reader.read_idx(8))[0].label == 8
    assert bad_records.records_without_bad(rec_path, idx_path, bad) == (out_rec, out_idx)  # made once
    assert bad_records.records_without_bad(rec_path, idx_path, []) == (rec_path, idx_path)


@pytest.mark.parametrize("world", [1, 2])
def test_fast_path_skips_bad_records_with_equal_steps(rec, world):
    rec_path, idx_path = rec
    iters = [RecordTrainIter(rec_path, batch_size=4, data_shape=16, num_workers=1, rank=r, world=world,
                             skip_bad=True) for r in range(world)]
    assert {it.steps for it in iters} == {(N - 2) // (world * 4)}
    assert [(b.index, b.offset > 0) for b in iters[0].bad_records] == [(DAMAGED, True), (EMPTY, True)]
    for it in iters:
        labels = [int(v) for _, y in it for v in y.asnumpy()]
        assert len(labels) == it.steps * 4 and not {DAMAGED, EMPTY} & set(labels)
        assert it.take_bad() == []


def test_fast_path_without_skipping_dies_on_them(rec):
    rec_path, _ = rec
    with pytest.raises(mx.base.MXNetError, match="empty"):  # from its decoding thread: at construction or later
        for _ in RecordTrainIter(rec_path, batch_size=4, data_shape=16, num_workers=1, shuffle=False):
            pass


def test_loader_replaces_bad_records_by_the_next_and_reports_them(rec):
    rec_path, _ = rec
    loader = RecordTrainLoader(rec_path, batch_size=5, input_size=16, num_workers=1, rank=0, world=1, shuffle=False)
    labels, reported = [], []
    for x, y in loader:
        assert x.shape == (5, 3, 16, 16)
        labels += [int(v) for v in y.asnumpy()]
        reported += loader.take_bad()
    assert sorted(reported) == [DAMAGED, EMPTY]
    assert labels == [i + 1 if i in (DAMAGED, EMPTY) else i for i in range(N)]  # the next record stands in
    assert loader.dataset.problem(DAMAGED)[:2] == (DAMAGED, loader.dataset._record.idx[DAMAGED])
    assert "not a decodable image" in loader.dataset.problem(EMPTY)[2]


def test_bad_records_stop_the_run_above_both_the_share_and_the_count():
    share_only = BadRecordLimit(fraction=0.001, count=0)
    check_bad_fraction(1, 1000, share_only, "t.rec")
    with pytest.raises(TooManyBadRecords, match=r"t.rec: 2 of 1000 records .*0.20% > --max-bad-records-fraction "
                                                r"0.001 and > --max-bad-records 0"):
        check_bad_fraction(2, 1000, share_only, "t.rec")
    default = BadRecordLimit()  # 0.1 % and 10 records
    check_bad_fraction(2, 1437, default, "t.rec")  # 0.14 % of a small set: a few damaged images pass
    check_bad_fraction(10, 1437, default, "t.rec")
    with pytest.raises(TooManyBadRecords):
        check_bad_fraction(11, 1437, default, "t.rec")
    check_bad_fraction(900, 1_000_000, default, "t.rec")  # many, but a small share of a large set
    with pytest.raises(TooManyBadRecords):
        check_bad_fraction(1001, 1_000_000, default, "t.rec")


def test_scan_also_flags_images_only_opencv_rejects(tmp_path):
    """A GIF: PIL (recordio_tools check) decodes it, OpenCV, ImageRecordIter's decoder, does not."""
    import io

    from PIL import Image

    rec_path, idx_path, _ = recgen.make_rec(str(tmp_path / "gif"), 6, img_fmt=".jpg")
    gif = io.BytesIO()
    Image.new("RGB", (20, 20), (200, 10, 10)).save(gif, "GIF")
    writer = mx.recordio.MXIndexedRecordIO(idx_path, rec_path, "w")
    for i in range(6):
        img = recgen.make_image(i, 30, 30)
        payload = gif.getvalue() if i == 2 else mx.recordio.pack_img(mx.recordio.IRHeader(0, i, i, 0), img,
                                                                    img_fmt=".jpg")[24:]
        writer.write_idx(i, mx.recordio.pack(mx.recordio.IRHeader(0, i, i, 0), payload))
    writer.close()
    assert [(b.index, "OpenCV" in b.reason) for b in scan_bad_records(rec_path, idx_path)] == [(2, True)]


def test_the_scan_pool_ends_under_trainings_signal_handlers(rec):
    """Forked scan workers inherit training's preemption handler (SIGTERM only sets a flag); the pool must still end
    (it hung ``train_imagenet.py -j 4`` before its workers restored the default action)."""
    import subprocess

    code = ("import sys\n"
            "from resnest_gluon.data.bad_records import scan_bad_records\n"
            "from resnest_gluon.training.preemption import StopSignals\n"
            "with StopSignals():\n"
            "    bad = scan_bad_records(sys.argv[1], sys.argv[2], 2)\n"
            "print(sorted(b.index for b in bad))\n")
    done = subprocess.run([sys.executable, "-c", code, *rec], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == f"[{DAMAGED}, {EMPTY}]", done.stderr[-2000:]


def test_records_with_broken_framing_are_left_out_by_both_paths(tmp_path):
    """A zeroed magic word and a length field that runs into the next record: the scan reads past them (the .idx
    says where the next record starts) and lists them beside the undecodable ones, the fast path trains on the copy
    without them, the loader path replaces them by the next record."""
    rec_path, idx_path, _ = recgen.make_rec(str(tmp_path / "train"), N, img_fmt=".jpg", damaged=(DAMAGED,))
    offsets = recgen.break_framing(rec_path, idx_path, [12]) + recgen.break_framing(rec_path, idx_path, [25],
                                                                                       how="length")
    bad = scan_bad_records(rec_path, idx_path)
    assert [(b.index, b.key) for b in bad] == [(DAMAGED, DAMAGED), (12, 12), (25, 25)]
    assert [b.offset for b in bad[1:]] == offsets
    it = RecordTrainIter(rec_path, batch_size=3, data_shape=16, num_workers=1, shuffle=False, skip_bad=True)
    assert sorted(int(v) for _, y in it for v in y.asnumpy()) == [i for i in range(N) if i not in (DAMAGED, 12, 25)]
    loader = RecordTrainLoader(rec_path, batch_size=5, input_size=16, num_workers=1, rank=0, world=1, shuffle=False)
    reported = []
    for _ in loader:
        reported += loader.take_bad()
    assert sorted(reported) == [DAMAGED, 12]  # record 25 still decodes: its JPEG ends before the extra 64 bytes
    assert "unreadable record framing" in loader.dataset.problem(12)[2]


def test_records_with_a_damaged_header_are_left_out_by_both_paths(tmp_path):
    """Framing whole, header not: too many extra labels (numpy would raise reading them) or a NaN label (the loss
    would turn NaN). The scan lists them, the fast path trains without them, the loader path replaces them."""
    rec_path, idx_path, _ = recgen.make_rec(str(tmp_path / "train"), N, img_fmt=".jpg")
    offsets = recgen.break_header(rec_path, idx_path, [5]) + recgen.break_header(rec_path, idx_path, [19], how="label")
    bad = scan_bad_records(rec_path, idx_path)
    assert [(b.index, b.key, b.offset) for b in bad] == [(5, 5, offsets[0]), (19, 19, offsets[1])]
    assert all(b.reason.startswith("damaged header") for b in bad)
    it = RecordTrainIter(rec_path, batch_size=4, data_shape=16, num_workers=1, shuffle=False, skip_bad=True)
    assert sorted(int(v) for _, y in it for v in y.asnumpy()) == [i for i in range(N) if i not in (5, 19)]
    loader = RecordTrainLoader(rec_path, batch_size=5, input_size=16, num_workers=1, rank=0, world=1, shuffle=False)
    reported, labels = [], []
    for _, y in loader:
        reported += loader.take_bad()
        labels += y.asnumpy().tolist()
    assert sorted(reported) == [5, 19] and all(np.isfinite(labels))
    assert "label nan is not a number" in loader.dataset.problem(19)[2]
