"""The end-to-end demo (demos/classification.py, ``make demo``) and the dataset it draws (demos/shapes.py).

The demo test runs ``--quick``: every step of ``make demo`` (dataset, RecordIO, horovodrun training with 2 ranks,
verify, predict, latency, report) on a tiny dataset, in about a minute or two.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import REPO
from demos.shapes import CLASSES, draw_sample, make_dataset

DEMO = [sys.executable, "-m", "demos.classification"]  # run from the repository root, as make demo does


# ---------------------------------------------------------------------------------------------- the dataset

def test_dataset_is_a_balanced_class_tree_of_rgb_jpegs(tmp_path):
    summary = make_dataset(str(tmp_path), train_per_class=6, val_per_class=2, seed=0)
    assert summary.total == len(CLASSES) * 8 and len(CLASSES) >= 10
    for split, n in (("train", 6), ("val", 2)):
        assert sorted(os.listdir(tmp_path / split)) == list(CLASSES)  # sorted: make-list's label order
        for name in CLASSES:
            files = sorted(os.listdir(tmp_path / split / name))
            assert len(files) == n
            with Image.open(tmp_path / split / name / files[0]) as im:
                assert im.format == "JPEG" and im.mode == "RGB" and min(im.size) >= 64


def test_same_seed_same_bytes_other_seed_other_images(tmp_path):
    a, b, c = (make_dataset(str(tmp_path / d), 2, 1, seed=s).root for d, s in (("a", 7), ("b", 7), ("c", 8)))
    rel = os.path.join("val", "star", "star_0000.jpg")
    read = lambda root: open(os.path.join(root, rel), "rb").read()  # noqa: E731
    assert read(a) == read(b)
    assert read(a) != read(c)


def test_too_small_images_are_refused(tmp_path):
    with pytest.raises(ValueError, match="at least 64"):
        make_dataset(str(tmp_path), 1, 1, size=48)


def nearest_mean_accuracy(features, labels, seed=0):
    """Fits per-class mean feature vectors on a random half, returns the accuracy on the other half."""
    rng = np.random.default_rng(seed)
    test = rng.permutation(len(labels)) < len(labels) // 2
    classes = np.unique(labels)
    means = np.stack([features[~test & (labels == c)].mean(0) for c in classes])
    dist = ((features[test, None, :] - means[None]) ** 2).sum(-1)
    return float((classes[dist.argmin(1)] == labels[test]).mean())


def mean_rgb_features(per_class, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(CLASSES)), per_class)
    feats = np.stack([draw_sample(CLASSES[c], rng).reshape(-1, 3).mean(0) for c in labels])
    return feats, labels


def test_classes_are_not_separable_by_mean_colour():
    """Learnable but not trivial: mean RGB, the feature the old flat-colour test data gave away, is at chance."""
    feats, labels = mean_rgb_features(per_class=60)
    chance = 1 / len(CLASSES)
    assert nearest_mean_accuracy(feats, labels) < chance + 0.08


def test_the_separability_check_does_catch_colour_coded_classes():
    """Control: tint each class a little (as colour-coded data would be) and the same classifier sees it."""
    feats, labels = mean_rgb_features(per_class=30)
    offsets = np.random.default_rng(1).uniform(-150, 150, (len(CLASSES), 3))  # a strong colour cast per class
    assert nearest_mean_accuracy(feats + offsets[labels], labels) > 3 / len(CLASSES)  # 3x chance


# ---------------------------------------------------------------------------------------------- the demo

def test_demo_refuses_to_delete_a_folder_it_did_not_make(tmp_path):
    keep = tmp_path / "thesis.tex"
    keep.write_text("do not lose me")
    proc = subprocess.run([*DEMO, "--out", str(tmp_path), "--quick"], capture_output=True, text=True, timeout=60,
                          cwd=REPO)
    assert proc.returncode == 1
    assert "refusing to delete" in proc.stderr and keep.read_text() == "do not lose me"


def test_quick_demo_runs_every_step_and_leaves_a_report(quick_demo):
    out, proc = quick_demo
    assert not (out / "stale.txt").exists()
    for name in ("report.md", "samples.png", "curves.png", "predictions.png", "latency.png", "verify.json",
                 "predict.json", "summary.json", "latency/latency.json", "train/metrics.jsonl"):
        assert (out / name).is_file(), name
        if name.endswith(".png"):
            assert (out / name).stat().st_size > 5000, name
    for n in range(1, 9):
        assert f"=== [{n}/8]" in proc.stdout and f"--- [{n}/8]" in proc.stdout
    assert "total time:" in proc.stdout and str(out / "report.md") in proc.stdout
    assert "--min-random-area 0.5" in proc.stdout  # crops keep the shape (the recipe's 0.08 would cut it away)


def test_verify_top1_equals_trainings_last_validation_and_the_report_says_so(quick_demo):
    out, _ = quick_demo
    records = [json.loads(line) for line in open(out / "train" / "metrics.jsonl")]
    last = [r for r in records if r["event"] == "epoch"][-1]
    verified = json.load(open(out / "verify.json"))
    assert last["epoch"] == 2 and verified["images"] == last["val_images"] == 80
    assert verified["top1_correct"] == round(last["val_top1"] * last["val_images"])
    report = (out / "report.md").read_text()
    assert f"Validation top-1: {verified['top1']:.2%}" in report
    assert "![training curves](curves.png)" in report and "![latency](latency.png)" in report


def test_quick_demo_predicts_the_sample_images_with_the_dataset_classes(quick_demo):
    out, _ = quick_demo
    predictions = json.load(open(out / "predict.json"))["predictions"]
    assert len(predictions) == 4
    for p in predictions:
        assert os.path.basename(os.path.dirname(p["image"])) in CLASSES  # the image's class folder
        assert p["top"][0]["class"] in CLASSES
