"""recordio_tools pack-detection --masks: one instance mask per kept object after the image, the detection label
unchanged; read back by MaskedDetectionRecordDataset, checked by check/inspect.

Tiny generated sources: a Pascal VOC folder with SegmentationObject palette PNGs (instance value k = the k-th
<object>, 255 on boundaries) and a COCO json with polygons, multi-part polygons, uncompressed RLE (crowd) and
compressed RLE objects, two of them overlapping. Each carries one of each kind of bad mask input. Object pixels are
painted bright on a dark image, so alignment after --resize can be checked against the pixels themselves.
"""
import json
import os
import re

import cv2
import mxnet as mx
import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from recordio_tools import instance_masks
from recordio_tools.__main__ import main
from resnest_gluon.data import checking
from resnest_gluon.data.detection_masks import (MASKS_MAGIC, MaskedDetectionRecordDataset, decode_instance_masks,
                                                decode_masked_detection_record, encode_instance_masks,
                                                encode_masked_detection_record, split_masked_detection_record)
from resnest_gluon.data.records import CorruptRecordError
from resnest_gluon.dense.detection_data import DetectionRecordDataset

from gluoncv.data import RecordFileDetection  # noqa: E402  (after mxnet)

# bright objects on a dark background: JPEG keeps brightness at full resolution (colour at half)
OBJECT, BACKGROUND = (250, 220, 60), (20, 30, 90)


def run_main(capsys, *args):
    status = main([str(a) for a in args])
    out = capsys.readouterr()
    return status, out.out + out.err


def _paint(w, h, masks):
    """A dark image with every mask's pixels bright."""
    img = np.empty((h, w, 3), np.uint8)
    img[:] = BACKGROUND
    for m in masks:
        img[m > 0] = OBJECT
    return img


def _ellipse(w, h, cx, cy, rx, ry):
    yy, xx = np.mgrid[:h, :w]
    return (((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1).astype(np.uint8)


def _rect(w, h, x0, y0, x1, y1):
    m = np.zeros((h, w), np.uint8)
    m[y0:y1, x0:x1] = 1
    return m


def _palette_png(path, values):
    im = Image.fromarray(values.astype(np.uint8), "P")
    palette = np.zeros((256, 3), np.uint8)
    palette[1:6] = [[128, 0, 0], [0, 128, 0], [128, 128, 0], [0, 0, 128], [128, 0, 128]]
    palette[255] = [224, 224, 192]
    im.putpalette(palette.ravel().tolist())
    im.save(path)


def _extent(m):
    """1-based VOC corners (xmin, ymin, xmax, ymax) of a mask's pixels."""
    ys, xs = np.nonzero(m)
    return xs.min() + 1, ys.min() + 1, xs.max() + 1, ys.max() + 1


# ---------------------------------------------------------------------------------------------------- VOC
def _voc_scenes():
    """id -> (w, h, [(name, instance mask or None, 1-based box or None = the mask's extent)], kind)."""
    a_w, a_h = 48, 40
    a1 = _rect(a_w, a_h, 6, 4, 22, 20)
    a2 = _ellipse(a_w, a_h, 36, 28, 8, 7)
    g_w, g_h = 40, 36
    b_w, b_h = 44, 40
    return {
        # dog's box runs past the right edge: clipped, its mask (inside the image) unchanged
        "a": (a_w, a_h, [("cat", a1, None), ("dog", a2, (29, 22, 60, 36))], "good"),
        "g": (g_w, g_h, [("bird", _ellipse(g_w, g_h, 12, 12, 8, 6), None),
                         ("cat", _rect(g_w, g_h, 24, 4, 37, 14), None), ("dog", _rect(g_w, g_h, 4, 24, 36, 32), None)],
              "good"),
        # object 2 has no pixel (no_mask), object 3 a degenerate box (dropped as a box), value 5 no object
        "b": (b_w, b_h, [("cat", _rect(b_w, b_h, 2, 2, 14, 12), None), ("dog", None, (20, 20, 30, 30)),
                         ("bird", _rect(b_w, b_h, 30, 4, 40, 10), (31, 5, 31, 10))], "unmatched"),
        "c": (40, 32, [("cat", _rect(40, 32, 4, 4, 20, 20), None)], "no_png"),
        "d": (44, 36, [("cat", _rect(44, 36, 4, 4, 20, 20), None)], "other_size"),
        "e": (40, 32, [("cat", _rect(40, 32, 4, 4, 20, 20), None)], "rgb_png"),
    }


def _write_voc(root, scenes):
    for d in ("Annotations", "JPEGImages", "SegmentationObject", "ImageSets/Main", "ImageSets/Segmentation"):
        (root / d).mkdir(parents=True, exist_ok=True)
    expected = {}
    for image_id, (w, h, objects, kind) in scenes.items():
        values = np.zeros((h, w), np.uint8)
        objs = []
        for k, (name, m, box) in enumerate(objects, 1):
            if m is not None:
                values[m > 0] = k
            x1, y1, x2, y2 = box or _extent(m)
            objs.append("<object><name>%s</name><difficult>0</difficult><bndbox><xmin>%d</xmin><ymin>%d</ymin>"
                        "<xmax>%d</xmax><ymax>%d</ymax></bndbox></object>" % (name, x1, y1, x2, y2))
        truth = values.copy()
        if kind == "good" or kind == "unmatched":  # VOC's boundary: 255 on the first object's last row
            first = objects[0][1]
            last_row = np.nonzero(first.any(1))[0].max()
            values[last_row][first[last_row] > 0] = 255
        if kind == "unmatched":
            values[30:34, 2:6] = 5
        Image.fromarray(_paint(w, h, [o[1] for o in objects if o[1] is not None])).save(
            str(root / "JPEGImages" / (image_id + ".jpg")), quality=95)
        (root / "Annotations" / (image_id + ".xml")).write_text(
            "<annotation><filename>%s.jpg</filename><size><width>%d</width><height>%d</height></size>%s"
            "</annotation>" % (image_id, w, h, "".join(objs)))
        png = str(root / "SegmentationObject" / (image_id + ".png"))
        if kind == "other_size":
            _palette_png(png, np.zeros((h + 4, w), np.uint8))
        elif kind == "rgb_png":
            Image.fromarray(np.repeat(values[:, :, None], 3, axis=2)).save(png)
        elif kind != "no_png":
            _palette_png(png, values)
        expected[image_id] = [(truth == k) & (values != 255) for k in range(1, len(objects) + 1)]
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("a\nb\nc\nd\ne\ng\n")
    for d in ("Main", "Segmentation"):
        (root / "ImageSets" / d / "clean.txt").write_text("g\na\n")
    return expected


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    root = tmp_path_factory.mktemp("VOC2012")
    expected = _write_voc(root, _voc_scenes())
    return str(root), expected


@pytest.fixture(scope="module")
def voc_packed(voc, tmp_path_factory):
    root, _ = voc
    prefix = str(tmp_path_factory.mktemp("out") / "voc_masks")
    assert main(["pack-detection", root, prefix, "--format", "voc", "--masks", "--split", "train", "--num-workers",
                 "1", "--no-progress", "-q"]) == 0
    return prefix, json.load(open(prefix + ".report.json"))


def _by_key(prefix):
    """{header id: (image, objects, masks)} through MaskedDetectionRecordDataset."""
    ds = MaskedDetectionRecordDataset(prefix + ".rec")
    return {ds.keys[i]: ds[i] for i in range(len(ds))}


def test_voc_masks_round_trip_exactly_and_bad_inputs_are_named(voc, voc_packed, capsys):
    root, expected = voc
    prefix, report = voc_packed
    assert open(prefix + "_classes.txt").read() == "bird\ncat\ndog\n"
    order = ["a", "b", "c", "d", "e", "g"]  # ImageSets/Segmentation/train.txt: header id = position
    got = _by_key(prefix)
    assert sorted(got) == [0, 1, 5]
    for key, (img, objects, masks) in got.items():
        name = order[key]
        want = expected[name]
        if name == "b":
            want = want[:1]  # object 2 has no mask, object 3 a degenerate box
        assert masks.dtype == np.uint8 and masks.shape == (len(want),) + img.shape[:2]
        assert len(objects) == len(masks)
        for m, w in zip(masks, want):
            assert np.array_equal(m, w.astype(np.uint8))
        for (x1, y1, x2, y2, *_), m in zip(objects, masks):  # mask i inside box i (VOC box = mask extent here)
            ys, xs = np.nonzero(m)
            assert x1 - 1e-3 <= xs.min() and xs.max() <= x2 + 1e-3 and y1 - 1e-3 <= ys.min() and ys.max() <= y2 + 1e-3
    skipped = {(os.path.basename(s["path"]), s["reason"]) for s in report["skipped"]}
    assert skipped == {("c.jpg", "mask_missing"), ("d.jpg", "size_mismatch"), ("e.jpg", "mask_not_single_channel")}
    problems = {(os.path.basename(p["file"]), p["object"], p["reason"], p["dropped"]) for p in report["box_problems"]}
    assert problems == {("a.xml", 1, "box_clipped", False), ("b.xml", 1, "no_mask", True),
                        ("b.xml", 2, "degenerate_box", True), ("b.xml", None, "mask_unmatched", False)}
    assert report["masks"] == report["boxes"] == 6 and report["packed"] == 3
    assert report["mask_layout"]["module"] == "resnest_gluon.data.detection_masks"
    assert report["options"]["masks"] is True
    # the summary names them too
    status, out = run_main(capsys, "pack-detection", root, prefix + "_again", "--format", "voc", "--masks", "--split",
                           "train", "--num-workers", 1, "--no-progress")
    assert status == 0, out
    assert "6 boxes, 3 classes, 6 instance masks" in out
    assert "skip #3 JPEGImages/d.jpg: size_mismatch" in out and "mask of 44x40 pixels for an image of 44x36" in out
    assert "dropped Annotations/b.xml (JPEGImages/b.jpg object 1): object 1: no pixel of instance value 2 in " \
           "SegmentationObject/b.png" in out
    assert "noted Annotations/b.xml (JPEGImages/b.jpg): SegmentationObject/b.png: instance value(s) 5" in out
    # without --split: every SegmentationObject PNG (c has none, so it is not listed)
    status, out = run_main(capsys, "pack-detection", root, prefix + "_all", "--format", "voc", "--masks",
                           "--num-workers", 1, "--no-progress")
    assert status == 0 and json.load(open(prefix + "_all.report.json"))["listed"] == 5, out
    status, out = run_main(capsys, "pack-detection", root, prefix + "_none", "--format", "voc", "--masks", "--split",
                           "nope", "--no-progress")
    assert status == 2 and "no ImageSets/Segmentation/nope.txt" in out, out
    assert not os.path.exists(prefix + "_none.rec")


def _raw_records(prefix):
    reader = mx.recordio.MXIndexedRecordIO(prefix + ".idx", prefix + ".rec", "r")
    out = {key: reader.read_idx(key) for key in reader.keys}
    reader.close()
    return out


def _assert_same_as_unmasked(masked, plain):
    """Header labels, image bytes and what every mask-ignorant reader gives are those of the unmasked pack."""
    raw_m, raw_p = _raw_records(masked), _raw_records(plain)
    assert sorted(raw_m) == sorted(raw_p) and raw_m
    for key in raw_m:
        hm, image_m, mask_bytes = split_masked_detection_record(raw_m[key], key)
        hp, image_p = mx.recordio.unpack(raw_p[key])
        assert hp.id2 == 0 and hm.id2 == len(image_m) and mask_bytes.startswith(MASKS_MAGIC)
        assert np.array_equal(hm.label, hp.label) and hm.flag == hp.flag and hm.id == hp.id
        assert image_m == image_p
    # GluonCV's RecordFileDetection and our DetectionRecordDataset: the same pixels and boxes
    for reader in (RecordFileDetection, DetectionRecordDataset):
        ds_m, ds_p = reader(masked + ".rec"), reader(plain + ".rec")
        assert len(ds_m) == len(ds_p)
        for i in range(len(ds_m)):
            (img_m, box_m), (img_p, box_p) = ds_m[i], ds_p[i]
            img_m, img_p = (x.asnumpy() if hasattr(x, "asnumpy") else x for x in (img_m, img_p))
            assert np.array_equal(img_m, img_p) and np.array_equal(np.asarray(box_m), np.asarray(box_p))
    # MXNet's detection iterators, Python's ImageDetIter and C++'s ImageDetRecordIter: the same batches
    for make in (lambda prefix: mx.image.ImageDetIter(batch_size=len(raw_m), data_shape=(3, 24, 24),
                                                      path_imgrec=prefix + ".rec", path_imgidx=prefix + ".idx"),
                 lambda prefix: mx.io.ImageDetRecordIter(path_imgrec=prefix + ".rec", batch_size=len(raw_m),
                                                         data_shape=(3, 24, 24), shuffle=False,
                                                         preprocess_threads=1)):
        batches = [make(prefix).next() for prefix in (masked, plain)]
        for a, b in ((batches[0].data[0], batches[1].data[0]), (batches[0].label[0], batches[1].label[0])):
            assert np.array_equal(a.asnumpy(), b.asnumpy())


def test_boxes_and_images_are_those_of_the_unmasked_pack(voc, coco, tmp_path, capsys):
    root, _ = voc
    for encoding in (".jpg", ".png"):  # decoders stop at a JPEG's or a PNG's end: the masks after it are not read
        masked, plain = str(tmp_path / ("m" + encoding[1:])), str(tmp_path / ("p" + encoding[1:]))
        for prefix, extra in ((masked, ["--masks"]), (plain, [])):
            status, out = run_main(capsys, "pack-detection", root, prefix, "--format", "voc", "--split", "clean",
                                   "--encoding", encoding, "--num-workers", 1, "--no-progress", *extra)
            assert status == 0, out
        _assert_same_as_unmasked(masked, plain)
    # COCO: image "clean" has only good masks (polygon + crowd RLE)
    for prefix, extra in ((masked + "c", ["--masks"]), (plain + "c", [])):
        status, out = run_main(capsys, "pack-detection", coco["json"], prefix, "--format", "coco", "--root",
                               coco["images"], "--num-workers", 1, "--no-progress", *extra)
        assert status == 0, out
    keep = {i for i, im in enumerate(COCO_IMAGES) if im[1] == "clean.jpg"}
    raw_m, raw_p = _raw_records(masked + "c"), _raw_records(plain + "c")
    assert keep <= set(raw_m) and keep <= set(raw_p)
    for key in keep:
        hm, image_m, _ = split_masked_detection_record(raw_m[key], key)
        hp, image_p = mx.recordio.unpack(raw_p[key])
        assert np.array_equal(hm.label, hp.label) and image_m == image_p


# ---------------------------------------------------------------------------------------------------- COCO
def _uncompressed_rle(m):
    flat = np.asarray(m, np.uint8).T.ravel()  # COCO's runs go down the columns
    counts, value, run = [], 0, 0
    for v in flat:
        if v == value:
            run += 1
        else:
            counts.append(run)
            value, run = v, 1
    counts.append(run)
    return {"size": [m.shape[0], m.shape[1]], "counts": [int(c) for c in counts]}


def _compressed_rle(m):
    rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


def _reference_mask(segm, h, w):
    """pycocotools as COCO.annToMask does it."""
    if isinstance(segm, list):
        return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(segm, h, w)))
    if isinstance(segm["counts"], list):
        return mask_utils.decode(mask_utils.frPyObjects(segm, h, w))
    return mask_utils.decode({"size": segm["size"], "counts": segm["counts"].encode("ascii")})


# images: (id, file, w, h); annotations: (id, image id, category id, segmentation, iscrowd, expected reason or None)
COCO_IMAGES = [(1, "one.jpg", 48, 40), (2, "two.jpg", 40, 36), (3, "clean.jpg", 40, 40), (4, "bare.jpg", 32, 32),
               (5, "gone.jpg", 32, 32)]


def _coco_annotations():
    one = {"poly": [[4.0, 4.0, 24.0, 4.0, 24.0, 20.0, 4.0, 20.0]],  # a rectangle
           "two_part": [[30.0, 2.0, 44.0, 2.0, 37.0, 12.0], [30.0, 26.0, 44.0, 26.0, 44.0, 36.0, 30.0, 36.0]],
           "crowd": _uncompressed_rle(_rect(48, 40, 14, 12, 34, 30)),  # overlaps the rectangle
           "string": _compressed_rle(_ellipse(48, 40, 10, 31, 6, 5))}
    two_good = [[2.0, 2.0, 18.0, 2.0, 10.0, 16.0]]
    clean = {"poly": [[4.0, 4.0, 20.0, 6.0, 16.0, 22.0, 6.0, 18.0]],
             "crowd": _uncompressed_rle(_ellipse(40, 40, 28, 28, 8, 9))}
    wrong_sum = _uncompressed_rle(_rect(40, 36, 20, 20, 30, 30))
    wrong_sum["counts"][-1] += 3
    return [
        (10, 1, 3, one["poly"], 0, None), (11, 1, 7, one["two_part"], 0, None), (12, 1, 7, one["crowd"], 1, None),
        (13, 1, 3, one["string"], 0, None),
        (20, 2, 3, two_good, 0, None), (21, 2, 3, "absent", 0, "no_mask"), (22, 2, 3, [], 0, "no_mask"),
        (23, 2, 7, [[2.0, 2.0, 10.0, 2.0, 10.0]], 0, "bad_polygon"),  # odd count
        (24, 2, 7, [[2.0, 2.0, 10.0, 10.0]], 0, "bad_polygon"),  # 4 numbers (pycocotools would read a box)
        (25, 2, 7, _uncompressed_rle(_rect(36, 40, 2, 2, 8, 8)), 1, "mask_size_mismatch"),  # 36x40, not 40x36
        (26, 2, 7, wrong_sum, 1, "bad_rle"),
        (27, 2, 3, [[5.0, 5.0, 10.0, 10.0, 15.0, 15.0]], 0, "mask_empty"),  # collinear: no area
        (28, 2, 3, {"size": [36, 40], "counts": "ab~~"}, 0, "bad_rle"),  # '~' is outside COCO's alphabet
        (29, 2, 3, [["x", 1, 2, 3, 4, 5]], 0, "bad_polygon"),
        (30, 3, 3, clean["poly"], 0, None), (31, 3, 7, clean["crowd"], 1, None),
    ]


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco")
    (root / "images").mkdir()
    sizes = {i: (w, h) for i, _, w, h in COCO_IMAGES}
    anns, expected, painted = [], {}, {i: [] for i in sizes}
    for ann_id, image_id, cat, segm, crowd, reason in _coco_annotations():
        w, h = sizes[image_id]
        if reason is None:
            m = _reference_mask(segm, h, w)
            ys, xs = np.nonzero(m)
            bbox = [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]
            expected[ann_id] = m
            painted[image_id].append(m)
        else:
            bbox = [3, 3, 10, 10]
        ann = {"id": ann_id, "image_id": image_id, "category_id": cat, "bbox": bbox, "iscrowd": crowd}
        if segm != "absent":
            ann["segmentation"] = segm
        anns.append(ann)
    for image_id, name, w, h in COCO_IMAGES:
        if name != "gone.jpg":
            Image.fromarray(_paint(w, h, painted[image_id])).save(str(root / "images" / name), quality=95)
    data = {"images": [{"id": i, "file_name": n, "width": w, "height": h} for i, n, w, h in COCO_IMAGES],
            "categories": [{"id": 7, "name": "zebra"}, {"id": 3, "name": "apple"}], "annotations": anns}
    (root / "instances.json").write_text(json.dumps(data))
    return {"json": str(root / "instances.json"), "images": str(root / "images"), "expected": expected}


def test_coco_polygons_and_both_rle_forms_round_trip_exactly(coco, tmp_path, capsys):
    prefix = str(tmp_path / "coco")
    status, out = run_main(capsys, "pack-detection", coco["json"], prefix, "--format", "coco", "--root",
                           coco["images"], "--masks", "--keep-empty", "--num-workers", 1, "--no-progress")
    assert status == 0, out
    report = json.load(open(prefix + ".report.json"))
    assert {(s["path"], s["reason"]) for s in report["skipped"]} == {("gone.jpg", "missing")}
    problems = {(p["object"], p["reason"]) for p in report["box_problems"]}
    assert problems == {(a[0], a[5]) for a in _coco_annotations() if a[5]}
    details = {p["object"]: p["detail"] for p in report["box_problems"]}
    assert "annotation id 25: RLE of 36x40 pixels for an image of 40x36" in details[25]
    assert "add up to" in details[26] and "polygon 0 has 5 coordinates" in details[23]
    got = _by_key(prefix)
    assert sorted(got) == [0, 1, 2, 3]  # header id = position of the image in id order; gone.jpg skipped
    kept = {1: [10, 11, 12, 13], 2: [20], 3: [30, 31], 4: []}
    for key, (img, objects, masks) in got.items():
        image_id = COCO_IMAGES[key][0]
        assert masks.shape == (len(kept[image_id]),) + img.shape[:2]
        for ann_id, m in zip(kept[image_id], masks):
            assert np.array_equal(m, coco["expected"][ann_id]), ann_id
        for (x1, y1, x2, y2, cls, crowd), m in zip(objects, masks):  # COCO bbox = the mask's extent here
            ys, xs = np.nonzero(m)
            assert np.allclose([xs.min(), ys.min(), xs.max(), ys.max()], [x1, y1, x2, y2], atol=1e-3)
    one = got[0][2]
    assert (one[0] & one[2]).sum() > 50  # the rectangle and the crowd region overlap, both whole
    assert got[0][1][:, 5].tolist() == [0, 0, 1, 0]  # difficult = iscrowd
    status, out = run_main(capsys, "inspect", prefix, "--no-progress")
    assert status == 0 and "instance masks: 7 decoded in 4 records" in out, out


def test_rle_strings_and_masks_codec():
    rng = np.random.RandomState(0)
    for _ in range(20):
        m = (rng.rand(rng.randint(1, 30), rng.randint(1, 30)) > rng.rand()).astype(np.uint8)
        if not m.any():
            continue
        rle = _compressed_rle(m)
        assert sum(instance_masks.rle_string_counts(rle["counts"])) == m.size
        assert np.array_equal(instance_masks.coco_mask(rle, m.shape[1], m.shape[0]), m)
        assert np.array_equal(instance_masks.coco_mask(_uncompressed_rle(m), m.shape[1], m.shape[0]), m)
    masks = np.zeros((3, 20, 30), np.uint8)
    masks[0, 2:8, 3:9] = 1
    masks[1, 5:15, 5:25] = 1  # overlaps mask 0
    masks[2, 19, 29] = 1  # one pixel in the corner
    payload = encode_instance_masks(masks)
    assert np.array_equal(decode_instance_masks(payload, 3, (20, 30)), masks)
    assert decode_instance_masks(encode_instance_masks([], 30, 20), 0, (20, 30)).shape == (0, 20, 30)
    with pytest.raises(ValueError, match="mask 1 is empty"):
        encode_instance_masks([masks[0], np.zeros((20, 30), np.uint8)])
    with pytest.raises(CorruptRecordError, match="here: damaged instance masks: 3 masks for the header's 2"):
        decode_instance_masks(payload, 2, None, "here")
    with pytest.raises(CorruptRecordError, match="masks of 30x20 pixels for an image of 31x20"):
        decode_instance_masks(payload, 3, (20, 31), "here")
    # a record without masks, read as masked: named
    plain = mx.recordio.pack(mx.recordio.IRHeader(0, np.array([2, 6, 0, .1, .1, .5, .5, 0], np.float32), 4, 0),
                             cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))[1].tobytes())
    with pytest.raises(CorruptRecordError, match="rec #4: no instance masks in this record"):
        decode_masked_detection_record(plain, "rec #4")


# ---------------------------------------------------------------------------------------------------- resize
def _assert_aligned(img, m, least=0.85):
    """The image's bright (object) pixels lie under mask ``m``: most of its pixels are bright (resampling and JPEG
    blur the edges), and more of them than under the mask shifted by 2 pixels any way."""
    red = img.astype(np.float32).mean(2) > 112
    here = red[m > 0].mean()
    shifted = max(red[np.roll(m, d, axis) > 0].mean() for d in (-2, 2) for axis in (0, 1))
    assert here > least and here > shifted, (here, shifted)


def test_resize_keeps_masks_aligned_and_workers_give_identical_output(voc, coco, tmp_path, capsys):
    root, expected = voc
    outputs = {}
    for workers in (1, 2):
        prefix = str(tmp_path / ("voc%d" % workers))
        status, out = run_main(capsys, "pack-detection", root, prefix, "--format", "voc", "--masks", "--split",
                               "train", "--resize", 24, "--num-workers", workers, "--no-progress")
        assert status == 0, out
        outputs[workers] = [open(prefix + ext, "rb").read() for ext in (".rec", ".idx", "_classes.txt")]
        prefix = str(tmp_path / ("coco%d" % workers))
        status, out = run_main(capsys, "pack-detection", coco["json"], prefix, "--format", "coco", "--root",
                               coco["images"], "--masks", "--resize", 60, "--num-workers", workers, "--no-progress")
        assert status == 0, out
        outputs[workers] += [open(prefix + ext, "rb").read() for ext in (".rec", ".idx")]
    assert outputs[1] == outputs[2]
    order = ["a", "b", "c", "d", "e", "g"]
    for key, (img, objects, masks) in _by_key(str(tmp_path / "voc1")).items():
        assert min(img.shape[:2]) == 24 and masks.shape[1:] == img.shape[:2]
        want = expected[order[key]][:len(masks)]
        for m, src in zip(masks, want):  # nearest neighbour, pixel centres aligned: no new values, no shift
            assert np.array_equal(m, cv2.resize(src.astype(np.uint8), img.shape[1::-1],
                                                interpolation=cv2.INTER_NEAREST_EXACT))
        for (x1, y1, x2, y2, *_), m in zip(objects, masks):
            _assert_aligned(img, m)
            ys, xs = np.nonzero(m)
            assert x1 - 1 <= xs.min() and xs.max() <= x2 + 1 and y1 - 1 <= ys.min() and ys.max() <= y2 + 1
    for key, (img, objects, masks) in _by_key(str(tmp_path / "coco1")).items():  # enlarged: 40 -> 60 px
        assert min(img.shape[:2]) == 60
        for m in masks:
            _assert_aligned(img, m)


def test_max_pixels_downscaled_images_keep_boxes_and_masks_aligned(voc, tmp_path):
    """An image decoded smaller (--max-pixels) has its boxes normalised by the size the annotations refer to, and its
    masks resized with it."""
    from recordio_tools import detection, packing

    root, expected = voc
    prefix = str(tmp_path / "small")
    report = detection.pack_detection(root, prefix, "voc", split="clean", masks=True, num_workers=1, progress=False,
                                      options=packing.PackOptions(max_pixels=600))
    assert report.converted["downscaled"] == 2 and report.boxes == report.masks == 5
    assert {p["reason"] for p in report.box_problems} == {"box_clipped"}  # a's dog, as at full size
    for key, (img, objects, masks) in _by_key(prefix).items():
        name = ["g", "a"][key]  # ImageSets/Segmentation/clean.txt
        full = expected[name][0].shape
        assert img.shape[0] * img.shape[1] <= 600 and img.shape[1] < full[1] and masks.shape[1:] == img.shape[:2]
        for (x1, y1, x2, y2, *_), m in zip(objects, masks):
            _assert_aligned(img, m, 0.8)
            ys, xs = np.nonzero(m)
            extent = [xs.min(), ys.min(), xs.max(), ys.max()]
            if name == "g":  # boxes = the masks' extents at full size: both halved
                assert np.allclose(extent, [x1, y1, x2, y2], atol=1.5), (extent, [x1, y1, x2, y2])
            assert x1 - 1 <= xs.min() and xs.max() <= x2 + 1 and y1 - 1 <= ys.min() and ys.max() <= y2 + 1


# ---------------------------------------------------------------------------------------------------- check
def test_check_and_inspect_good_and_hand_damaged_records(voc_packed, tmp_path, capsys):
    prefix, _ = voc_packed
    status, out = run_main(capsys, "check", prefix, "--no-progress", "--json", tmp_path / "s.json")
    assert status == 0, out
    assert "instance masks: 6 decoded in 3 records (one per box)" in out
    summary = json.load(open(tmp_path / "s.json"))["detection"]
    assert summary["instance_masks"]["decoded"] == 6 and summary["boxes"] == 6
    status, out = run_main(capsys, "inspect", prefix, "--no-progress", "--sample", 2)
    assert status == 0 and re.search(r"instance masks: [345] decoded in 2 records \(one per box\)", out), out

    # hand-made records: one good, then one damage each
    image = _paint(30, 20, [_rect(30, 20, 3, 3, 12, 10)])
    jpeg = cv2.imencode(".jpg", image[:, :, ::-1])[1].tobytes()
    label = np.array([2, 6, 0, 3 / 30, 3 / 20, 11 / 30, 9 / 20, 0], np.float32)
    masks = encode_instance_masks([_rect(30, 20, 3, 3, 12, 10)])
    flipped = bytearray(masks)
    flipped[-20] ^= 0x44  # inside the PNG's compressed pixels: its checksums catch it
    two_boxes = np.array(list(label) + [0, 0.5, 0.5, 0.9, 0.9, 0], np.float32)
    records = [
        encode_masked_detection_record(0, label, jpeg, masks),
        encode_masked_detection_record(1, label, jpeg, bytes(flipped)),
        encode_masked_detection_record(2, two_boxes, jpeg, masks),  # 1 mask for 2 boxes
        encode_masked_detection_record(3, label, jpeg, encode_instance_masks([_rect(32, 20, 3, 3, 12, 10)])),
        mx.recordio.pack(mx.recordio.IRHeader(0, label, 4, len(jpeg) + 10 ** 6), jpeg + masks),  # id2 too far
        encode_masked_detection_record(5, label, jpeg, b"XXXX" + masks[4:]),
        mx.recordio.pack(mx.recordio.IRHeader(0, label, 6, 0), jpeg),  # no masks in a masked file
        encode_masked_detection_record(7, label, jpeg, masks[:-30]),  # cut short
    ]
    bad = str(tmp_path / "bad")
    writer = mx.recordio.MXIndexedRecordIO(bad + ".idx", bad + ".rec", "w")
    for i, record in enumerate(records):
        writer.write_idx(i, record)
    writer.close()
    (tmp_path / "bad_classes.txt").write_text("cat\n")
    status, out = run_main(capsys, "check", bad, "--no-progress")
    assert status == 1, out
    lines = [line for line in out.splitlines() if line.startswith("BAD")]
    assert len(lines) == 7, out
    expect = {1: "mask 0 is not a decodable PNG", 2: "1 masks for the header's 2 objects",
              3: "masks of 32x20 pixels for an image of 30x20", 4: "the record holds",
              5: "they do not start with b'IMSK'", 6: "record has no instance masks (header id2 = 0), the file's "
              "first record has them", 7: "the table's PNG sizes add up to"}
    for line in lines:
        position = int(line.split("#")[1].split()[0])
        assert expect.pop(position) in line, line
    assert not expect
    assert "instance masks: 1 decoded in 1 records" in out
    # the reader names the record
    ds = MaskedDetectionRecordDataset(bad + ".rec")
    img, objects, m = ds[0]
    assert m.shape == (1, 20, 30) and np.array_equal(ds.masks(0), m) and ds.class_names == ["cat"]
    with pytest.raises(CorruptRecordError, match=r"bad\.rec record #1 \(key 1.*damaged instance masks: mask 0"):
        ds[1]
    with pytest.raises(CorruptRecordError, match=r"bad\.rec record #6 \(key 6.*no instance masks"):
        ds[6]
