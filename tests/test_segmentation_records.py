"""recordio_tools pack-segmentation: Pascal VOC / ADE20K folders -> image + mask records, read back by
SegmentationRecordDataset and checked by check/inspect.

Tiny generated folders (40x32 images, palette masks for VOC, values 1..K for ADE20K) carry one of each kind of bad
input (corrupt JPEG, RGB mask, mask of another size, class value out of range, missing mask); every packed mask is
compared with its source after the dataset's convention is applied (VOC as is, ADE20K value - 1 with 0 -> 255).
"""
import io
import json
import os

import cv2
import mxnet as mx
import numpy as np
import pytest
from PIL import Image

from recordio_tools import segmentation
from recordio_tools.__main__ import main
from resnest_gluon.data import checking
from resnest_gluon.data.records import CorruptRecordError
from resnest_gluon.data.segmentation_records import (IGNORE, MASK_IGNORE, SegmentationRecordDataset,
                                                     decode_segmentation_record, encode_segmentation_record,
                                                     is_segmentation_label)

W, H = 40, 32
VOC_NAMES = ["background", "cat", "dog", "bird"]


def run_main(capsys, *args):
    status = main([str(a) for a in args])
    out = capsys.readouterr()
    return status, out.out + out.err


def _image(seed, w=W, h=H):
    rng = np.random.RandomState(seed)
    arr = np.empty((h, w, 3), np.uint8)
    arr[:] = rng.randint(0, 256, 3)
    arr[h // 4: h // 2, w // 4: w // 2] = rng.randint(0, 256, 3)
    return arr


def _mask(seed, values, w=W, h=H):
    """Blocks of the given values, plus a 1-pixel line of the last value (VOC's 255 boundary)."""
    rng = np.random.RandomState(100 + seed)
    mask = np.full((h, w), values[0], np.uint8)
    for v in values[1:-1]:
        y, x = rng.randint(0, h - 8), rng.randint(0, w - 8)
        mask[y: y + 8, x: x + 10] = v
    mask[h // 2, :] = values[-1]
    return mask


def _palette_png(path, mask):
    im = Image.fromarray(mask, "P")
    palette = np.zeros((256, 3), np.uint8)
    palette[1:4] = [[128, 0, 0], [0, 128, 0], [128, 128, 0]]
    palette[255] = [224, 224, 192]
    im.putpalette(palette.ravel().tolist())
    im.save(path)


# VOC: id -> (kind, mask values); the good ones are packed, each bad one skipped with its reason
VOC = {
    "a": ("good", [0, 1, 2, 255]),
    "b": ("good", [0, 3, 255]),
    "c": ("good", [1, 2, 3, 0]),
    "d": ("corrupt_jpeg", [0, 1, 255]),
    "e": ("rgb_mask", [0, 1, 255]),
    "f": ("other_size", [0, 1, 255]),
    "g": ("bad_class", [0, 7, 255]),
    "h": ("no_mask", [0, 1, 255]),
}
VOC_SKIPS = {"d": {"corrupt", "not_an_image", "truncated"}, "e": {"mask_not_single_channel"},
             "f": {"size_mismatch"}, "g": {"unknown_class"}, "h": {"mask_missing"}}


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    root = tmp_path_factory.mktemp("voc")
    for d in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / d).mkdir(parents=True)
    masks = {}
    for seed, (image_id, (kind, values)) in enumerate(VOC.items()):
        jpg = root / "JPEGImages" / (image_id + ".jpg")
        if kind == "corrupt_jpeg":
            jpg.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
        else:
            Image.fromarray(_image(seed)).save(str(jpg), quality=95)
        mask = _mask(seed, values, *((W + 4, H) if kind == "other_size" else (W, H)))
        png = str(root / "SegmentationClass" / (image_id + ".png"))
        if kind == "rgb_mask":
            Image.fromarray(np.repeat(mask[:, :, None], 3, axis=2)).save(png)
        elif kind != "no_mask":
            _palette_png(png, mask)
        masks[image_id] = mask
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("\n".join(VOC) + "\n")
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("b\na\n")
    (root / "classes.txt").write_text("\n".join(VOC_NAMES) + "\n")  # SOURCE/classes.txt: the default names
    return str(root), masks


# ADE20K: stem -> (kind, mask values: class + 1, 0 unlabelled)
ADE = {
    "ADE_train_00000001": ("good", [1, 2, 5, 0]),
    "ADE_train_00000002": ("good", [3, 0]),
    "ADE_train_00000003": ("good", [2, 4, 1]),
    "ADE_train_00000004": ("bad_class", [1, 151, 0]),  # 151 = class 150: the 150 names cover 0-149
    "ADE_train_00000005": ("no_image", [1, 0]),
}


@pytest.fixture(scope="module")
def ade(tmp_path_factory):
    root = tmp_path_factory.mktemp("ADEChallengeData2016")
    for d in ("images/training", "annotations/training", "images/validation", "annotations/validation"):
        (root / d).mkdir(parents=True)
    masks = {}
    for seed, (stem, (kind, values)) in enumerate(ADE.items()):
        if kind != "no_image":
            Image.fromarray(_image(seed)).save(str(root / "images" / "training" / (stem + ".jpg")), quality=95)
        mask = _mask(seed, values)
        Image.fromarray(mask, "L").save(str(root / "annotations" / "training" / (stem + ".png")))
        masks[stem] = mask
    Image.fromarray(_image(9)).save(str(root / "images" / "validation" / "ADE_val_00000001.jpg"))
    Image.fromarray(_mask(9, [4, 0]), "L").save(str(root / "annotations" / "validation" / "ADE_val_00000001.png"))
    return str(root), masks


def read_back(prefix):
    """{header id: (image, mask)} through SegmentationRecordDataset."""
    ds = SegmentationRecordDataset(prefix + ".rec")
    out = {}
    for i in range(len(ds)):
        image, mask = ds[i]
        assert image.dtype == np.uint8 and image.shape[2] == 3 and mask.dtype == np.uint8
        out[ds.keys[i]] = (image, mask)
    return ds, out


@pytest.fixture(scope="module")
def voc_packed(voc, tmp_path_factory):
    root, _ = voc
    prefix = str(tmp_path_factory.mktemp("out") / "voc")
    assert main(["pack-segmentation", root, prefix, "--format", "voc", "--num-workers", "1", "--no-progress",
                 "-q"]) == 0
    return prefix, json.load(open(prefix + ".report.json"))


def test_voc_masks_read_back_identical_and_bad_pairs_named(voc, voc_packed):
    root, masks = voc
    prefix, report = voc_packed
    ids = list(VOC)
    ds, got = read_back(prefix)
    good = [i for i, (kind, _) in VOC.items() if kind == "good"]
    assert sorted(got) == sorted(ids.index(i) for i in good)  # header id / .idx key = position in the split list
    for image_id in good:
        image, mask = got[ids.index(image_id)]
        assert image.shape == (H, W, 3)
        assert np.array_equal(mask, masks[image_id])  # VOC: stored as it is (255 stays 255)
        source = np.asarray(Image.open(os.path.join(root, "JPEGImages", image_id + ".jpg")).convert("RGB"))
        assert np.abs(image.astype(int) - source).mean() < 8  # re-encoded JPEG of the same picture
    assert ds.class_names == VOC_NAMES and open(prefix + "_classes.txt").read().split("\n")[:4] == VOC_NAMES
    skipped = {os.path.splitext(os.path.basename(s["path"]))[0]: s for s in report["skipped"]}
    assert set(skipped) == set(VOC_SKIPS)
    for image_id, reasons in VOC_SKIPS.items():
        assert skipped[image_id]["reason"] in reasons, skipped[image_id]
        assert skipped[image_id]["index"] == ids.index(image_id)
    assert "palette images whose index is the class" in skipped["e"]["detail"]
    assert "mask value(s) 7" in skipped["g"]["detail"] and "4 class names" in skipped["g"]["detail"]
    assert "44x32" in skipped["f"]["detail"]
    assert report["packed"] == 3 and report["listed"] == 8
    assert report["classes"] == VOC_NAMES and report["format"] == "voc"
    expected = np.zeros(256, np.int64)
    for image_id in good:
        expected += np.bincount(masks[image_id].ravel(), minlength=256)
    assert report["class_pixels"] == {n: int(expected[i]) for i, n in enumerate(VOC_NAMES)}
    assert report["ignored_pixels"] == int(expected[255])
    assert "255" in report["label_convention"]["record"]
    # load(): int64 labels with IGNORE (-1) where the mask is 255
    image, labels = ds.load(0)
    assert labels.dtype == np.int64 and IGNORE == -1
    assert np.array_equal(labels == -1, masks["a"] == 255) and np.array_equal(labels[labels >= 0],
                                                                             masks["a"][masks["a"] != 255])
    assert np.array_equal(ds.labels(0), labels)  # the mask alone, for class statistics
    assert ds.name(0) == ds.where(0) and "record #0" in ds.name(0)


def test_ade20k_shifted_default_names_and_split_val(ade, tmp_path, capsys):
    root, masks = ade
    prefix = str(tmp_path / "ade")
    status, out = run_main(capsys, "pack-segmentation", root, prefix, "--format", "ade20k", "--num-workers", 2,
                           "--no-progress")
    assert status == 0, out
    report = json.load(open(prefix + ".report.json"))
    names = open(prefix + "_classes.txt").read().splitlines()
    assert len(names) == 150 and names[0] == "wall" and names[-1] == "flag"  # GluonCV's list, shipped
    stems = sorted(ADE)
    ds, got = read_back(prefix)
    good = [s for s, (kind, _) in ADE.items() if kind == "good"]
    assert sorted(got) == [stems.index(s) for s in good]
    for stem in good:
        source = masks[stem].astype(np.int64)
        expected = np.where(source == 0, 255, source - 1)
        assert np.array_equal(got[stems.index(stem)][1], expected)
    skipped = {os.path.basename(s["path"]): s["reason"] for s in report["skipped"]}
    assert skipped == {"ADE_train_00000004.jpg": "unknown_class", "ADE_train_00000005.jpg": "missing"}
    assert "class(es) 150" in out and "ADE20K: mask value = class + 1" in out  # the summary names the skips
    assert "class index + 1, 0 = unlabelled" in report["label_convention"]["source"]
    prefix_val = str(tmp_path / "ade_val")
    assert main(["pack-segmentation", root, prefix_val, "--format", "ade20k", "--split", "validation",
                 "--num-workers", "1", "--no-progress", "-q"]) == 0
    _, got = read_back(prefix_val)
    assert len(got) == 1 and set(np.unique(got[0][1])) == {3, 255}


def test_resize_keeps_mask_values_and_workers_give_identical_output(voc, voc_packed, tmp_path, capsys):
    root, masks = voc
    outs = []
    for workers in (1, 2):
        prefix = str(tmp_path / ("r%d" % workers))
        status, out = run_main(capsys, "pack-segmentation", root, prefix, "--format", "voc", "--resize", 13,
                               "--encoding", ".png", "--num-workers", workers, "--no-progress")
        assert status == 0, out
        outs.append([open(prefix + ext, "rb").read() for ext in (".rec", ".idx", "_classes.txt")])
    assert outs[0] == outs[1]
    _, got = read_back(str(tmp_path / "r1"))
    ids = list(VOC)
    for key, (image, mask) in got.items():
        assert image.shape[:2] == mask.shape == (13, 16)  # 40x32 -> shorter side 13 (floor 40 * 13 / 32)
        assert set(np.unique(mask)) <= set(np.unique(masks[ids[key]]))  # nearest: no new values
    # 2 workers, no resize: what 1 worker wrote
    prefix = str(tmp_path / "w2")
    assert main(["pack-segmentation", root, prefix, "--format", "voc", "--num-workers", "2", "--no-progress",
                 "-q"]) == 0
    for ext in (".rec", ".idx", ".report.json"):
        if ext == ".report.json":
            a, b = (json.load(open(p + ext)) for p in (prefix, voc_packed[0]))
            for d in (a, b):
                d.pop("seconds"), d.pop("images_per_second"), d["options"].pop("num_workers")
            assert a == b
        else:
            assert open(prefix + ext, "rb").read() == open(voc_packed[0] + ext, "rb").read()


def test_check_and_inspect_pass_on_good_records(voc_packed, capsys, tmp_path):
    prefix, _ = voc_packed
    status, out = run_main(capsys, "inspect", prefix, "--no-progress", "--json", tmp_path / "s.json")
    assert status == 0, out
    s = json.load(open(tmp_path / "s.json"))
    g = s["segmentation"]
    assert s["records"] == 3 and s["ok"] and g["masks"] == 3 and g["classes_present"] == 4 and g["num_classes"] == 4
    assert set(g["class_share"]) == set(VOC_NAMES) and abs(sum(g["class_share"].values()) - 1) < 1e-4
    assert s["image_width"] == [W, W] and s["image_height"] == [H, H] and s["detection"] is None
    assert "segmentation masks: 3 decoded, 4 classes present of 4" in out and "class pixel shares: " in out
    assert "background:" in out
    status, out = run_main(capsys, "check", prefix, "--no-progress", "--num-workers", 2)
    assert status == 0 and out.rstrip().endswith("OK"), out


def _jpeg(arr):
    return cv2.imencode(".jpg", arr[:, :, ::-1])[1].tobytes()


def _png(mask):
    return cv2.imencode(".png", mask)[1].tobytes()


def test_check_names_damaged_records_written_by_hand(tmp_path, capsys):
    prefix = str(tmp_path / "bad")
    image, mask = _image(0), _mask(0, [0, 1, 255])
    good_mask = _png(mask)
    damaged = good_mask[:8] + b"\x00" * 20 + good_mask[28:]  # IHDR overwritten: not a decodable PNG
    records = [_png(mask), damaged, _png(_mask(0, [0, 1, 255], W + 2, H)), _png(_mask(0, [0, 5, 255])),
               cv2.imencode(".png", np.dstack([mask] * 3))[1].tobytes()]
    writer = mx.recordio.MXIndexedRecordIO(prefix + ".idx", prefix + ".rec", "w")
    for i, m in enumerate(records):
        writer.write_idx(i, encode_segmentation_record(i, _jpeg(image), m))
    writer.close()
    (tmp_path / "bad_classes.txt").write_text("a\nb\nc\n")
    status, out = run_main(capsys, "check", prefix, "--no-progress")
    assert status == 1, out
    bad = [line for line in out.splitlines() if line.startswith("BAD")]
    assert len(bad) == 4, out
    assert bad[0].startswith("BAD record #1 (id 1)") and "mask not decodable" in bad[0]
    assert bad[1].startswith("BAD record #2 (id 2)") and "mask of 42x32 pixels for an image of 40x32" in bad[1]
    assert bad[2].startswith("BAD record #3 (id 3)") and "class value(s) 5 outside the 3 classes" in bad[2]
    assert bad[3].startswith("BAD record #4 (id 4)") and "3 channel(s)" in bad[3]
    assert "2 classes present of 3" in out and ", 5:" in out  # a value outside the classes: shown by number
    status, out = run_main(capsys, "inspect", prefix, "--no-progress", "--num-classes", 10)
    assert status == 1 and "class value(s) 5" not in out  # --num-classes 10 covers class 5
    # the reader names the record too
    ds = SegmentationRecordDataset(prefix + ".rec")
    assert ds.class_names == ["a", "b", "c"]
    with pytest.raises(CorruptRecordError, match=r"bad\.rec record #1 \(key 1.*mask not decodable"):
        ds[1]


def test_record_format_and_decoding_errors():
    image, mask = _image(1), _mask(1, [0, 2, 255])
    payload = encode_segmentation_record(7, _jpeg(image), _png(mask))
    header, _ = mx.recordio.unpack(payload)
    assert header.flag == 2 and header.label.tolist() == [-2.0, 255.0] and header.id == 7
    assert header.id2 == len(_jpeg(image)) and MASK_IGNORE == 255
    assert is_segmentation_label(header.label) and not is_segmentation_label([3.0]) and \
        not is_segmentation_label([2, 6, 0, 0.1, 0.1, 0.5, 0.5, 0])
    got_image, got_mask = decode_segmentation_record(payload, "x")
    assert np.array_equal(got_mask, mask) and got_image.shape == image.shape
    assert Image.open(io.BytesIO(_png(mask))).mode == "L"
    assert len(segmentation.VOC_CLASSES) == 21 and segmentation.VOC_CLASSES[-1] == "tvmonitor"
    classification = mx.recordio.pack(mx.recordio.IRHeader(0, 3.0, 1, 0), _jpeg(image))
    with pytest.raises(CorruptRecordError, match="where: not a segmentation record"):
        decode_segmentation_record(classification, "where")
    too_long = mx.recordio.pack(mx.recordio.IRHeader(0, np.array([-2, 255], np.float32), 1, 10 ** 6), b"abc")
    with pytest.raises(CorruptRecordError, match="says the image has 1000000 bytes"):
        decode_segmentation_record(too_long, "where")
    with pytest.raises(CorruptRecordError, match="no mask after the image"):
        decode_segmentation_record(encode_segmentation_record(1, _jpeg(image), b""), "where")
    with pytest.raises(CorruptRecordError, match="not a decodable image"):
        decode_segmentation_record(encode_segmentation_record(1, b"\xff\xd8\xff junk", _png(mask)), "where")


def test_failed_pack_keeps_previous_outputs_and_usage_errors(voc, voc_packed, tmp_path, capsys):
    root, _ = voc
    prefix = str(tmp_path / "keep")
    assert main(["pack-segmentation", root, prefix, "--format", "voc", "--split", "val", "--num-workers", "1",
                 "--no-progress", "-q"]) == 0
    names = [prefix + s for s in (".rec", ".idx", "_classes.txt", ".report.json")]
    before = [open(n, "rb").read() for n in names]
    too_many = tmp_path / "many.txt"
    too_many.write_text("".join("c%d\n" % i for i in range(256)))
    status, out = run_main(capsys, "pack-segmentation", root, prefix, "--format", "voc", "--classes", too_many,
                           "--no-progress")
    assert status == 2 and "256 classes" in out and "at most 255" in out
    one = tmp_path / "one.txt"
    one.write_text("background\n")  # every good mask has class 1..3: all skipped, nothing replaced
    status, out = run_main(capsys, "pack-segmentation", root, prefix, "--format", "voc", "--classes", one,
                           "--split", "val", "--num-workers", 1, "--no-progress")
    assert status == 2 and "nothing packed" in out and "'unknown_class': 2" in out
    status, out = run_main(capsys, "pack-segmentation", root, prefix, "--format", "voc", "--split", "nope",
                           "--no-progress")
    assert status == 2 and "ImageSets/Segmentation/nope.txt" in out
    assert [open(n, "rb").read() for n in names] == before
    assert sorted(os.listdir(tmp_path)) == sorted([os.path.basename(n) for n in names] + ["many.txt", "one.txt"])
    # a plain classification check of these records, forced, still reads them (as before: --no-detection)
    assert checking.check(prefix, progress=False, detection=False)["segmentation"] is None


def test_mask_follows_the_image_exif_rotation(tmp_path):
    """A JPEG with EXIF orientation 6 is stored upright (as pack does); its mask, drawn on the stored pixels (as
    GluonCV's readers pair them), is rotated with it, so every pixel keeps its class."""
    root = tmp_path / "voc"
    for d in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / d).mkdir(parents=True)
    raw = np.zeros((H, W, 3), np.uint8)
    raw[:, : W // 4] = 255  # a white band on the left of the stored pixels
    mask = np.zeros((H, W), np.uint8)
    mask[:, : W // 4] = 1
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(raw).save(str(root / "JPEGImages" / "r.jpg"), quality=95, exif=exif)
    _palette_png(str(root / "SegmentationClass" / "r.png"), mask)
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("r\n")
    prefix = str(tmp_path / "rot")
    report = segmentation.pack_segmentation(str(root), prefix, "voc", num_workers=1, progress=False)
    assert report.packed == 1 and report.converted["exif_rotated"] == 1
    (image, got), = read_back(prefix)[1].values()
    assert image.shape[:2] == got.shape == (W, H)  # upright: 32 wide, 40 high
    assert np.array_equal(got, np.rot90(mask, -1))  # orientation 6: rotate 90 degrees clockwise
    assert (image[got == 1] > 200).all() and (image[got == 0] < 55).all()
