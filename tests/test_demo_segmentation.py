"""The segmentation demo (demos/segmentation.py, ``make demo-segmentation``) run ``--quick`` on the quick
classification demo's checkpoint: every step (scenes, pack-segmentation, horovodrun training, eval_segmentation,
segment.py, report) on a few scenes for a few steps; and the checks with which it refuses results that contradict
each other."""
import json
import subprocess
import sys

import pytest

from conftest import REPO
from demos import segmentation

DEMO = [sys.executable, "-m", "demos.segmentation"]  # run from the repository root, as make demo-segmentation does


@pytest.fixture(scope="module")
def quick_segmentation_demo(quick_demo, tmp_path_factory):
    out = tmp_path_factory.mktemp("demo-segmentation") / "out"
    proc = subprocess.run([*DEMO, "--out", str(out), "--quick", "--backbone-from", str(quick_demo[0])],
                          capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return out, proc


def test_quick_demo_runs_every_step_and_leaves_a_report(quick_segmentation_demo, quick_demo):
    out, proc = quick_segmentation_demo
    for name in ("report.md", "curves.png", "segments.png", "eval.json", "summary.json", "segments/segments.json",
                 "segmenter/metrics.jsonl", "data/rec/train.rec", "data/rec/val.idx"):
        assert (out / name).is_file(), name
        if name.endswith(".png"):
            assert (out / name).stat().st_size > 5000, name
    for n in range(1, 8):
        assert f"=== [{n}/7]" in proc.stdout and f"--- [{n}/7]" in proc.stdout
    backbone = json.load(open(quick_demo[0] / "summary.json"))["params"]
    assert "horovodrun --gloo -np 2" in proc.stdout and f"--backbone-params {backbone}" in proc.stdout
    assert "--recipe small" in proc.stdout
    epochs = [line for line in proc.stdout.splitlines() if line.startswith("  epoch ")]
    assert len(epochs) == 1  # one line per epoch, ranks other than 0 silent


def test_eval_equals_trainings_last_validation_and_segment_uses_the_checkpoints_transform(quick_segmentation_demo):
    out, _ = quick_segmentation_demo
    summary = json.load(open(out / "summary.json"))
    evaluated = json.load(open(out / "eval.json"))
    segmented = json.load(open(out / "segments" / "segments.json"))
    assert summary["mean_iou"] == evaluated["mean_iou"] == pytest.approx(summary["train_last_val_mean_iou"], abs=1e-6)
    assert evaluated["images"] == 4 and evaluated["class_names"] == summary["classes"]
    assert segmented["data_config"] == evaluated["data_config"]
    assert len(segmented["results"]) == len(summary["drawn"]["scenes"]) == 2
    report = (out / "report.md").read_text()
    assert f"**mIoU {evaluated['mean_iou']:.4f}**" in report and "![segments](segments.png)" in report


def test_the_checks_refuse_contradicting_results():
    trained = {"epochs": [{"val_mean_iou": 0.71, "val_pixel_accuracy": 0.9}]}
    with pytest.raises(segmentation.DemoError, match="differs from training's last validation"):
        segmentation.check_same_scores({"mean_iou": 0.70, "pixel_accuracy": 0.9}, trained)
    segmentation.check_same_scores({"mean_iou": 0.71, "pixel_accuracy": 0.9}, trained)
    with pytest.raises(segmentation.DemoError, match="segment and eval disagree"):
        segmentation.check_sample({"pixel_accuracy": 0.6}, {"pixel_accuracy": 0.9}, 6)
    segmentation.check_sample({"pixel_accuracy": 0.85}, {"pixel_accuracy": 0.9}, 6)
