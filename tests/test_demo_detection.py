"""The detection demo (demos/detection.py, ``make demo-detection``) run ``--quick`` on the quick
classification demo's checkpoint: every step (scenes, pack-detection, horovodrun detector training, eval_detection,
detect.py, report) on a few scenes for a few steps; and the checks with which it refuses results that contradict
each other."""
import json
import os
import shlex
import subprocess
import sys

import pytest

from conftest import REPO
from demos import detection
from demos.steps import BIN, shell_line

DEMO = [sys.executable, "-m", "demos.detection"]  # run from the repository root, as make demo-detection does


@pytest.fixture(scope="module")
def quick_detection_demo(quick_demo, tmp_path_factory):
    """The detection demo --quick on the quick classification demo's checkpoint (conftest's ``quick_demo``)."""
    out = tmp_path_factory.mktemp("demo-detection") / "out"
    proc = subprocess.run([*DEMO, "--out", str(out), "--quick", "--backbone-from", str(quick_demo[0])],
                          capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return out, proc


def test_quick_demo_runs_every_step_and_leaves_a_report(quick_detection_demo, quick_demo):
    out, proc = quick_detection_demo
    for name in ("report.md", "scenes.png", "curves.png", "detections.png", "eval.json", "summary.json",
                 "detections/detections.json", "detector/metrics.jsonl", "data/rec/train.rec", "data/rec/val.idx"):
        assert (out / name).is_file(), name
        if name.endswith(".png"):
            assert (out / name).stat().st_size > 5000, name
    for n in range(1, 8):
        assert f"=== [{n}/7]" in proc.stdout and f"--- [{n}/7]" in proc.stdout
    backbone = json.load(open(quick_demo[0] / "summary.json"))["params"]
    assert "horovodrun --gloo -np 2" in proc.stdout and f"--backbone-params {backbone}" in proc.stdout
    epochs = [line for line in proc.stdout.splitlines() if line.startswith("  epoch ")]
    assert len(epochs) == 1  # one line per epoch, ranks other than 0 silent
    shown = [line[2:] for line in proc.stdout.splitlines() if line.startswith("$ ") and "train_detection.py" in line]
    assert len(shown) == 1 and "'train_patterns=(?!.*moving)" in shown[0]
    assert subprocess.run(["bash", "-n", "-c", "--", shown[0]]).returncode == 0  # it pastes (syntax only, not run)
    assert (out / "logs" / "train-detector.out.log").read_text().splitlines()[0] == f"$ {shown[0]}"


def test_eval_equals_trainings_last_validation_and_detect_uses_the_checkpoints_transform(quick_detection_demo):
    out, _ = quick_detection_demo
    summary = json.load(open(out / "summary.json"))
    evaluated = json.load(open(out / "eval.json"))
    detected = json.load(open(out / "detections" / "detections.json"))
    assert summary["voc07_map"] == evaluated["voc07_map"]
    assert abs(summary["voc07_map"] - summary["train_last_val_voc07_map"]) <= 1e-4
    assert evaluated["images"] == 8 and evaluated["class_names"] == summary["classes"]
    assert detected["data_config"] == evaluated["data_config"] and detected["data_config"]["short"] == 96
    assert len(detected["results"]) == len(summary["drawn"]["scenes"]) == 3
    report = (out / "report.md").read_text()
    assert f"**VOC07 mAP {evaluated['voc07_map']:.4f}**" in report and "![detections](detections.png)" in report


def test_the_training_command_it_prints_pastes_into_a_shell(tmp_path):
    """The demo prints and logs each command as ``steps.shell_line`` writes it: the detector's training command with
    the demo's own settings (a --model-arg of regular-expression parentheses, a backbone path with a space) is one
    line a POSIX shell parses, into the command the demo ran (from the repository root)."""
    backbone = str(tmp_path / "my backbone" / "ckpt-0008.params")
    cmd, _ = detection.training_command(os.path.join(REPO, "out", "demo-detection"), detection.Settings(),
                                        os.path.join(BIN, "horovodrun"), backbone)
    line = shell_line(cmd)

    def parses(text):  # bash -n: syntax only, nothing runs
        return subprocess.run(["bash", "-n", "-c", "--", text], capture_output=True).returncode == 0

    assert parses(line) and not parses(" ".join(cmd))  # the space-joined line of before was a syntax error
    argv = shlex.split(line)
    assert [os.path.join(REPO, a) if os.path.isabs(c) else a for a, c in zip(argv, cmd)] == cmd
    assert argv[argv.index("--backbone-params") + 1] == backbone and "scripts/train_detection.py" in argv
    assert f"train_patterns={detection.DETECTOR_ARGS[-1].split('=', 1)[1]}" in argv

    flags = shell_line(detection.model_arg_flags(detection.Settings()))  # the report's detector settings
    assert parses(flags) and shlex.split(flags) == [a for arg in detection.DETECTOR_ARGS
                                                    for a in ("--model-arg", arg)]


def test_the_checks_refuse_contradicting_results():
    # 2 of 20 objects found is implausible at a recall of 0.9, 17 is not
    assert detection.plausible_hits(2, 20, 0.9) < detection.PLAUSIBLE < detection.plausible_hits(17, 20, 0.9)
    trained = {"epochs": [{"val_voc07_map": 0.71}], "params": "x.params", "save_dir": "d"}
    with pytest.raises(detection.DemoError, match="differs from training's last validation"):
        detection.check_same_map({"voc07_map": 0.70}, trained)
    detection.check_same_map({"voc07_map": 0.71}, trained)


def test_refuses_a_missing_backbone_and_one_of_another_model(tmp_path):
    def demo(*args):
        return subprocess.run([*DEMO, "--out", str(tmp_path / "o"), *args], capture_output=True, text=True,
                              timeout=120, cwd=REPO)

    proc = demo("--backbone-params", str(tmp_path / "none.params"))
    assert proc.returncode == 2 and "--backbone-params: no such file" in proc.stderr
    proc = demo("--backbone-from", str(tmp_path))
    assert proc.returncode == 1 and "no summary.json (run `make demo` first" in proc.stderr
    import resnest_gluon as rg
    from resnest_gluon.trained import save_trained

    net = rg.get_model("resnest26", classes=3)
    net.initialize()
    save_trained(net, str(tmp_path / "r26.params"))
    proc = demo("--backbone-params", str(tmp_path / "r26.params"))
    assert proc.returncode == 1 and "is not a resnest14 checkpoint" in proc.stderr
