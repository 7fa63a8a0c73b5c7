"""The quick start-of-training check: a cut .rec, a wrong .idx or a bad label is refused by name, no image decoded."""
import os
import shutil
import subprocess
import sys

import mxnet as mx
import pytest

sys.path.insert(0, os.path.dirname(__file__))
import recgen  # noqa: E402
from resnest_gluon.data import checking  # noqa: E402
from resnest_gluon.data.preflight import BadRecordFile, preflight  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "scripts", "train_imagenet.py")
MAGIC = (0xCED7230A).to_bytes(4, "little")


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """12 JPEG records labelled 0..11 (``recgen``)."""
    rec, idx, _ = recgen.make_rec(str(tmp_path_factory.mktemp("good") / "data"), 12, img_fmt=".jpg")
    return rec, idx


def copy(good, tmp_path, name="data"):
    rec, idx = (str(tmp_path / (name + ext)) for ext in (".rec", ".idx"))
    shutil.copy(good[0], rec)
    shutil.copy(good[1], idx)
    return rec, idx


def idx_lines(idx):
    with open(idx) as f:
        return [line.split("\t") for line in f.read().splitlines()]


def write_idx(idx, rows):
    with open(idx, "w") as f:
        f.writelines(f"{k}\t{int(o)}\n" for k, o in rows)


def refused(rec, idx=None, num_classes=None):
    with pytest.raises(BadRecordFile) as err:
        preflight(rec, idx, num_classes)
    return str(err.value)


def test_a_good_file_passes_with_and_without_its_idx_and_agrees_with_the_full_check(good, tmp_path):
    summary = preflight(good[0], num_classes=12)  # the .idx beside it is found
    assert (summary.records, summary.label_min, summary.label_max, summary.idx) == (12, 0, 11, good[1])
    assert summary.file_bytes == os.path.getsize(good[0])
    rec, idx = copy(good, tmp_path)
    os.remove(idx)
    assert preflight(rec).records == 12 == checking.check(rec, progress=False)["records"]


def test_a_truncated_rec_names_the_last_record_and_its_offset(good, tmp_path):
    rec, idx = copy(good, tmp_path)
    last_offset = int(idx_lines(idx)[-1][1])
    with open(rec, "r+b") as f:
        f.truncate(os.path.getsize(rec) - 100)
    msg = refused(rec)
    assert msg.startswith(rec) and "record #11 (.idx key 11" in msg and f"offset {last_offset}" in msg
    assert "cut short" in msg
    os.remove(idx)  # the same without an index
    assert "record #11 at byte offset %d" % last_offset in refused(rec)


def test_an_idx_pointing_past_the_end_is_refused(good, tmp_path):
    rec, idx = copy(good, tmp_path)
    rows = idx_lines(idx)
    rows[5][1] = str(os.path.getsize(rec) + 4096)  # e.g. the .idx of a longer file
    write_idx(idx, rows)
    msg = refused(rec)
    assert f"{idx} line 6 (key 5) points at byte offset {rows[5][1]}, beyond the end of the file" in msg


def test_idx_offsets_that_do_not_match_the_rec_are_refused(good, tmp_path):
    rec, idx = copy(good, tmp_path)
    rows = idx_lines(idx)
    shifted = [r[:] for r in rows]
    shifted[3][1] = str(int(rows[3][1]) + 8)  # inside record 3, not at its start
    write_idx(idx, shifted)
    msg = refused(rec)
    assert f"record #3 (.idx key 3, {idx} line 4)" in msg and "not a record start" in msg
    write_idx(idx, rows[:3] + rows[4:])  # an entry missing in the middle: fewer entries than records
    assert "a record missing from the .idx" in refused(rec)
    write_idx(idx, rows[:-1])  # the last entry missing
    assert "records missing from the .idx" in refused(rec)
    write_idx(idx, rows + [["99", rows[2][1]]])  # one entry more than records (a duplicate offset)
    assert "duplicate offset" in refused(rec)
    write_idx(idx, rows[:2] + [["x", "0"]])
    assert f"{idx} line 3" in refused(rec)


def test_a_label_outside_num_classes_is_refused_by_record(good):
    msg = refused(good[0], num_classes=10)
    assert "record #10 (.idx key 10" in msg and "label 10 is outside --num-classes 10" in msg


def test_a_record_split_at_an_embedded_magic_word_is_walked_whole(tmp_path):
    prefix = str(tmp_path / "split")
    writer = mx.recordio.MXIndexedRecordIO(prefix + ".idx", prefix + ".rec", "w")
    for i in range(3):  # the payload holds RecordIO's magic word: MXNet writes the record in several parts
        writer.write_idx(i, mx.recordio.pack(mx.recordio.IRHeader(0, float(i), i, 0), MAGIC * 3 + b"jpeg" * 10))
    writer.close()
    assert preflight(prefix + ".rec", num_classes=3).records == 3
    assert checking.check(prefix, progress=False)["records"] == 3
    with open(prefix + ".rec", "r+b") as f:
        f.truncate(os.path.getsize(prefix + ".rec") - 8)
    assert "record #2" in refused(prefix + ".rec")


def test_the_training_script_refuses_a_truncated_rec_before_training(good, tmp_path):
    rec, _ = copy(good, tmp_path, "train")
    with open(rec, "r+b") as f:
        f.truncate(os.path.getsize(rec) - 100)
    proc = subprocess.run([sys.executable, SCRIPT, "--rec-train", rec, "--model", "resnest14", "--input-size", "32",
                           "--batch-size", "8", "--num-classes", "12", "--no-cuda", "--no-auto-aug", "-j", "1",
                           "--save-dir", str(tmp_path / "run")], capture_output=True, text=True, timeout=120,
                          cwd=REPO)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert f"error: {rec}: record #11 (.idx key 11" in proc.stderr and "cut short" in proc.stderr
    assert not os.path.exists(tmp_path / "run" / "metrics.jsonl") or "epoch" not in open(
        tmp_path / "run" / "metrics.jsonl").read()


def test_check_data_decodes_first_and_lists_bad_records(tmp_path):
    rec, _, _ = recgen.make_rec(str(tmp_path / "train"), 10, img_fmt=".jpg", corrupt=(3, 7))
    proc = subprocess.run([sys.executable, SCRIPT, "--rec-train", rec, "--model", "resnest14", "--input-size", "32",
                           "--batch-size", "8", "--num-classes", "10", "--no-cuda", "--no-auto-aug", "-j", "2",
                           "--check-data", "--save-dir", str(tmp_path / "run")], capture_output=True, text=True,
                          timeout=120, cwd=REPO)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "--check-data: bad records, not training" in proc.stderr
    assert f"--rec-train {rec}: BAD record #3 (id 3)" in proc.stderr and "record #7 (id 7)" in proc.stderr


def test_records_with_broken_framing_are_read_past_when_the_idx_says_where_the_next_starts(good, tmp_path):
    """A bad block inside the file damages records, not the file: with its .idx each is listed (position, key,
    offset, reason) for training to leave out; without one nothing says where to read on, so it is refused."""
    rec, idx = copy(good, tmp_path)
    offsets = recgen.break_framing(rec, idx, [4, 5, 11])  # two neighbours and the last record
    offsets += recgen.break_framing(rec, idx, [8], how="length")
    summary = preflight(rec, num_classes=12)
    assert summary.records == 12
    assert [d[:3] for d in summary.damaged] == [(4, 4, offsets[0]), (5, 5, offsets[1]), (8, 8, offsets[3]),
                                                (11, 11, offsets[2])]
    assert "no RecordIO framing" in summary.damaged[0][3] and "the next .idx entry is at byte" in summary.damaged[2][3]
    os.remove(idx)
    assert f"record #4 at byte offset {offsets[0]}: not the start of a record" in refused(rec)


def test_a_damaged_header_with_whole_framing_is_listed_not_refused(good, tmp_path):
    """A flag promising a billion extra labels (the check reads none of them) or a NaN label: the record is damaged,
    the file is not, with or without its .idx; a whole header with a label beyond --num-classes is still refused."""
    rec, idx = copy(good, tmp_path)
    offsets = recgen.break_header(rec, idx, [3]) + recgen.break_header(rec, idx, [7], how="label")
    summary = preflight(rec, num_classes=12)
    assert [d[:3] for d in summary.damaged] == [(3, 3, offsets[0]), (7, 7, offsets[1])]
    assert "it says 1073741824 labels follow it" in summary.damaged[0][3]
    assert "label nan is not a number" in summary.damaged[1][3]
    assert (summary.records, summary.label_min, summary.label_max) == (12, 0, 11)
    os.remove(idx)
    assert [d[:3] for d in preflight(rec, num_classes=12).damaged] == [(3, None, offsets[0]), (7, None, offsets[1])]
    assert "label 11 is outside --num-classes 11" in refused(rec, num_classes=11)
    rec, idx = copy(good, tmp_path, "all")
    recgen.break_header(rec, idx, range(12), how="label")
    assert "no usable record (the first: damaged header: label nan" in refused(rec)


def test_an_idx_at_no_record_start_is_refused_not_read_past(good, tmp_path):
    rec, idx = copy(good, tmp_path)
    write_idx(idx, [(k, int(o) + 8) for k, o in idx_lines(idx)])
    assert "not a record start" in refused(rec)
    rec, idx = copy(good, tmp_path, "all")
    recgen.break_framing(rec, idx, range(12))  # nowhere to read on: the file is refused at its first record
    assert "record #0 (.idx key 0" in refused(rec)
