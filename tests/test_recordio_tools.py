"""recordio_tools: class tree -> .lst -> .rec/.idx, with bad files skipped and reported, and integrity checks.

The tree (tests/imagegen.py) has one flat colour per good image, so every packed record can be traced back to
its source file: records are checked one by one against the list (id, label, colour, size).
"""
import glob
import io
import json
import os
import shutil
import subprocess
import sys

import cv2
import mxnet as mx
import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import imagegen  # noqa: E402
import recgen  # noqa: E402

from recordio_tools import atomic, listing, packing  # noqa: E402
from resnest_gluon.data import checking  # noqa: E402
from recordio_tools.__main__ import main  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESIZE = 32
MAX_PIXELS = 40_000  # the 400x300 JPEG is "huge" (decoded at 1/2 scale), the 300x300 PNG is skipped
OPTIONS = packing.PackOptions(resize=RESIZE, max_pixels=MAX_PIXELS)


def cli(*args, check=None):
    """Runs ``python -m recordio_tools ARGS`` from the repo root; asserts the exit status if ``check`` is given."""
    proc = subprocess.run([sys.executable, "-m", "recordio_tools", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    if check is not None:
        assert proc.returncode == check, proc.stdout + proc.stderr
    return proc


def run_main(capsys, *args):
    """The same CLI in-process (no interpreter + MXNet start-up): returns (exit status, stdout + stderr)."""
    status = main([str(a) for a in args])
    out = capsys.readouterr()
    return status, out.out + out.err


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("tree")
    samples = imagegen.make_tree(str(root))
    return str(root), samples


@pytest.fixture(scope="module")
def packed(tree, tmp_path_factory):
    """The tree listed (sorted) and packed with one worker: (list entries, prefix, report)."""
    root, _ = tree
    prefix = str(tmp_path_factory.mktemp("out") / "data")
    lists, _, _ = listing.make_lists(root, prefix)
    report = packing.pack(prefix + ".lst", prefix, root=root, options=OPTIONS, num_workers=1, progress=False)
    return lists[prefix + ".lst"], prefix, report


def read_records(prefix):
    """All records of PREFIX.rec in file order, through the .idx: [(idx key, header, RGB image)]."""
    reader = mx.recordio.MXIndexedRecordIO(prefix + ".idx", prefix + ".rec", "r")
    try:
        out = []
        for key in reader.keys:
            header, bgr = mx.recordio.unpack_img(reader.read_idx(key), cv2.IMREAD_UNCHANGED)
            out.append((key, header, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)))
        return out
    finally:
        reader.close()


def expected_size(w, h):
    """Shorter side -> RESIZE, longer side scaled and floored (im2rec's rule)."""
    return (RESIZE, h * RESIZE // w) if w <= h else (w * RESIZE // h, RESIZE)


def copy_pack(prefix, dst):
    for ext in (".rec", ".idx"):
        shutil.copy(prefix + ext, dst + ext)
    return dst


def idx_offsets(prefix):
    with open(prefix + ".idx") as f:
        return [tuple(int(x) for x in line.split("\t")) for line in f]


# ---------------------------------------------------------------- make-list


def test_make_list_numbers_sorted_folders_and_keeps_empty_class(tree, tmp_path):
    root, samples = tree
    proc = cli("make-list", root, tmp_path / "train", check=0)
    assert "n03_empty" in proc.stdout + proc.stderr  # the empty class is warned about
    with open(tmp_path / "train_classes.txt") as f:
        assert f.read().splitlines() == ["n01_cat", "n02_dog", "n03_empty", "n04_fish"]
    with open(tmp_path / "train.lst") as f:
        rows = [line.rstrip("\n").split("\t") for line in f]
    assert [int(r[0]) for r in rows] == list(range(len(samples)))
    assert {r[2]: float(r[1]) for r in rows} == {p: float(s.label) for p, s in samples.items()}
    assert "n01_cat/b.JPEG" in {r[2] for r in rows}  # extensions match case-insensitively
    assert not any(r[2].endswith(".txt") for r in rows)
    assert {float(r[1]) for r in rows} == {0.0, 1.0, 3.0}  # fish keeps label 3 although class 2 is empty


def test_make_list_split_is_stratified_seeded_and_shuffle_keeps_indices(tree, tmp_path):
    root, samples = tree
    lists, _, _ = listing.make_lists(root, str(tmp_path / "a"), shuffle=True, seed=3, val_ratio=0.34)
    train, val = lists[str(tmp_path / "a_train.lst")], lists[str(tmp_path / "a_val.lst")]
    assert sorted(train + val) == listing.scan_tree(root)[0]  # a partition, indices still attached to paths
    assert not {e.index for e in train} & {e.index for e in val}
    for label in (0.0, 1.0, 3.0):  # every class is in both halves, ~1/3 of it in val
        n_val = sum(e.label == label for e in val)
        n_all = sum(s.label == label for s in samples.values())
        assert n_val == round(n_all * 0.34) and n_val >= 1
    again, _, _ = listing.make_lists(root, str(tmp_path / "b"), shuffle=True, seed=3, val_ratio=0.34)
    assert again[str(tmp_path / "b_val.lst")] == val
    assert listing.read_list(str(tmp_path / "a_val.lst")) == val


def test_read_list_names_file_and_line_of_bad_rows(tmp_path):
    bad = tmp_path / "bad.lst"
    bad.write_text("0\t1.000000\ta.jpg\n1\ta.jpg\n")
    with pytest.raises(listing.ListError, match=r"bad\.lst line 2"):
        listing.read_list(str(bad))
    bad.write_text("0\t1.0\ta.jpg\n0\t2.0\tb.jpg\n")
    with pytest.raises(listing.ListError, match=r"line 2: index 0 already used on line 1"):
        listing.read_list(str(bad))


# ---------------------------------------------------------------- pack


def test_every_record_is_its_list_entry_decoded_to_rgb_at_the_right_size(tree, packed):
    _, samples = tree
    entries, prefix, _ = packed
    good = [e for e in entries if samples[e.path].reason is None]
    records = read_records(prefix)
    assert [key for key, _, _ in records] == [e.index for e in good]  # list order, keyed by list index
    colours = {e.index: np.array(samples[e.path].rgb) for e in good}
    for (key, header, img), entry in zip(records, good):
        sample = samples[entry.path]
        assert header.id == entry.index and header.label == entry.label == sample.label, entry.path
        assert img.ndim == 3 and img.shape[2] == 3, entry.path
        assert (img.shape[1], img.shape[0]) == expected_size(*sample.size), entry.path
        mean = img.reshape(-1, 3).mean(0)
        assert np.abs(mean - colours[key]).max() < 8, (entry.path, mean, sample.rgb)
        nearest = min(colours, key=lambda k: np.abs(mean - colours[k]).sum())
        assert nearest == key, entry.path  # the colour identifies this very file, not a neighbour


def test_report_lists_each_bad_file_with_its_reason(tree, packed):
    _, samples = tree
    entries, prefix, report = packed
    with open(prefix + ".report.json") as f:
        saved = json.load(f)
    bad = {p: s.reason for p, s in samples.items() if s.reason}
    assert {s["path"]: s["reason"] for s in saved["skipped"]} == bad
    assert saved["packed"] == report.packed == len(samples) - len(bad) and saved["listed"] == len(entries)
    assert saved["skip_reasons"] == {"empty_file": 1, "not_an_image": 1, "too_many_pixels": 1, "truncated": 1}
    notes = [s.note for s in samples.values() if s.note]
    assert saved["converted"] == {n: notes.count(n) for n in notes}  # cmyk, grayscale, alpha, palette, 16bit, ...
    assert saved["empty_classes"] == ["n03_empty"]
    by_index = {s["index"]: s["path"] for s in saved["skipped"]}
    assert all(entries[i].path == p for i, p in by_index.items())  # skip indices are list indices


def test_rgba_is_composited_on_white_not_alpha_dropped(tree, packed):
    _, samples = tree
    entries, prefix, _ = packed
    index = next(e.index for e in entries if e.path == "n02_dog/rgba.png")
    img = dict((k, im) for k, _, im in read_records(prefix))[index]
    mean = img.reshape(-1, 3).mean(0)
    assert np.abs(mean - samples["n02_dog/rgba.png"].rgb).max() < 8  # ~ (127, 127, 227), not (0, 0, 200)


def test_pack_with_3_workers_via_cli_is_byte_identical_to_1_worker(tree, packed, tmp_path):
    root, _ = tree
    _, prefix, _ = packed
    proc = cli("pack", prefix + ".lst", tmp_path / "w3", "--root", root, "--resize", RESIZE,
               "--max-pixels", MAX_PIXELS, "--num-workers", 3, "--no-progress", check=0)
    assert "images/s" in proc.stdout + proc.stderr and "skip #4 n01_cat/truncated.jpg: truncated" in proc.stdout
    for ext in (".rec", ".idx"):
        with open(prefix + ext, "rb") as a, open(str(tmp_path / "w3") + ext, "rb") as b:
            assert a.read() == b.read(), ext


def test_pack_a_tree_directly_with_skip_huge_and_png(tree, tmp_path):
    root, samples = tree
    options = packing.PackOptions(resize=0, encoding=".png", max_pixels=MAX_PIXELS, downscale_huge=False)
    report = packing.pack(root, str(tmp_path / "t"), options=options, num_workers=2, progress=False)
    assert os.path.exists(tmp_path / "t.lst") and os.path.exists(tmp_path / "t_classes.txt")
    reasons = {s["path"]: s["reason"] for s in report.skipped}
    assert reasons["n04_fish/big.jpg"] == "too_many_pixels" and reasons["n04_fish/huge.png"] == "too_many_pixels"
    records = {k: (h, im) for k, h, im in read_records(str(tmp_path / "t"))}
    entries = listing.read_list(str(tmp_path / "t.lst"))
    a = next(e for e in entries if e.path == "n01_cat/a.jpg")
    assert records[a.index][1].shape == (48, 64, 3)  # resize 0 keeps the size
    deep = next(e for e in entries if e.path == "n02_dog/deep.png")
    assert (records[deep.index][1] == 195).all()  # PNG is lossless: 50000/65535*255 exactly, all channels


def test_pass_through_keeps_original_jpeg_bytes_and_converts_the_rest(tree, packed, tmp_path):
    root, samples = tree
    entries, prefix, _ = packed
    options = packing.PackOptions(pass_through=True, max_pixels=MAX_PIXELS)
    report = packing.pack(prefix + ".lst", str(tmp_path / "pt"), root=root, options=options, progress=False)
    reader = mx.recordio.MXIndexedRecordIO(str(tmp_path / "pt.idx"), str(tmp_path / "pt.rec"), "r")
    by_path = {e.path: e.index for e in entries}
    with open(os.path.join(root, "n01_cat/a.jpg"), "rb") as f:
        assert mx.recordio.unpack(reader.read_idx(by_path["n01_cat/a.jpg"]))[1] == f.read()
    with open(os.path.join(root, "n01_cat/cmyk.jpg"), "rb") as f:
        assert mx.recordio.unpack(reader.read_idx(by_path["n01_cat/cmyk.jpg"]))[1] != f.read()
    reader.close()
    assert report.passed_through == 4  # a, b, d, e: clean RGB JPEGs; gray/cmyk/big are re-encoded
    with pytest.raises(ValueError, match="--pass-through"):
        packing.PackOptions(pass_through=True, resize=32).validate()


def test_interrupted_pack_leaves_previous_output_intact(tree, packed, tmp_path, monkeypatch):
    root, _ = tree
    _, prefix, _ = packed
    out = copy_pack(prefix, str(tmp_path / "keep"))
    before = {ext: open(out + ext, "rb").read() for ext in (".rec", ".idx")}
    calls = []
    real = packing.encode_entry

    def interrupted(entry):
        calls.append(entry)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real(entry)

    monkeypatch.setattr(packing, "encode_entry", interrupted)
    with pytest.raises(KeyboardInterrupt):
        packing.pack(prefix + ".lst", out, root=root, options=OPTIONS, progress=False)
    monkeypatch.setattr(packing, "encode_entry", real)

    real_replace = os.replace

    def failing_replace(src, dst):  # the .rec is renamed first, then renaming the .idx fails
        if str(dst).endswith(".idx"):
            raise OSError("disk full (simulated)")
        return real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", failing_replace)
    with pytest.raises(OSError, match="simulated"):
        packing.pack(prefix + ".lst", out, root=root, options=packing.PackOptions(resize=40), progress=False)
    monkeypatch.undo()

    assert {ext: open(out + ext, "rb").read() for ext in (".rec", ".idx")} == before
    assert sorted(os.listdir(tmp_path)) == ["keep.idx", "keep.rec"]  # no temp, backup or report left


def test_disk_full_during_pack_keeps_the_previous_rec_and_idx_and_names_them(tree, packed, tmp_path, monkeypatch,
                                                                             capsys):
    root, _ = tree
    _, prefix, _ = packed
    out = copy_pack(prefix, str(tmp_path / "keep"))
    before = {ext: open(out + ext, "rb").read() for ext in (".rec", ".idx")}
    real_write = mx.recordio.MXIndexedRecordIO.write_idx
    written = []

    def filling_disk(self, key, record):  # MXNet's C++ writer fails without errno once the disk is full
        if len(written) == 3:
            raise mx.base.MXNetError("FileStream.Write incomplete")
        written.append(key)
        real_write(self, key, record)

    monkeypatch.setattr(mx.recordio.MXIndexedRecordIO, "write_idx", filling_disk)
    monkeypatch.setattr("resnest_gluon.atomic.free_bytes", lambda path: 0)
    status, text = run_main(capsys, "pack", prefix + ".lst", out, "--root", root, "--resize", RESIZE,
                            "--num-workers", 1, "--no-progress")
    assert status == 4, text
    assert f"error: no space left on device writing {out}.rec + {out}.idx + {out}.report.json: needed about " \
           f"0.0 MB, 0.0 MB free on " in text and "no output file was replaced" in text
    assert {ext: open(out + ext, "rb").read() for ext in (".rec", ".idx")} == before
    assert sorted(os.listdir(tmp_path)) == ["keep.idx", "keep.rec"]


def test_pack_errors_name_the_problem(tree, packed, tmp_path, capsys):
    entries, prefix, _ = packed
    status, out = run_main(capsys, "pack", prefix + ".lst", tmp_path / "x", "--root", tmp_path, "--no-progress")
    assert status == 2 and "nothing packed" in out and "'missing': %d" % len(entries) in out
    assert not os.path.exists(tmp_path / "x.rec")
    (tmp_path / "bad.lst").write_text("0\t0.0\ta.jpg\nzero\t0.0\tb.jpg\n")
    status, out = run_main(capsys, "pack", tmp_path / "bad.lst", tmp_path / "x")
    assert status == 2 and "bad.lst line 2" in out


# ---------------------------------------------------------------- check / inspect


def test_check_and_inspect_accept_a_good_pack(packed, tmp_path):
    entries, prefix, report = packed
    cli("check", prefix, "--num-classes", 4, "--json", tmp_path / "s.json", check=0)
    with open(tmp_path / "s.json") as f:
        summary = json.load(f)
    assert summary["ok"] and summary["records"] == summary["decoded"] == report.packed
    assert summary["label_histogram"] == {"0": 4, "1": 4, "3": 3}



def test_inspect_summarises_from_a_sample(packed, capsys):
    _, prefix, _ = packed
    status, out = run_main(capsys, "inspect", prefix, "--sample", 3, "--no-progress")
    assert status == 0 and "11 records" in out and "decoded 3 images" in out and "0:4, 1:4, 3:3" in out


def test_check_without_idx_reads_sequentially(packed, tmp_path):
    _, prefix, report = packed
    shutil.copy(prefix + ".rec", tmp_path / "seq.rec")
    summary = checking.check(str(tmp_path / "seq"), progress=False)
    assert summary["ok"] and summary["idx"] is None and summary["records"] == report.packed


def test_check_reports_a_record_with_damaged_bytes(packed, tmp_path):
    _, prefix, _ = packed
    out = copy_pack(prefix, str(tmp_path / "flip"))
    key, offset = idx_offsets(out)[3]
    with open(out + ".rec", "r+b") as f:  # 8 bytes RecordIO framing + 24 bytes IRHeader, then the JPEG
        f.seek(offset + 8 + 24)
        f.write(b"\x00\x00\x00\x00")  # SOI marker and first segment gone
    proc = cli("check", out, check=1)
    assert "BAD record #3 (id %d) at offset %d: cannot decode image" % (key, offset) in proc.stdout
    assert proc.stdout.count("BAD") == 1


def test_check_reports_a_truncated_rec(packed, tmp_path):
    _, prefix, report = packed
    out = copy_pack(prefix, str(tmp_path / "cut"))
    key, offset = idx_offsets(out)[-1]
    with open(out + ".rec", "r+b") as f:
        f.truncate(offset + 100)
    summary = checking.check(out, progress=False)
    assert not summary["ok"] and summary["records"] == report.packed - 1
    lines = [checking.describe_problem(b) for b in summary["bad"]]
    assert lines[0].startswith("BAD record #%d at offset %d: unreadable record framing" % (report.packed - 1, offset))
    assert any("key %d -> offset %d): no valid record at this offset" % (key, offset) in ln for ln in lines)


def test_check_reads_past_a_record_with_broken_framing_at_the_next_idx_offset(packed, tmp_path):
    _, prefix, report = packed
    out = copy_pack(prefix, str(tmp_path / "block"))
    key, offset = idx_offsets(out)[2]
    with open(out + ".rec", "r+b") as f:
        f.seek(offset)
        f.write(b"\x00" * 8)  # a zeroed block over its magic word and length
    summary = checking.check(out, progress=False)
    assert not summary["ok"] and summary["records"] == report.packed - 1  # every other record read and decoded
    lines = [checking.describe_problem(b) for b in summary["bad"]]
    assert lines[0].startswith("BAD record #2 at offset %d: unreadable record framing" % offset)
    assert "read on at the next .idx offset %d" % idx_offsets(out)[3][1] in lines[0]
    assert not [ln for ln in lines if "cannot decode" in ln]
    os.remove(out + ".idx")  # without an index nothing says where the next record starts
    assert "the rest of the file cannot be read in order" in checking.describe_problem(
        checking.check(out, progress=False)["bad"][0])


def test_check_lists_a_damaged_header_and_reads_on(packed, tmp_path):
    _, prefix, report = packed
    out = copy_pack(prefix, str(tmp_path / "header"))
    offsets = recgen.break_header(out + ".rec", out + ".idx", [1]) + recgen.break_header(
        out + ".rec", out + ".idx", [4], how="label")
    summary = checking.check(out, progress=False)
    assert not summary["ok"] and summary["records"] == report.packed
    lines = [checking.describe_problem(b) for b in summary["bad"]]
    assert len(lines) == 2, lines  # the .idx still matches; nothing else is wrong
    assert lines[0].startswith("BAD record #1 (id ") and "at offset %d: damaged header: it says 1073741824 labels " \
        "follow it" % offsets[0] in lines[0]
    assert lines[1].startswith("BAD record #4 (id ") and "at offset %d: damaged header: label nan" % offsets[1] in lines[1]


def test_check_reports_a_wrong_idx_offset(packed, tmp_path, capsys):
    _, prefix, _ = packed
    out = copy_pack(prefix, str(tmp_path / "badidx"))
    rows = idx_offsets(out)
    (key2, off2), (key5, off5) = rows[2], rows[5]
    rows[2] = (key2, off2 + 4)  # points into the middle of a record
    rows[5] = (key5, rows[6][1])  # points at the next record, whose header id is another key
    with open(out + ".idx", "w") as f:
        f.writelines("%d\t%d\n" % r for r in rows)
    status, out = run_main(capsys, "check", out, "--sample", 0, "--no-progress")
    assert status == 1
    assert "(key %d -> offset %d): no valid record at this offset" % (key2, off2 + 4) in out
    assert "(key %d -> offset %d): record there has header id %d, not %d" % (
        key5, rows[6][1], rows[6][0], key5) in out
    assert "BAD record #2 (id %d) at offset %d: record not listed" % (key2, off2) in out
    assert "BAD record #5 (id %d) at offset %d: record not listed" % (key5, off5) in out


# ---------------------------------------------------------------- interoperability


def test_image_record_iter_reads_our_rec_in_rgb(tree, packed):
    _, samples = tree
    entries, prefix, report = packed
    good = [e for e in entries if samples[e.path].reason is None]
    it = mx.io.ImageRecordIter(path_imgrec=prefix + ".rec", path_imgidx=prefix + ".idx", data_shape=(3, 32, 32),
                               batch_size=len(good), shuffle=False, preprocess_threads=1)
    batch = next(iter(it))
    data, label = batch.data[0].asnumpy(), batch.label[0].asnumpy()
    assert data.shape == (len(good), 3, 32, 32)
    assert label.tolist() == [e.label for e in good]
    for img, e in zip(data, good):  # channel order is RGB: pack_img got BGR, as it expects
        assert np.abs(img.mean(axis=(1, 2)) - samples[e.path].rgb).max() < 8, e.path


def test_gluon_image_record_dataset_reads_our_rec(tree, packed):
    _, samples = tree
    entries, prefix, _ = packed
    good = [e for e in entries if samples[e.path].reason is None]
    dataset = mx.gluon.data.vision.ImageRecordDataset(prefix + ".rec")
    assert len(dataset) == len(good)
    for i, e in enumerate(good):
        img, label = dataset[i]
        assert label == e.label and img.shape[2] == 3
        assert (img.shape[1], img.shape[0]) == expected_size(*samples[e.path].size)
        assert np.abs(img.asnumpy().reshape(-1, 3).mean(0) - samples[e.path].rgb).max() < 8, e.path


def test_no_temp_files_left_by_packing(packed):
    _, prefix, _ = packed
    assert not glob.glob(prefix + "*.partial") and not glob.glob(prefix + "*.bak-*")


def test_truncated_jpeg_is_rejected_even_if_another_library_relaxed_pil(monkeypatch):
    # gluoncv sets PIL's process-wide LOAD_TRUNCATED_IMAGES at import; decoding must still see the truncation
    from PIL import ImageFile

    from recordio_tools import images

    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    buf = io.BytesIO()
    Image.fromarray(np.random.RandomState(0).randint(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    with pytest.raises(images.ImageRejected) as err:
        images.decode_rgb(buf.getvalue()[: buf.tell() // 2])
    assert err.value.reason == "truncated"
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # the caller's setting is restored


def test_pack_of_a_list_puts_its_class_names_beside_the_rec_for_training(tree, packed, tmp_path):
    root, _ = tree
    _, prefix, _ = packed
    cli("pack", prefix + ".lst", tmp_path / "elsewhere" / "train", "--root", root, "--max-pixels", MAX_PIXELS,
        "--no-progress", check=0)
    with open(tmp_path / "elsewhere" / "train_classes.txt") as f:
        assert f.read().splitlines() == ["n01_cat", "n02_dog", "n03_empty", "n04_fish"]  # the list's own names
