"""recordio_tools pack-detection: Pascal VOC / COCO -> .rec/.idx in im2rec's detection layout, read back by GluonCV.

Tiny generated datasets carry one of each kind of bad annotation (box partly/entirely outside, zero area,
unknown class, missing fields, malformed XML, annotation of a missing image), a corrupt image and an image
without objects; every packed box is compared in pixels with what GluonCV's RecordFileDetection gives back.
"""
import json
import os
import sys

import mxnet as mx
import numpy as np
import pytest
from PIL import Image

from recordio_tools import detection, packing
from resnest_gluon.data import checking
from recordio_tools.__main__ import main

from gluoncv.data import RecordFileDetection  # noqa: E402  (after mxnet)

OPTIONS = packing.PackOptions()


def run_main(capsys, *args):
    status = main([str(a) for a in args])
    out = capsys.readouterr()
    return status, out.out + out.err


def _image(path, w, h, seed):
    rng = np.random.RandomState(seed)
    colour = rng.randint(0, 256, 3)
    arr = np.empty((h, w, 3), np.uint8)
    arr[:] = colour
    arr[h // 4: h // 2, w // 4: w // 2] = 255 - colour  # something a JPEG encoder has to work for
    Image.fromarray(arr).save(path, quality=95)


# VOC: (image id, (w, h) or None for no file / "corrupt", objects as (name, xmin, ymin, xmax, ymax) 1-based or
# a raw XML string for a malformed object); expected: 0-based GluonCV pixels (VOCDetection: minus 1) after clipping.
VOC = [
    ("a", (64, 48), [("cat", 5, 6, 30, 40), ("dog", 40, 10, 80, 47)]),  # dog partly outside: clipped to x2 = 63
    ("b", (60, 70), [("dog", 2, 3, 50, 60), ("cat", 100, 100, 120, 120), ("cat", 10, 10, 10, 30),
                     "<object><name>cat</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>9</xmax></bndbox></object>",
                     ("bird", 5, 5, 20, 20)]),  # outside, zero-area, no ymax, bird unknown with --classes
    ("c", (50, 50), [("cat", 60, 60, 70, 70)]),  # only an outside box: no object left
    ("d", (44, 52), []),  # no object at all
    ("e", "corrupt", [("cat", 2, 2, 20, 20)]),
    ("f", None, [("dog", 2, 2, 20, 20)]),  # annotation names a missing image
    ("g", (40, 40), "malformed"),
    ("h", (80, 56), [("bird", 10, 12, 70, 50)]),
]
EXPECTED_VOC = {  # image -> [(class name, x1, y1, x2, y2)] in 0-based pixels
    "a.jpg": [("cat", 4, 5, 29, 39), ("dog", 39, 9, 63, 46)],
    "b.jpg": [("dog", 1, 2, 49, 59), ("bird", 4, 4, 19, 19)],
    "h.jpg": [("bird", 9, 11, 69, 49)],
}


def _voc_xml(image_id, size, objects):
    objs = []
    for o in objects:
        if isinstance(o, str):
            objs.append(o)
            continue
        name, x1, y1, x2, y2 = o
        objs.append("<object><name>%s</name><difficult>0</difficult><bndbox><xmin>%d</xmin><ymin>%d</ymin>"
                    "<xmax>%d</xmax><ymax>%d</ymax></bndbox></object>" % (name, x1, y1, x2, y2))
    w, h = size if isinstance(size, tuple) else (40, 40)
    return ("<annotation><filename>%s.jpg</filename><size><width>%d</width><height>%d</height><depth>3</depth>"
            "</size>%s</annotation>" % (image_id, w, h, "".join(objs)))


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    root = tmp_path_factory.mktemp("voc")
    (root / "Annotations").mkdir()
    (root / "JPEGImages").mkdir()
    for seed, (image_id, size, objects) in enumerate(VOC):
        if size == "corrupt":
            (root / "JPEGImages" / (image_id + ".jpg")).write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
        elif size is not None:
            _image(str(root / "JPEGImages" / (image_id + ".jpg")), size[0], size[1], seed)
        xml = "<annotation><object><name>cat</name" if objects == "malformed" else _voc_xml(image_id, size, objects)
        (root / "Annotations" / (image_id + ".xml")).write_text(xml)
    return str(root)


def gluoncv_boxes(prefix):
    """{header id: (image HxW, [(class id, x1, y1, x2, y2, difficult)])} as GluonCV's RecordFileDetection reads them."""
    ds = RecordFileDetection(prefix + ".rec")
    reader = mx.recordio.MXIndexedRecordIO(prefix + ".idx", prefix + ".rec", "r")
    out = {}
    for i in range(len(ds)):
        img, label = ds[i]
        key = reader.keys[i]
        out[key] = (img.shape[:2], [(int(r[4]), *r[:4].tolist(), int(r[5])) for r in label])
    reader.close()
    return out


def by_image(report, boxes, classes):
    """{image path basename: (image HxW, [(class name, x1, y1, x2, y2)])} from the packed records."""
    skipped = {s["index"] for s in report["skipped"]}
    return {key: (shape, [(classes[c], x1, y1, x2, y2) for c, x1, y1, x2, y2, _ in objs])
            for key, (shape, objs) in boxes.items() if key not in skipped}


def _voc_index(voc_root):
    return {i: os.path.join("JPEGImages", image_id + ".jpg") for i, image_id in
            enumerate(n for n, _, o in VOC if o != "malformed")}


def _assert_boxes(got, expected, scale=(1.0, 1.0), tol=1.0):
    assert len(got) == len(expected)
    for (gname, *gbox), (ename, *ebox) in zip(got, expected):
        assert gname == ename
        want = [ebox[0] * scale[0], ebox[1] * scale[1], ebox[2] * scale[0], ebox[3] * scale[1]]
        assert np.allclose(gbox, want, atol=tol), (gbox, want)


@pytest.fixture(scope="module")
def voc_packed(voc, tmp_path_factory):
    prefix = str(tmp_path_factory.mktemp("out") / "voc")
    classes = tmp_path_factory.mktemp("cls") / "classes.txt"
    classes.write_text("cat\ndog\n")
    report = detection.pack_detection(voc, prefix, "voc", options=OPTIONS, num_workers=1, progress=False)
    return prefix, json.load(open(prefix + ".report.json")), report


def test_voc_boxes_read_back_by_gluoncv_in_pixels(voc_packed, voc):
    prefix, report, _ = voc_packed
    classes = open(prefix + "_classes.txt").read().split()
    assert classes == ["bird", "cat", "dog"]  # sorted names found
    got = by_image(report, gluoncv_boxes(prefix), classes)
    paths = _voc_index(voc)
    packed = {os.path.basename(paths[k]): v for k, v in got.items()}
    assert sorted(packed) == sorted(EXPECTED_VOC)
    for name, (shape, boxes) in packed.items():
        _assert_boxes(boxes, EXPECTED_VOC[name], tol=1e-3)  # normalised then multiplied back: float32 exact
    assert packed["a.jpg"][0] == (48, 64)


def test_voc_report_names_every_problem_with_its_file(voc_packed):
    _, report, _ = voc_packed
    skipped = {(os.path.basename(s["path"]), s["reason"]) for s in report["skipped"]}
    assert skipped == {("c.jpg", "no_objects"), ("d.jpg", "no_objects"), ("e.jpg", "not_an_image"),
                       ("f.jpg", "missing"), ("g.xml", "bad_annotation")} or \
        skipped == {("c.jpg", "no_objects"), ("d.jpg", "no_objects"), ("e.jpg", "corrupt"),
                    ("f.jpg", "missing"), ("g.xml", "bad_annotation")}
    problems = {(os.path.basename(p["file"]), p["reason"], p["dropped"]) for p in report["box_problems"]}
    assert problems == {("a.xml", "box_clipped", False), ("b.xml", "box_outside", True),
                        ("b.xml", "degenerate_box", True), ("b.xml", "malformed_object", True),
                        ("c.xml", "box_outside", True)}
    assert report["packed"] == 3 and report["boxes"] == 5 and report["listed"] == 8
    assert report["label_layout"]["header_width"] == 2 and report["label_layout"]["object_width"] == 6


def test_voc_classes_file_drops_unknown_and_resize_scales_boxes(voc, tmp_path, capsys):
    (tmp_path / "classes.txt").write_text("cat\ndog\n")
    prefix = str(tmp_path / "r")
    status, out = run_main(capsys, "pack-detection", voc, prefix, "--format", "voc", "--classes",
                           tmp_path / "classes.txt", "--resize", 32, "--num-workers", 2, "--no-progress")
    assert status == 0, out
    report = json.load(open(prefix + ".report.json"))
    assert open(prefix + "_classes.txt").read() == "cat\ndog\n"
    unknown = [p for p in report["box_problems"] if p["reason"] == "unknown_class"]
    assert [(os.path.basename(p["file"]), p["image"]) for p in unknown] == [
        ("b.xml", os.path.join("JPEGImages", "b.jpg")), ("h.xml", os.path.join("JPEGImages", "h.jpg"))]
    assert "h.jpg" in {os.path.basename(s["path"]) for s in report["skipped"] if s["reason"] == "no_objects"}
    got = by_image(report, gluoncv_boxes(prefix), ["cat", "dog"])
    paths = _voc_index(voc)
    sizes = {"a.jpg": (64, 48), "b.jpg": (60, 70)}
    for key, (shape, boxes) in got.items():
        name = os.path.basename(paths[key])
        w, h = sizes[name]
        assert min(shape) == 32
        expected = [b for b in EXPECTED_VOC[name] if b[0] != "bird"]
        _assert_boxes(boxes, expected, scale=(shape[1] / w, shape[0] / h), tol=1.0)
    assert "box problems" in out and "b.xml" in out


COCO = {
    "images": [{"id": 1, "file_name": "one.jpg", "width": 64, "height": 48},
               {"id": 2, "file_name": "two.jpg", "width": 50, "height": 70},
               {"id": 3, "file_name": "gone.jpg", "width": 40, "height": 40},
               {"id": 4, "file_name": "bare.jpg", "width": 40, "height": 40},
               {"id": 5, "file_name": "bad.jpg", "width": 40, "height": 40},
               {"id": 6, "width": 40, "height": 40}],  # no file_name
    "categories": [{"id": 7, "name": "zebra"}, {"id": 3, "name": "apple"}],
    "annotations": [
        {"id": 10, "image_id": 1, "category_id": 7, "bbox": [4, 5, 20, 30], "iscrowd": 0},
        {"id": 11, "image_id": 1, "category_id": 3, "bbox": [50, 40, 30, 20], "iscrowd": 1},  # clipped
        {"id": 12, "image_id": 2, "category_id": 3, "bbox": [1, 2, 40, 60]},
        {"id": 13, "image_id": 2, "category_id": 9, "bbox": [1, 2, 10, 10]},  # unknown category
        {"id": 14, "image_id": 2, "category_id": 3, "bbox": [1, 2, 0, 10]},  # zero width
        {"id": 15, "image_id": 2, "category_id": 3, "bbox": [1, 2]},  # malformed
        {"id": 16, "image_id": 2, "category_id": 7, "bbox": [100, 100, 10, 10]},  # outside
        {"id": 17, "image_id": 99, "category_id": 7, "bbox": [1, 1, 5, 5]},  # no such image
        {"id": 18, "image_id": 3, "category_id": 7, "bbox": [1, 1, 5, 5]},  # image file missing
        {"id": 19, "image_id": 5, "category_id": 7, "bbox": [1, 1, 5, 5]},  # corrupt image
    ],
}


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco")
    (root / "images").mkdir()
    for seed, im in enumerate(COCO["images"][:5]):
        if im["file_name"] == "bad.jpg":
            (root / "images" / "bad.jpg").write_bytes(b"")
        elif im["file_name"] != "gone.jpg":
            _image(str(root / "images" / im["file_name"]), im["width"], im["height"], seed)
    (root / "instances.json").write_text(json.dumps(COCO))
    return str(root)


def test_coco_pack_keep_empty_gluoncv_reads_boxes(coco, tmp_path, capsys):
    prefix = str(tmp_path / "coco")
    status, out = run_main(capsys, "pack-detection", os.path.join(coco, "instances.json"), prefix, "--format", "coco",
                           "--root", os.path.join(coco, "images"), "--keep-empty", "--num-workers", 1, "--no-progress")
    assert status == 0, out
    assert open(prefix + "_classes.txt").read() == "apple\nzebra\n"  # categories in id order (3, 7) -> 0, 1
    report = json.load(open(prefix + ".report.json"))
    assert {(s["path"], s["reason"]) for s in report["skipped"]} == {
        ("gone.jpg", "missing"), ("bad.jpg", "empty_file"), ("instances.json", "bad_annotation")}
    assert report["listed"] == 6 and report["packed"] == 3
    problems = {(p["file"], p["object"], p["reason"]) for p in report["box_problems"]}
    assert problems == {("instances.json", 11, "box_clipped"), ("instances.json", 13, "unknown_class"),
                        ("instances.json", 14, "degenerate_box"), ("instances.json", 15, "malformed_object"),
                        ("instances.json", 16, "box_outside"), ("instances.json", 17, "bad_annotation")}
    # bare.jpg is kept without objects (label [2, 6]), which GluonCV's RecordFileDetection cannot parse: read
    # the two others through it by position
    reader = mx.recordio.MXIndexedRecordIO(prefix + ".idx", prefix + ".rec", "r")
    keys = list(reader.keys)
    header, _ = mx.recordio.unpack(reader.read_idx(3))
    reader.close()
    assert keys == [0, 1, 3] and header.label.tolist() == [2, 6]
    ds = RecordFileDetection(prefix + ".rec")
    _, one = ds[0]
    _, two = ds[1]
    # GluonCV's COCO convention: [x, y, x + w - 1, y + h - 1], clipped to [0, size - 1]
    assert np.allclose(one, [[4, 5, 23, 34, 1, 0], [50, 40, 63, 47, 0, 1]], atol=1e-3)
    assert np.allclose(two, [[1, 2, 40, 61, 0, 0]], atol=1e-3)
    status, out = run_main(capsys, "check", prefix, "--no-progress")
    assert status == 0, out
    assert "boxes per image min/mean/max [0, 1.0, 2]" in out and "apple:2, zebra:1" in out


def test_check_and_inspect_detection(voc_packed, capsys, tmp_path):
    prefix, _, _ = voc_packed
    status, out = run_main(capsys, "inspect", prefix, "--no-progress", "--json", tmp_path / "s.json")
    assert status == 0, out
    s = json.load(open(tmp_path / "s.json"))["detection"]
    assert s["boxes"] == 5 and s["boxes_per_image"] == [1, 1.667, 2] and s["empty_images"] == 0
    assert s["class_histogram"] == {"bird": 2, "cat": 1, "dog": 2}
    assert "class histogram: bird:2, cat:1, dog:2" in out
    # a record with a box outside [0, 1], a degenerate box and an unknown class id
    bad = str(tmp_path / "bad")
    writer = mx.recordio.MXIndexedRecordIO(bad + ".idx", bad + ".rec", "w")
    img = np.zeros((20, 20, 3), np.uint8)
    labels = [[2, 6, 0, 0.1, 0.1, 0.5, 0.5, 0], [2, 6, 0, -0.2, 0.1, 1.3, 0.5, 0, 1, 0.5, 0.5, 0.5, 0.9, 0],
              [2, 6, 4, 0.1, 0.1, 0.5, 0.5, 0]]
    for i, label in enumerate(labels):
        writer.write_idx(i, mx.recordio.pack_img(mx.recordio.IRHeader(0, np.array(label, np.float32), i, 0), img))
    writer.close()
    open(bad + "_classes.txt", "w").write("a\nb\n")
    status, out = run_main(capsys, "check", bad, "--no-progress")
    assert status == 1, out
    assert "corner outside [0, 1]" in out and "degenerate box" in out
    assert "class id 4 is not an integer in [0, 2)" in out
    # classification files are unchanged: detection is decided from the labels, and --detection forces it
    summary = checking.check(prefix, progress=False, detection=True)
    assert summary["ok"] and summary["detection"]["images"] == 3


def test_failed_pack_leaves_previous_outputs(voc_packed, voc, tmp_path, capsys, monkeypatch):
    prefix = str(tmp_path / "keep")
    status, out = run_main(capsys, "pack-detection", voc, prefix, "--format", "voc", "--no-progress", "--num-workers", 2)
    assert status == 0, out
    names = [prefix + s for s in (".rec", ".idx", "_classes.txt", ".report.json")]
    before = [open(n, "rb").read() for n in names]
    for ext in (".rec", ".idx"):  # 2 workers write what 1 worker wrote
        assert open(voc_packed[0] + ext, "rb").read() == open(prefix + ext, "rb").read()
    calls = []
    real = detection.encode_detection

    def interrupted(entry):
        calls.append(entry)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(entry)

    monkeypatch.setattr(detection, "encode_detection", interrupted)
    with pytest.raises(KeyboardInterrupt):
        detection.pack_detection(voc, prefix, "voc", options=packing.PackOptions(resize=20), progress=False)
    monkeypatch.undo()
    assert [open(n, "rb").read() for n in names] == before
    status, out = run_main(capsys, "pack-detection", voc, prefix, "--format", "voc", "--root", tmp_path / "nowhere",
                           "--no-progress", "--num-workers", 1)
    assert status == 2 and "nothing packed" in out
    assert [open(n, "rb").read() for n in names] == before
    assert sorted(os.listdir(tmp_path)) == sorted(os.path.basename(n) for n in names)  # no temp files left


def test_same_boxes_as_gluoncv_voc_reader(tmp_path, capsys):
    """On a clean VOC2007 folder, --split test packs what GluonCV's VOCDetection reads (boxes, ids, difficult)."""
    from gluoncv.data import VOCDetection

    class Mini(VOCDetection):
        CLASSES = ("bird", "cat", "dog")

    voc = tmp_path / "VOC2007"
    for d in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (voc / d).mkdir(parents=True)
    samples = [("x1", (64, 48), [("cat", 1, 1, 64, 48, 0), ("dog", 10, 12, 30, 40, 1)]),
               ("x2", (50, 72), [("bird", 5, 6, 49, 70, 0)]),
               ("x3", (80, 41), [("dog", 3, 4, 20, 41, 0), ("cat", 40, 2, 79, 30, 1)])]
    for seed, (image_id, (w, h), objects) in enumerate(samples):
        _image(str(voc / "JPEGImages" / (image_id + ".jpg")), w, h, seed)
        objs = "".join("<object><name>%s</name><difficult>%d</difficult><bndbox><xmin>%d</xmin><ymin>%d</ymin>"
                       "<xmax>%d</xmax><ymax>%d</ymax></bndbox></object>" % (n, d, x1, y1, x2, y2)
                       for n, x1, y1, x2, y2, d in objects)
        (voc / "Annotations" / (image_id + ".xml")).write_text(
            "<annotation><filename>%s.jpg</filename><size><width>%d</width><height>%d</height></size>%s"
            "</annotation>" % (image_id, w, h, objs))
    (voc / "ImageSets" / "Main" / "test.txt").write_text("x3\nx1\nx2\n")  # not sorted: the split's order is kept
    prefix = str(tmp_path / "voc_test")
    status, out = run_main(capsys, "pack-detection", voc, prefix, "--format", "voc", "--split", "test",
                           "--num-workers", 1, "--no-progress")
    assert status == 0, out
    ours = RecordFileDetection(prefix + ".rec")
    theirs = Mini(str(tmp_path), splits=((2007, "test"),))
    assert len(ours) == len(theirs) == 3
    for i in range(3):
        assert np.allclose(ours[i][1], theirs[i][1], atol=1e-3), (i, ours[i][1], theirs[i][1])
        assert ours[i][0].shape == theirs[i][0].shape
    # MXNet's own detection iterator reads the same records (normalised corners, [id, x1, y1, x2, y2, difficult])
    it = mx.image.ImageDetIter(batch_size=3, data_shape=(3, 32, 32), path_imgrec=prefix + ".rec",
                               path_imgidx=prefix + ".idx")
    batch = it.next()
    label = batch.label[0].asnumpy()
    assert label.shape == (3, 2, 6)
    first = RecordFileDetection(prefix + ".rec")[0]
    h, w = first[0].shape[:2]
    assert np.allclose(label[0, :, 1:5] * [w, h, w, h], first[1][:, :4], atol=1e-3)


def test_coco_classes_file_maps_by_name(coco, tmp_path, capsys):
    (tmp_path / "names.txt").write_text("zebra\n")
    prefix = str(tmp_path / "z")
    status, out = run_main(capsys, "pack-detection", os.path.join(coco, "instances.json"), prefix, "--format", "coco",
                           "--root", os.path.join(coco, "images"), "--classes", tmp_path / "names.txt",
                           "--num-workers", 1, "--no-progress")
    assert status == 0, out
    report = json.load(open(prefix + ".report.json"))
    unknown = sorted(p["object"] for p in report["box_problems"] if p["reason"] == "unknown_class")
    assert unknown == [11, 12, 13]  # apple (category 3) twice, category 9
    assert report["packed"] == 1 and report["classes"] == ["zebra"]
    (_, boxes), = [RecordFileDetection(prefix + ".rec")[0]]
    assert np.allclose(boxes, [[4, 5, 23, 34, 0, 0]], atol=1e-3)
    # forced the other way, the same file is read as class labels (no detection statistics)
    assert checking.check(prefix, progress=False, detection=False)["detection"] is None


def test_training_dataset_reads_what_gluoncv_reads(voc_packed):
    """resnest_gluon's DetectionRecordDataset (what training and evaluation read) gives GluonCV's boxes and images."""
    from resnest_gluon.dense.detection_data import DetectionRecordDataset

    prefix, _, _ = voc_packed
    ours, theirs = DetectionRecordDataset(prefix + ".rec"), RecordFileDetection(prefix + ".rec")
    assert len(ours) == len(theirs) > 0
    for i in range(len(ours)):
        (img, objects), (gimg, glabel) = ours[i], theirs[i]
        assert np.array_equal(img, gimg.asnumpy())
        assert objects.dtype == np.float32 and np.allclose(objects, glabel, atol=1e-4)
