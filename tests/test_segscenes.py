"""The generated segmentation scenes (demos/segscenes.py): Pascal VOC segmentation folders the evaluation reads, every
class in every family, a thin "not counted" band on edges, byte-identical reruns, and no colour cue where the class
is the outline."""
import json
import os

import numpy as np
import pytest
from PIL import Image

from demos.segscenes import FAMILIES, IGNORE, draw, main, make_segmentation_scenes, voc_palette
from test_demo import nearest_mean_accuracy

SIZE = 96  # small and quick; the defaults are 128


def files(root):
    out = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = f.read()
    return out


@pytest.fixture(scope="module")
def scenes():
    """family -> [(image, labels, present)] for 30 scenes of 96 px."""
    return {family: [draw(family, np.random.default_rng([3, 0, i]), SIZE) for i in range(30)] for family in FAMILIES}


# ---------------------------------------------------------------------------------------------- the folder

@pytest.mark.parametrize("family", list(FAMILIES))
def test_folder_reads_as_voc_segmentation_with_labels_in_range(tmp_path, family):
    from resnest_gluon.dense.segmentation_eval import IGNORE as NOT_COUNTED, SegmentationFolder

    root = str(tmp_path / family)
    summary = make_segmentation_scenes(root, family, train=3, val=2, size=SIZE, seed=1)
    classes = FAMILIES[family]
    assert open(os.path.join(root, "classes.txt")).read().splitlines() == list(classes)
    assert classes[0] == "background" and summary.classes == classes
    data = SegmentationFolder(root, split="val")
    assert data.layout == "voc" and data.ids == ["val_000000", "val_000001"]
    assert SegmentationFolder(root, split="train").ids == ["train_000000", "train_000001", "train_000002"]
    pixels = np.zeros(len(classes) + 1, np.int64)
    for split in ("train", "val"):
        data = SegmentationFolder(root, split=split)
        for i in range(len(data)):
            labels = data.labels(i)
            with Image.open(data.image_path(i)) as img:
                assert img.mode == "RGB" and img.size == (SIZE, SIZE) == labels.shape[::-1]
            with Image.open(data.mask_path(i)) as mask:
                assert mask.mode == "P"
                assert np.array_equal(np.asarray(mask.getpalette(), np.uint8).reshape(-1, 3), voc_palette())
            counted = labels[labels != NOT_COUNTED]
            assert counted.min() >= 0 and counted.max() < len(classes)
            pixels += np.bincount(np.where(labels == NOT_COUNTED, len(classes), labels).ravel(),
                                  minlength=len(classes) + 1)
    record = json.load(open(os.path.join(root, "summary.json")))
    assert record["family"] == family and record["images"] == {"train": 3, "val": 2}
    from_summary = [sum(record["pixels"][s][c] for s in ("train", "val")) for c in classes + ("ignore",)]
    assert from_summary == pixels.tolist()
    assert sum(from_summary) == 5 * SIZE * SIZE


def test_palette_is_the_projects_voc_colour_map():
    from resnest_gluon.dense.drawing import palette

    assert np.array_equal(voc_palette(), palette(256))


def test_same_seed_same_bytes_even_over_an_old_folder_other_seed_other_scenes(tmp_path):
    a, b, c = (str(tmp_path / d) for d in "abc")
    for family in ("textures", "small"):
        make_segmentation_scenes(a, family, train=2, val=2, size=SIZE, seed=5)
        first = files(a)
        make_segmentation_scenes(a, family, train=2, val=2, size=SIZE, seed=5)  # a rerun overwrites in place
        make_segmentation_scenes(b, family, train=2, val=2, size=SIZE, seed=5)
        make_segmentation_scenes(c, family, train=2, val=2, size=SIZE, seed=6)
        assert files(a) == first == files(b)
        assert sorted(first) == sorted(files(c))
        assert first["JPEGImages/val_000001.jpg"] != files(c)["JPEGImages/val_000001.jpg"]
        assert {"classes.txt", "summary.json", "ImageSets/Segmentation/train.txt",
                "ImageSets/Segmentation/val.txt", "JPEGImages/train_000001.jpg",
                "SegmentationClass/train_000001.png"} <= set(first)
        assert first["ImageSets/Segmentation/val.txt"].decode().split() == ["val_000000", "val_000001"]


def test_changing_one_split_count_keeps_the_other_scenes(tmp_path):
    make_segmentation_scenes(str(tmp_path / "a"), "colours", train=2, val=1, size=SIZE)
    make_segmentation_scenes(str(tmp_path / "b"), "colours", train=3, val=2, size=SIZE)
    a, b = files(tmp_path / "a"), files(tmp_path / "b")
    for name in ("JPEGImages/train_000001.jpg", "SegmentationClass/val_000000.png"):
        assert a[name] == b[name]


def test_summary_is_written_last_and_an_interrupted_run_leaves_none(tmp_path):
    make_segmentation_scenes(str(tmp_path), "shapes", train=2, val=1, size=SIZE)
    summary = tmp_path / "summary.json"
    newest = max(os.stat(os.path.join(d, n)).st_mtime_ns for d, _, ns in os.walk(tmp_path) for n in ns)
    assert summary.stat().st_mtime_ns == newest

    def stop(done, total):
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        make_segmentation_scenes(str(tmp_path), "shapes", train=2, val=1, size=SIZE, seed=1, progress=stop)
    assert not summary.exists()
    assert not [n for _, _, names in os.walk(tmp_path) for n in names if n.endswith(".tmp")]


def test_command_line_prints_one_line_and_refuses_unknown_families(tmp_path, capsys):
    s = main([str(tmp_path / "s"), "--family", "small", "--train", "2", "--val", "1", "--size", "64", "--seed", "2"])
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("3 small scenes (2 train + 1 val, 64 px)") and "ignore" in out[0]
    assert s.family == "small" and s.size == 64 and s.seed == 2
    with pytest.raises(SystemExit, match="unknown family"):
        main([str(tmp_path / "t"), "--family", "faces"])
    with pytest.raises(SystemExit, match="at least 64"):
        main([str(tmp_path / "t"), "--size", "32"])


# ---------------------------------------------------------------------------------------------- the labels

@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_class_appears_about_equally_often(scenes, family):
    classes = FAMILIES[family]
    seen = np.zeros(len(classes), np.int64)  # scenes with labelled pixels of the class
    drawn = np.zeros(len(classes), np.int64)  # objects (regions) drawn of the class
    for _, labels, present in scenes[family]:
        seen += np.bincount(labels.ravel(), minlength=256)[:len(classes)] > 0
        drawn += np.bincount(present, minlength=len(classes))
    assert (seen > 0).all(), dict(zip(classes, seen))
    objects = drawn[1:]
    assert objects.min() >= 0.4 * objects.mean(), dict(zip(classes[1:], objects))


@pytest.mark.parametrize("family", list(FAMILIES))
def test_ignore_band_is_present_but_thin_and_every_object_keeps_a_core(scenes, family):
    ignored = labelled = 0
    for _, labels, present in scenes[family]:
        ignored += int((labels == IGNORE).sum())
        labelled += int((labels != IGNORE).sum())
        for c in set(present):  # a class drawn in the scene keeps labelled pixels
            assert (labels == c).sum() >= 6
    assert ignored > 0
    assert ignored < 0.03 * labelled  # an edge, not a margin: VOC's band is a few % of its pixels too


def test_band_is_where_coverage_is_mixed():
    """One square of known coverage: pixels it covers >= 0.75 are its class, <= 0.25 background, between: 255."""
    from demos.segscenes import label_map

    cover = np.zeros((8, 8), np.float32)
    cover[2:6, 2:6] = 1
    cover[2:6, 6] = 0.5
    cover[2:6, 1] = 0.8
    cover[6, 2:6] = 0.2
    labels = label_map(3, [2], [cover])
    assert (labels[2:6, 1:6] == 2).all() and (labels[2:6, 6] == IGNORE).all() and (labels[6, 2:6] == 0).all()
    assert label_map(3, [1, 2], [np.full((2, 2), 0.5, np.float32)] * 2).tolist() == [[IGNORE] * 2] * 2


def class_mean_colours(scene_list):
    """Per (scene, class present) the mean RGB of the class's labelled pixels, and the class."""
    feats, classes = [], []
    for image, labels, _ in scene_list:
        for c in np.unique(labels):
            if c not in (0, IGNORE) and (labels == c).sum() >= 6:
                feats.append(image[labels == c].mean(0))
                classes.append(c)
    return np.array(feats), np.array(classes)


@pytest.mark.parametrize("family", ["shapes", "small", "textures"])
def test_mean_colour_does_not_give_the_class_away(scenes, family):
    feats, classes = class_mean_colours(scenes[family])
    chance = 1 / (len(FAMILIES[family]) - 1)
    assert nearest_mean_accuracy(feats, classes) < chance + 0.15


def test_in_the_colours_family_it_does(scenes):
    """The control: the same check sees the class in the family whose class is the colour."""
    feats, classes = class_mean_colours(scenes["colours"])
    assert nearest_mean_accuracy(feats, classes) > 0.6
