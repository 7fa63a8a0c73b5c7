"""The detection demo's generated scenes (demos/scenes.py): Pascal VOC folders whose boxes are
the tight boxes of what is visible, packed by recordio_tools and read back by the training dataset unchanged."""
import math
import os
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from demos.scenes import CLASSES_DEFAULT, Shape, _footprint, draw_scene, layout, main, make_scenes
from demos.shapes import CLASSES
from test_demo import nearest_mean_accuracy


def square(x, y, half=20.0):
    """An axis-aligned square covering pixels [x - half, x + half) x [y - half, y + half)."""
    return Shape("square", (x, y), half * math.sqrt(2))


def files(root):
    out = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            out[os.path.relpath(path, root)] = open(path, "rb").read()
    return out


def xml_objects(root, image_id):
    """``[(name, x1, y1, x2, y2, difficult, truncated)]`` read straight from the XML, corners made 0-based."""
    tree = ET.parse(os.path.join(root, "Annotations", image_id + ".xml")).getroot()
    return [(o.findtext("name"), *(int(o.findtext("bndbox/" + t)) - 1 for t in ("xmin", "ymin", "xmax", "ymax")),
             int(o.findtext("difficult")), int(o.findtext("truncated"))) for o in tree.iter("object")]


# ---------------------------------------------------------------------------------------------- the folder

def test_same_seed_same_bytes_even_over_an_old_folder_other_seed_other_scenes(tmp_path):
    a, b, c = (str(tmp_path / d) for d in "abc")
    make_scenes(a, train=3, val=2, seed=5)
    first = files(a)
    make_scenes(a, train=3, val=2, seed=5)  # a rerun overwrites in place
    make_scenes(b, train=3, val=2, seed=5)
    make_scenes(c, train=3, val=2, seed=6)
    assert files(a) == first == files(b)
    assert sorted(first) == sorted(files(c))
    assert first["JPEGImages/val_000001.jpg"] != files(c)["JPEGImages/val_000001.jpg"]
    assert {"classes.txt", "summary.json", "ImageSets/Main/train.txt", "ImageSets/Main/val.txt",
            "Annotations/train_000002.xml", "JPEGImages/train_000002.jpg"} <= set(first)
    assert first["classes.txt"].decode().split() == list(CLASSES_DEFAULT) == sorted(CLASSES_DEFAULT)
    assert first["ImageSets/Main/val.txt"].decode().split() == ["val_000000", "val_000001"]


def test_an_interrupted_run_leaves_no_completion_marker(tmp_path):
    make_scenes(str(tmp_path), train=2, val=1)
    assert (tmp_path / "summary.json").is_file()

    def stop(done, total):
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        make_scenes(str(tmp_path), train=2, val=1, seed=1, progress=stop)
    assert not (tmp_path / "summary.json").exists()
    assert not [n for _, _, names in os.walk(tmp_path) for n in names if n.endswith(".tmp")]


def test_packed_records_give_back_the_xml_boxes_with_no_problems(tmp_path):
    from recordio_tools.detection import pack_detection
    from resnest_gluon.dense.detection_data import DetectionRecordDataset

    root, prefix = str(tmp_path / "voc"), str(tmp_path / "rec" / "train")
    os.makedirs(os.path.dirname(prefix))
    summary = make_scenes(root, train=8, val=2, seed=1)
    report = pack_detection(root, prefix, "voc", split="train", classes_file=os.path.join(root, "classes.txt"),
                            num_workers=1, progress=False)
    assert report.box_problems == [] and report.skipped == []
    assert report.packed == 8 and report.boxes == summary.total("objects", "train") >= 8
    ids = open(os.path.join(root, "ImageSets", "Main", "train.txt")).read().split()
    records = DetectionRecordDataset(prefix + ".rec")
    assert len(records) == len(ids) == 8
    difficult = 0
    for i, image_id in enumerate(ids):
        img, objects = records[i]
        assert img.shape == (160, 160, 3)
        expected = [(*box, CLASSES_DEFAULT.index(name), hard) for name, *box, hard, _ in xml_objects(root, image_id)]
        np.testing.assert_allclose(objects, expected, atol=1e-3)
        difficult += int(objects[:, 5].sum())
    assert difficult == summary.total("difficult", "train")


def test_command_line_prints_one_summary_line_and_refuses_unknown_classes(tmp_path, capsys):
    summary = main([str(tmp_path / "s"), "--train", "2", "--val", "1", "--size", "64", "--classes", "ring,heart"])
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("3 scenes (2 train + 1 val, 64 px) with") and " 2 classes " in out[0]
    assert summary.classes == ("heart", "ring")
    assert (tmp_path / "s" / "classes.txt").read_text() == "heart\nring\n"
    with pytest.raises(SystemExit, match="classes must be distinct names"):
        main([str(tmp_path / "t"), "--classes", "circle,hexagon"])


# ---------------------------------------------------------------------------------------------- the boxes

def test_box_corners_are_0_based_inclusive_pixels():
    (lone,) = layout(160, [square(50, 60)])  # covers pixels 30..69 x 40..79
    assert lone == {"class": "square", "box": (30, 40, 69, 79), "difficult": False, "truncated": False,
                    "visible_fraction": 1.0}


def test_border_cut_objects_are_truncated_and_difficult_only_when_mostly_outside():
    half_in, mostly_out = layout(160, [square(10, 80), square(170, 40)])  # x -10..29; x 150..189: 10 of 40 in
    assert half_in["truncated"] and not half_in["difficult"] and half_in["box"] == (0, 60, 29, 99)
    assert half_in["visible_fraction"] == 0.75
    assert mostly_out["truncated"] and mostly_out["difficult"] and mostly_out["box"] == (150, 20, 159, 59)


def test_occluded_objects_get_the_box_of_what_stays_visible():
    framed, inner = layout(160, [square(80, 80), square(80, 80, half=12)])  # the later one sits on top
    assert framed["box"] == (60, 60, 99, 99) and framed["visible_fraction"] == 1 - 24 ** 2 / 40 ** 2
    assert inner["box"] == (68, 68, 91, 91) and not inner["difficult"]
    top_strip, _ = layout(160, [square(80, 80), square(80, 92)])  # rows 72.. hidden: 12 of 40 rows stay
    assert top_strip["box"] == (60, 60, 99, 71) and top_strip["difficult"] and not top_strip["truncated"]
    assert layout(160, [square(80, 80), square(80, 84)])[0] is None  # 10 % visible: not annotated
    assert layout(160, [square(50.5, 50.5, half=1.5)]) == [None]  # a 3 px box: not annotated


def test_drawn_boxes_are_tight_around_each_objects_visible_mask():
    """Over many random scenes: each box is the tight box of the mask > 0.5, later objects cover earlier ones
    (coverages never add up past 1), and the image shows the object's colour where the mask says it is visible."""
    seen = {"difficult": 0, "truncated": 0, "occluded": 0}
    for i in range(40):
        image, objects, masks = draw_scene(np.random.default_rng([3, i]), return_masks=True)
        assert 1 <= len(objects) <= 5 and masks.shape == (len(objects), 160, 160)
        assert masks.sum(0).max() <= 1 + 1e-5
        for o, mask in zip(objects, masks):
            ys, xs = np.nonzero(mask > 0.5)
            assert o["box"] == (xs.min(), ys.min(), xs.max(), ys.max())
            x1, y1, x2, y2 = o["box"]
            assert 0 <= x1 < x2 <= 159 and 0 <= y1 < y2 <= 159 and min(x2 - x1, y2 - y1) >= 3
            assert 0.15 <= o["visible_fraction"] <= 1 and o["difficult"] == (o["visible_fraction"] < 0.45)
            core = mask > 0.999
            for axis in (0, 1):  # 3 px inside the visible part: away from blur and anti-aliasing
                for shift in (-3, 3):
                    core &= np.roll(mask > 0.999, shift, axis)
            if core.sum() >= 10:
                assert np.abs(np.median(image[core], 0) - o["colour"]).max() < 25
            seen["occluded"] += not o["truncated"] and o["visible_fraction"] < 0.95
            seen["difficult"] += o["difficult"]
            seen["truncated"] += o["truncated"]
    assert all(seen.values()), seen  # each case occurs


def test_colour_carries_no_class_information():
    """Mean RGB inside the boxes classifies no better than chance; the same check sees a class tint (control)."""
    feats, labels = [], []
    for i in range(150):
        image, objects = draw_scene(np.random.default_rng([4, i]))
        for o in objects:
            x1, y1, x2, y2 = o["box"]
            feats.append(image[y1:y2 + 1, x1:x2 + 1].reshape(-1, 3).mean(0))
            labels.append(CLASSES_DEFAULT.index(o["class"]))
    feats, labels = np.array(feats), np.array(labels)
    chance = 1 / len(CLASSES_DEFAULT)
    assert len(labels) > 300 and np.bincount(labels).min() > 0.6 * len(labels) * chance
    assert nearest_mean_accuracy(feats, labels) < chance + 0.1
    tint = np.random.default_rng(1).uniform(-60, 60, (len(CLASSES_DEFAULT), 3))
    assert nearest_mean_accuracy(feats + tint[labels], labels) > 2 * chance


def test_every_demo_shape_fits_inside_its_crop():
    """A shape's mask is drawn on a crop around it: nothing may reach the crop's edge, or area and boxes are cut."""
    for name in CLASSES:
        for angle in np.linspace(0, math.pi, 7):
            for mirror in (False, True):
                _, _, mask = _footprint(Shape(name, (30.3, 40.7), 17.0, angle, mirror))
                assert mask.sum() > 100
                assert not (mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any()), (name, angle)
