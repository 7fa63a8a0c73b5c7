"""How the scripts end on a known failure: one line on stderr naming the file, and the exit code of
resnest_gluon/exits.py's table (2 bad input, 3 inputs skipped, 8 weights unavailable); bugs keep their traceback.

The scripts run as separate processes: one real interpreter for the headline case (verify.py --pretrained offline),
the others forked from one interpreter that imported everything once (tests/forkrun.py), tiny files made here.
"""
import io
import json
import os
import re
import socket
import subprocess
import sys
import zipfile

import mxnet as mx
import pytest

from conftest import REPO
from resnest_gluon import exits, store
from resnest_gluon.data.records import RecordImageDataset, decode_record, iter_records

PY = sys.executable
FORKRUN = os.path.join(REPO, "tests", "forkrun.py")
NAME = "resnest14"
FILES = ("dir", "garbage", "tiny", "r14", "classes", "text", "empty_mirror", "bad_mirror", "home", "rec", "a_file")
STEM = f"{NAME}-{store.MODEL_SHA1[NAME][:8]}"


def script(name):
    return os.path.join(REPO, "scripts", f"{name}.py")


def env_with_repo(**extra):
    path = os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", **extra}


PROGRESS_BAR = re.compile(r"^[\w.-]+: +\d+%\|")  # tqdm's, of a download (redrawn after \r; gone on a terminal)


def the_line(stderr):
    """The one line on stderr besides a download's progress bar (the test fails when there are more)."""
    lines = [line for line in stderr.splitlines() if line.strip() and not PROGRESS_BAR.match(line)]
    assert len(lines) == 1, f"{len(lines)} lines on stderr:\n{stderr[-3000:]}"
    return lines[0]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("errors")
    f = {"dir": d, "garbage": d / "garbage.params", "tiny": d / "tiny.params", "r14": d / "r14.params",
         "classes": d / "classes.txt", "text": d / "notes.jpg", "empty_mirror": d / "empty_mirror",
         "bad_mirror": d / "bad_mirror", "home": d / "home", "rec": d / "val.rec", "a_file": d / "a_file"}
    assert set(f) == set(FILES)
    f["garbage"].write_bytes(b"these are not weights\n" * 8)
    mx.nd.save(str(f["tiny"]), {"conv1.0.weight": mx.nd.zeros((2, 3, 3, 3))})
    from resnest_gluon.zoo import get_model

    net = get_model(NAME, classes=2)
    net.initialize()
    net.save_parameters(str(f["r14"]))
    f["classes"].write_text("cat\ndog\n")
    f["text"].write_text("a text file named like an image\n")
    f["a_file"].write_text("x")
    f["rec"].write_bytes(b"\0" * 64)
    f["empty_mirror"].mkdir()
    zips = f["bad_mirror"] / "gluon" / "models"
    zips.mkdir(parents=True)
    with zipfile.ZipFile(zips / f"{STEM}.zip", "w") as z:  # the right name, other bytes: the SHA-1 check fails
        z.writestr(f"{STEM}.params", b"not the published weights")
    return {k: str(v) for k, v in f.items()}


def offline(f, mirror="empty_mirror"):
    """Environment of a machine without the weights whose mirror is a file:// folder (no network needed)."""
    return {"MXNET_HOME": f["home"], "RESNEST_GLUON_REPO": "file://" + f[mirror]}


def cases(f):
    """``(id, script, argv, env, exit code, texts the line must hold)``."""
    cls = ["--model", NAME]
    return [
        ("verify-garbage-params", "verify", ["--rec-val", f["rec"], "--params", f["garbage"]], {}, 2,
         [f["garbage"], "not a readable MXNet .params file (Invalid NDArray file format)"]),
        ("verify-wrong-model", "verify", ["--rec-val", f["rec"], "--params", f["tiny"], *cls], {}, 2,
         [f["tiny"], "does not fit model resnest14"]),
        ("verify-missing-rec", "verify", ["--rec-val", f["rec"] + ".nope", "--params", f["r14"]], {}, 2,
         [f["rec"] + ".nope"]),
        ("verify-flags", "verify", ["--params", f["r14"]], {}, 2, ["--rec-val", "verify.py --help"]),
        ("verify-checksum", "verify", ["--rec-val", f["rec"], *cls, "--pretrained"], offline(f, "bad_mirror"), 8,
         [f["bad_mirror"], "SHA-1", f"{STEM}.params"]),
        ("predict-offline", "predict", [f["text"], *cls, "--pretrained"], offline(f), 8,
         [f["empty_mirror"], f"{STEM}.zip", "RESNEST_GLUON_REPO"]),
        ("predict-not-an-image", "predict", [f["text"], "--params", f["r14"], *cls, "--classes", f["classes"]], {},
         3, ["skipped 1 of 1 files", f["text"], "not an image"]),
        ("detect-missing-params", "detect", [f["text"], "--params", f["garbage"] + ".nope", "--out", f["dir"]], {},
         2, [f["garbage"] + ".nope"]),
        ("detect-bare-params", "detect", [f["text"], "--params", f["garbage"], "--out", f["dir"]], {}, 2,
         [f["garbage"]]),
        ("segment-garbage-params", "segment", [f["text"], "--params", f["garbage"], "--out", f["dir"]], {}, 2,
         [f["garbage"]]),
        ("eval_detection-garbage-params", "eval_detection", ["--rec-val", f["rec"], "--params", f["garbage"],
                                                             "--out", f["dir"]], {}, 2, [f["garbage"]]),
        ("eval_segmentation-missing-params", "eval_segmentation", ["--data", f["dir"], "--params",
                                                                   f["garbage"] + ".nope", "--out", f["dir"]], {},
         2, [f["garbage"] + ".nope"]),
        ("export_onnx-garbage-params", "export_onnx", ["--params", f["garbage"], *cls, "--out",
                                                       f["dir"] + "/x.onnx"], {}, 2, [f["garbage"]]),
        ("export_onnx-offline", "export_onnx", [*cls, "--pretrained", "--out", f["dir"] + "/x.onnx"], offline(f), 8,
         [f["empty_mirror"]]),
        ("convert-missing-checkpoint", "convert_torch_weights", [f["text"] + ".pth", f["dir"] + "/w.params",
                                                                 "--model", "resnest50d"], {}, 2, [f["text"] + ".pth"]),
        ("model_tour-out-under-a-file", "model_tour", ["--out", f["a_file"] + "/tour"], {}, 2, [f["a_file"]]),
        ("model_tour-unknown-model", "model_tour", ["--run", "resnest51"], {}, 2, ["resnest51"]),
    ]


@pytest.fixture(scope="module")
def results(files):
    """Every case of :func:`cases` run by tests/forkrun.py: ``{id: (case, result)}``; and that process's stderr."""
    todo = cases(files)
    payload = json.dumps([{"script": script(s), "argv": argv, "env": env} for _, s, argv, env, _, _ in todo])
    proc = subprocess.run([PY, FORKRUN], input=payload, capture_output=True, text=True, timeout=600, cwd=REPO,
                          env=env_with_repo())
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {c[0]: (c, r) for c, r in zip(todo, json.loads(proc.stdout))}, proc.stderr


CASES = [c[0] for c in cases(dict.fromkeys(FILES, ""))]


def test_every_script_has_a_case():
    names = {os.path.splitext(n)[0] for n in os.listdir(os.path.join(REPO, "scripts")) if n.endswith(".py")}
    covered = {c[1] for c in cases(dict.fromkeys(FILES, ""))}
    assert names - covered <= {"train_imagenet", "train_detection", "train_segmentation", "demo", "demo_detection"}


def test_importing_the_scripts_prints_nothing(results):
    assert results[1] == ""


@pytest.mark.parametrize("case", CASES)
def test_known_failure_is_one_line_naming_the_file_and_its_exit_code(results, case):
    (_, name, argv, _, code, texts), result = results[0][case]
    line = the_line(result["stderr"])
    assert result["code"] == code, f"{name} {argv}: exit {result['code']}, stderr: {result['stderr'][-2000:]}"
    assert line.startswith("skipped" if code == exits.EXIT_SKIPPED else "error: "), line
    for text in texts:
        assert text in line, line
    assert "object at 0x" not in line and "Traceback" not in line


def test_verify_pretrained_offline_is_one_line_with_exit_code_8(files):
    """The issue's case, as the user runs it (its own interpreter): no network, the weights not cached."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:  # bound, not listening: refused at once
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}/"
        proc = subprocess.run([PY, script("verify"), "--rec-val", files["rec"], "--model", NAME, "--pretrained"],
                              capture_output=True, text=True, timeout=120, cwd=REPO,
                              env=env_with_repo(MXNET_HOME=files["home"], RESNEST_GLUON_REPO=dead))
    line = the_line(proc.stderr)
    assert proc.returncode == exits.EXIT_WEIGHTS_UNAVAILABLE, proc.stderr
    assert line.startswith(f"error: Cannot download the weights of '{NAME}' from {dead}gluon/models/{STEM}.zip")
    assert "could not connect" in line and os.path.join(files["home"], "models") in line
    assert not os.listdir(os.path.join(files["home"], "models"))  # no partial file left


# ----------------------------------------------------------------------------- the runner itself


def test_known_failures_map_to_their_codes_and_one_line(capsys):
    def fail(err):
        raise err

    full = OSError(28, "No space left on device")
    full.filename = "/data/out.json"
    for err, code in ((ValueError("x.params: bad"), 2), (FileNotFoundError("no such file: y.rec"), 2),
                      (PermissionError(13, "Permission denied", "z.json"), 2), (full, 4),
                      (store.WeightsUnavailableError("offline"), 8), (ImportError("needs onnx: pip install"), 2)):
        assert exits.run_script(fail, err) == code
        assert capsys.readouterr().err.count("\n") == 1
    assert exits.run_script(fail, full) == 4 and "/data/out.json" in capsys.readouterr().err
    assert issubclass(store.WeightsUnavailableError, RuntimeError)  # the old except clauses still catch it


def test_bugs_keep_their_traceback(monkeypatch):
    def bug():
        return {}["missing"]

    with pytest.raises(KeyError):
        exits.run_script(bug)
    with pytest.raises(ModuleNotFoundError):  # a broken import is a bug, not "install this"
        exits.run_script(lambda: __import__("resnest_gluon_no_such_module"))
    monkeypatch.setenv(exits.TRACEBACK_ENV, "1")
    with pytest.raises(ValueError):  # and known failures on demand
        exits.run_script(lambda: int("x"))


def test_caller_rows_come_first_and_return_values_become_codes(capsys):
    class Diverged(ArithmeticError):
        pass

    def diverge():
        raise Diverged("loss is nan at step 7")

    assert exits.run_script(diverge, failures=[(Diverged, 3, "error")]) == 3
    assert capsys.readouterr().err == "error: loss is nan at step 7\n"
    rows = [(lambda e: "step" in str(e), 5, "preempted")]  # a predicate row, another first word
    assert exits.run_script(diverge, failures=rows) == 5 and capsys.readouterr().err.startswith("preempted: loss")
    assert exits.run_script(lambda: 3) == 3 and exits.run_script(lambda: {"report": 1}) == 0
    assert exits.run_script(lambda: True) == 0
    with pytest.raises(SystemExit):  # argparse, --help and explicit exits pass through
        exits.run_script(sys.exit, 3)


def test_interrupt_and_notes(capsys):
    def interrupted():
        raise KeyboardInterrupt

    assert exits.run_script(interrupted) == 130 and capsys.readouterr().err == "interrupted\n"

    def with_note():
        try:
            raise ValueError("the file disagrees with MXNet")
        except ValueError as err:
            raise exits.add_note(err, "(model.onnx left as it was)")

    assert exits.run_script(with_note) == 2
    assert capsys.readouterr().err == "error: the file disagrees with MXNet (model.onnx left as it was)\n"


def test_argument_errors_are_one_line(capsys):
    parser = exits.ArgumentParser(prog="tool.py")
    parser.add_argument("--rec", required=True)
    with pytest.raises(SystemExit) as stop:
        parser.parse_args([])
    assert stop.value.code == 2
    assert capsys.readouterr().err == "error: the following arguments are required: --rec (see tool.py --help)\n"


def test_plain_reason_drops_reprs_and_mxnet_frames():
    assert exits.plain_reason("cannot identify image file <_io.BytesIO object at 0x7f3a2c1b9e50>") == \
        "cannot identify image file"
    mxnet_text = ('Traceback (most recent call last):\n  File "../src/ndarray/ndarray.cc", line 1858\n'
                  "MXNetError: Check failed: header == kMXAPINDArrayListMagic: Invalid NDArray file format")
    assert exits.plain_reason(mxnet_text) == "Invalid NDArray file format"
    assert exits.plain_reason("two\nlines") == "two lines"
    with pytest.raises(mx.base.MXNetError) as err:
        mx.nd.load(__file__)
    assert exits.plain_reason(err.value) == "Invalid NDArray file format"


def test_the_module_imports_the_standard_library_only():
    path = os.path.join(REPO, "resnest_gluon", "exits.py")
    code = ("import importlib.util, sys; spec = importlib.util.spec_from_file_location('exits', sys.argv[1]); "
            "spec.loader.exec_module(importlib.util.module_from_spec(spec)); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('mxnet', 'numpy', 'resnest_gluon')))")
    proc = subprocess.run([PY, "-c", code, path], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stdout + proc.stderr


# ----------------------------------------------------------------------------- messages that name the record


def test_an_undecodable_record_names_the_file_record_key_offset_and_reason(tmp_path):
    rec, idx = str(tmp_path / "r.rec"), str(tmp_path / "r.idx")
    writer = mx.recordio.MXIndexedRecordIO(idx, rec, "w")
    png = b"\x89PNG\r\n\x1a\n" + b"\0" * 40  # a PNG signature, then nothing of an image
    for key, payload in ((10, b"plain text, not an image"), (11, png)):
        writer.write_idx(key, mx.recordio.pack(mx.recordio.IRHeader(0, 1.0, key, 0), payload))
    writer.close()
    data = RecordImageDataset(rec, idx)
    messages = []
    for i in range(2):
        with pytest.raises(ValueError) as err:
            decode_record(*data.payload(i))
        messages.append(str(err.value))
    assert messages[0].startswith(f"{rec} record #0 (key 10, offset 0): not a decodable image (OpenCV: no known "
                                  f"image format, 24 bytes starting 70 6c 61 69")
    assert messages[1].startswith(f"{rec} record #1 (key 11, offset ")
    assert "damaged or truncated PNG data" in messages[1]
    assert not any("0x" in m for m in messages)


def test_a_file_that_is_not_recordio_is_named(tmp_path):
    path = tmp_path / "photo.jpg"
    path.write_bytes(b"\xff\xd8\xff" + b"\0" * 100)
    with pytest.raises(ValueError, match=re.escape(f"{path}: not a RecordIO file, or damaged at its start (MXNet: "
                                                   "Invalid RecordIO File)")):
        list(iter_records(str(path)))


def test_recordio_check_reason_has_no_object_repr():
    from resnest_gluon.data.checking import _decode

    assert _decode((4, b"plain text"))[1] == "cannot decode image (PIL: cannot identify image file)"
    jpeg = io.BytesIO()
    from PIL import Image

    Image.new("RGB", (32, 32)).save(jpeg, format="JPEG")
    assert "0x" not in _decode((5, jpeg.getvalue()[:60]))[1]


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's /proc, where no file can be created")
def test_a_write_that_fails_names_the_file_asked_for():
    from resnest_gluon.atomic import write_json

    with pytest.raises(OSError) as err:
        write_json("/proc/resnest_gluon_report.json", {})
    assert exits.one_line(err.value).endswith("(writing /proc/resnest_gluon_report.json)")
