"""Every command in README.md and in the documentation site's pages is exercised here, so none of them rots.

The commands come from the ```bash blocks of README.md, then of the pages of ``mkdocs.yml``'s nav in its order (the
home page is README itself). Those that can run on a CPU test machine run for real, verbatim, in a scratch workspace
where the pages' own commands produce each other's inputs (make-list -> pack -> check -> train -> verify), with a
small generated ImageNet-like tree under ``~/imagenet``. The others need what no test machine has (the published
ImageNet weights, GPUs or a 64-GPU cluster, minutes of benchmarking): their arguments go through the script's own
parser, so a renamed flag or a wrong model name still fails here. ``make demo`` / ``make test`` are the two commands
CI and ``tests/test_demo.py`` run. Links and anchors are checked by ``mkdocs build --strict`` (tests/test_docs.py).
"""
import json
import os
import re
import shlex
import subprocess

import pytest
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV_BIN = os.path.join(REPO, ".venv", "bin")
TORCH_PYTHON = os.path.join(REPO, ".venv-torch", "bin", "python")
CLASSES, TRAIN_PER_CLASS, VAL_PER_CLASS = 10, 8, 2

# Commands that cannot run here, and why; their arguments are still parsed.
HEAVY_SCRIPTS = {"benchmarks/latency.py": "minutes of timing", "benchmarks/compare.py": "minutes of timing",
                 "benchmarks/data_throughput.py": "minutes of timing", "benchmarks/op_profile.py": "profiling",
                 "benchmarks/agreement.py": "the demo's trained model (make demo writes it; the demo test runs it)",
                 "benchmarks/dense_speed.py": "minutes of timing",
                 "benchmarks/segmentation_train_speed.py": "minutes of timing",
                 "scripts/detect.py": "a trained detector (tests/test_dense_inference.py runs it on one)",
                 "scripts/segment.py": "a trained segmenter (tests/test_dense_inference.py runs it on one)",
                 "scripts/train_detection.py": "a detection dataset and minutes per epoch (tests/test_train_detection.py "
                                               "trains on generated scenes)",
                 "scripts/train_segmentation.py": "a segmentation dataset and minutes per epoch "
                                                  "(tests/test_train_segmentation.py trains on generated scenes)",
                 "scripts/eval_detection.py": "a trained detector and a detection .rec (tests/test_detection_eval.py "
                                              "runs it on ones)",
                 "scripts/eval_segmentation.py": "a trained segmenter and a labelled folder "
                                                 "(tests/test_segmentation_eval.py runs it on ones)"}


def _nav_pages(nav):
    for item in nav:
        value = next(iter(item.values())) if isinstance(item, dict) else item
        if isinstance(value, list):
            yield from _nav_pages(value)
        else:
            yield value


class _ConfigLoader(yaml.SafeLoader):
    """mkdocs.yml as plain data: its ``!!python/...`` tags (the heading slugs' function) are not needed here."""


_ConfigLoader.add_multi_constructor("tag:yaml.org,2002:python/", lambda loader, suffix, node: None)


def mkdocs_config():
    with open(os.path.join(REPO, "mkdocs.yml"), encoding="utf-8") as f:
        return yaml.load(f, Loader=_ConfigLoader)


def command_pages():
    """README.md, then the site's pages in nav order (index.md is README, included; API pages have no commands)."""
    config = mkdocs_config()
    docs = os.path.join(REPO, config.get("docs_dir", "docs"))
    pages = [os.path.join(docs, page) for page in _nav_pages(config["nav"])
             if page != "index.md" and not re.match(r"^[a-z]+:", page)]
    return [os.path.join(REPO, "README.md")] + pages


def page_commands(path):
    """(line number, command) for every command of a page's bash blocks; continuations joined, comments dropped."""
    commands, block, pending = [], False, None
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if line.startswith("```"):
                block = line.strip() == "```bash"
                continue
            if not block:
                continue
            text = line.split(" #", 1)[0].rstrip() if not line.lstrip().startswith("#") else ""
            if pending:
                pending = (pending[0], pending[1] + " " + text.strip().rstrip("\\").strip())
            elif text.strip():
                pending = (number, text.strip().rstrip("\\").strip())
            if pending and not text.endswith("\\"):
                commands.append(pending)
                pending = None
    return commands


class Command:
    """A page's command taken apart: environment assignments, launcher (horovodrun), interpreter, program, args.

    ``script`` is the file the program runs: its path, or for ``python -m pkg.mod`` the module's file (``module`` is
    then its name).
    """

    def __init__(self, page, line, text):
        self.page, self.line, self.text = os.path.relpath(page, REPO), line, text
        words = shlex.split(text.split("&&")[0])
        self.env = {}
        while words and re.match(r"^[A-Z_]+=", words[0]):
            key, value = words.pop(0).split("=", 1)
            self.env[key] = value
        self.launcher = []
        if words and os.path.basename(words[0]) == "horovodrun":
            while words and not os.path.basename(words[0]).startswith("python"):
                self.launcher.append(words.pop(0))
        self.python = words.pop(0) if words and os.path.basename(words[0]).startswith("python") else None
        self.module = None
        if self.python and words[:1] == ["-m"]:
            self.program, self.args = words[1], words[2:]
            self.module = self.program
        elif self.python:
            self.program, self.args = words[0], words[1:]
            if re.fullmatch(r"benchmarks/\w+\.py", self.program):  # a module of the benchmarks package, as a file
                self.module = self.program[:-3].replace("/", ".")
        else:
            self.program, self.args = (words[0] if words else ""), words[1:]
        as_file = self.program.replace(".", "/") + ".py"
        self.script = as_file if self.module and os.path.isfile(os.path.join(REPO, as_file)) else self.program

    def option(self, name):
        return self.args[self.args.index(name) + 1] if name in self.args else None

    def why_not_run(self):
        """None if this command runs on a CPU test machine, else the reason it is only parsed."""
        if "--pretrained" in self.args:
            return "needs the published ImageNet weights (no network here)"
        if self.launcher and "-np" in self.launcher and int(self.launcher[self.launcher.index("-np") + 1]) > 2:
            return "a multi-machine GPU cluster"
        if "--gpus" in self.args and self.option("--gpus") not in (None, ""):
            return "GPUs"
        if any(arg.endswith(".onnx") for arg in self.args):
            return "an ONNX export and check in both engines (tests/test_onnx_export.py runs these flows on its files)"
        return HEAVY_SCRIPTS.get(self.script)

    @property
    def where(self):
        return f"{self.page}:{self.line}"

    def __repr__(self):
        return f"{self.where}: {self.text}"


PAGES = command_pages()
COMMANDS = [Command(page, line, text) for page in PAGES for line, text in page_commands(page)]
SCRIPT_COMMANDS = [c for c in COMMANDS if c.python and c.program != "venv"]


def test_the_pages_have_the_commands_this_file_checks():
    assert all(os.path.isfile(page) for page in PAGES), [p for p in PAGES if not os.path.isfile(p)]
    readme = [c for c in COMMANDS if c.page == "README.md"]
    assert [c.text for c in readme[:2]] == ["make demo", "make test"]  # the two set-up commands come first
    assert {"scripts/train_imagenet.py", "scripts/verify.py", "benchmarks/latency.py", "scripts/detect.py",
            "scripts/segment.py", "scripts/export_onnx.py"} <= {c.script for c in readme}  # the ways to use it
    assert {"recordio_tools", "scripts/train_imagenet.py", "scripts/verify.py", "scripts/predict.py",
            "scripts/convert_torch_weights.py", "benchmarks/latency.py"} <= {c.script for c in SCRIPT_COMMANDS}
    unknown = [c for c in COMMANDS if c not in SCRIPT_COMMANDS and c.program not in ("make", "pip", "venv")
               and c.text != "horovodrun --check-build" and not _is_mkdocs(c)]
    assert not unknown, f"commands this test does not know how to check: {unknown}"


def _is_mkdocs(command):
    """README's ``.venv/bin/mkdocs serve|build``: tests/test_docs.py builds the site with the same mkdocs."""
    return command.program == ".venv/bin/mkdocs" and command.args[:1] in (["serve"], ["build"])


def test_make_targets_exist_and_ci_runs_make_test():
    for command in (c for c in COMMANDS if c.program == "make"):
        target = command.args[0]
        dry = subprocess.run(["make", "-n", target], cwd=REPO, capture_output=True, text=True)
        assert dry.returncode == 0, f"{command}: {dry.stderr}"
    assert "make test" in open(os.path.join(REPO, ".ci", "run")).read()


def test_install_commands_name_files_and_pins_that_exist():
    setup_env = open(os.path.join(REPO, "tools", "setup_env.sh")).read()
    for command in (c for c in COMMANDS if c.program == "pip"):
        if "-r" in command.args:
            req = command.option("-r")
            assert os.path.isfile(os.path.join(REPO, req)), f"{command}: {req} does not exist"
        for pin in (a for a in command.args if "==" in a):
            name, version = pin.split("==")
            if name == "horovod":  # the GPU build must be the version the CPU environment builds
                assert f"HOROVOD_VERSION={version}" in setup_env, f"{command}: tools/setup_env.sh builds another"
        if "-e" in command.args:
            assert os.path.isfile(os.path.join(REPO, "setup.py"))
    for command in (c for c in COMMANDS if c.program == "venv"):  # what tools/setup_env.sh does for `make`
        assert f"PYTHON=${{PYTHON:-{command.python}}}" in setup_env and f"make_venv {command.args[0]}\n" in setup_env, \
            f"{command}: tools/setup_env.sh creates another venv"


def test_horovod_check_build_lists_mxnet():
    done = subprocess.run([os.path.join(VENV_BIN, "horovodrun"), "--check-build"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and re.search(r"\[X\] MXNet", done.stdout), done.stdout + done.stderr


_PARSE_ALL = """
import json, os, runpy, sys, traceback
from resnest_gluon import get_config
from resnest_gluon.dense import split_dense_name
repo, todo = sys.argv[1], json.loads(sys.argv[2])
failures = {}
for index, (script, module, argv) in enumerate(todo):
    sys.path.insert(0, repo if module else os.path.dirname(os.path.abspath(script)))
    try:
        ns = runpy.run_module(module, run_name="readme_check") if module else runpy.run_path(script, run_name="readme_check")
        parse = ns["parse_args"] if "parse_args" in ns else ns["build_parser"]().parse_args
        args = parse(argv)
        model = getattr(args, "model", None)
        model and model != "resnet50" and (split_dense_name(model) or get_config(model))
    except SystemExit as err:  # argparse's error
        if err.code:
            failures[index] = f"exit {err.code}"
    except Exception:
        failures[index] = traceback.format_exc()[-1500:]
    finally:
        sys.path.pop(0)
print(json.dumps(failures))
"""


def _parse_only(commands, scratch):
    """Runs each script's own argument parser on the page's arguments, all in one fresh interpreter (one MXNet
    import instead of one per command); ``{command: why}`` of those that fail (argparse's message is on stderr)."""
    for command in commands:  # the files they name exist (empty): parsers check existence, not content
        for arg in command.args:
            if re.search(r"\.(rec|idx|params|pth|jpg|onnx)$", arg):
                os.makedirs(os.path.join(scratch, os.path.dirname(arg)), exist_ok=True)
                open(os.path.join(scratch, arg), "w").close()
    todo = [(os.path.join(REPO, c.script), c.module, c.args) for c in commands]
    done = subprocess.run([os.path.join(VENV_BIN, "python"), "-c", _PARSE_ALL, REPO, json.dumps(todo)], cwd=scratch,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    failures = json.loads(done.stdout.strip().splitlines()[-1])
    return {commands[int(index)]: why for index, why in failures.items()}, done.stderr


def test_commands_that_cannot_run_here_parse(tmp_path):
    commands = [c for c in SCRIPT_COMMANDS if c.why_not_run() and c.program != "recordio_tools"]
    assert len(commands) >= 15  # the GPU, cluster and full-dataset commands
    wrong = Command("README.md", 0, "python scripts/verify.py --rec-val v.rec --pretrained --model resnest50 --no-such-flag")
    failures, stderr = _parse_only(commands + [wrong], str(tmp_path))
    assert failures.pop(wrong, None) == "exit 2" and "unrecognized arguments: --no-such-flag" in stderr  # it can fail
    assert not failures, "\n".join(f"{command}: {why}" for command, why in failures.items()) + "\n" + stderr[-3000:]


def _write_image_tree(root, per_class, seed):
    """A class-per-folder tree of small JPEGs (ImageNet's layout: one folder per synset)."""
    import numpy as np
    from PIL import Image

    rng = np.random.RandomState(seed)
    for c in range(CLASSES):
        folder = os.path.join(root, f"n{c:08d}")
        os.makedirs(folder)
        for i in range(per_class):
            img = (rng.uniform(0, 255, (3, 3, 3)) * [[[1.0, 0.5, 0.2]]] + c * 20) % 256
            Image.fromarray(img.astype("uint8")).resize((72, 60), Image.BILINEAR).save(
                os.path.join(folder, f"img{i}.JPEG"), quality=90)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A folder laid out as a user's checkout: the repo's scripts and environments, a home with ~/imagenet."""
    root = tmp_path_factory.mktemp("readme")
    home = root / "home"
    _write_image_tree(str(home / "imagenet" / "train"), TRAIN_PER_CLASS, seed=0)
    _write_image_tree(str(home / "imagenet" / "val"), VAL_PER_CLASS, seed=1)
    work = root / "work"
    work.mkdir()
    for name in ("scripts", "benchmarks", ".venv", ".venv-torch"):
        os.symlink(os.path.join(REPO, name), work / name)
    env = {**os.environ, "HOME": str(home), "PATH": VENV_BIN + os.pathsep + os.environ["PATH"],
           "OMP_NUM_THREADS": "1", "MXNET_CPU_WORKER_NTHREADS": "1"}
    return {"dir": str(work), "env": env}


def _prepare_inputs(command, workspace):
    """Files a command reads that no earlier command of the pages writes: the user brings them."""
    work = workspace["dir"]
    if command.program == "scripts/convert_torch_weights.py":
        pth = os.path.join(work, command.args[0])
        code = ("import sys, torch, timm\n"
                "torch.manual_seed(0)\n"
                "torch.save(timm.create_model(sys.argv[2]).state_dict(), sys.argv[1])\n")
        subprocess.run([TORCH_PYTHON, "-c", code, pth, command.option("--model")], check=True, timeout=300)
    if command.program == "scripts/verify.py" and command.option("--params") == "f.params":
        code = ("import sys, mxnet as mx\n"
                "from resnest_gluon import get_model\n"
                "net = get_model(sys.argv[2]); net.initialize(mx.init.Xavier()); net(mx.nd.zeros((1, 3, 224, 224)))\n"
                "net.save_parameters(sys.argv[1])\n")
        subprocess.run([os.path.join(VENV_BIN, "python"), "-c", code, os.path.join(work, "f.params"),
                        command.option("--model")], check=True, timeout=300, env=workspace["env"])


RUNNABLE = [c for c in SCRIPT_COMMANDS if not c.why_not_run()]


def test_runnable_commands_run_verbatim_in_order(workspace):
    """convert -> make-list -> pack -> check -> inspect -> train (horovodrun, 2 workers) -> verify (1 and 2 workers).

    One test, because each command consumes what the previous ones wrote, exactly as a user following the pages would.
    """
    assert [c.program for c in RUNNABLE].count("recordio_tools") >= 4
    assert any(c.program == "scripts/train_imagenet.py" for c in RUNNABLE)
    outputs = {}
    for command in RUNNABLE:
        _prepare_inputs(command, workspace)
        done = subprocess.run(command.text, shell=True, cwd=workspace["dir"], env=workspace["env"],
                              capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, f"{command} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        outputs[command.where] = done.stdout + done.stderr
    work = workspace["dir"]
    for name in ("data/train.rec", "data/train.idx", "data/val.rec", "data/val.idx", "data/train_classes.txt",
                 "runs/small/metrics.jsonl", "runs/small/curves.png", "runs/small/ckpt-0008.params"):
        assert os.path.exists(os.path.join(work, name)), name
    verify_lines = [out for line, out in outputs.items() if "top-1" in out]
    assert len(verify_lines) >= 2, "both runnable verify commands print their top-1"
