"""What the demos share: running the project's command-line tools as a user would, one numbered step at a time.

A demo (:mod:`demos.classification`, :mod:`demos.detection`) is a list of steps; each runs commands whose full output
goes to ``OUT/logs/`` while the terminal gets the command line and the few lines worth reading (``echo``). A failing
command stops the demo with the tail of its stderr; a check that finds two results contradicting each other raises
:class:`DemoError` too. The report is a template of ``demos/templates/`` filled from a dict (:func:`render`).

The demos run the checkout's command-line tools (``scripts/``, ``benchmarks/``) from the repository root, which is
where this package lives: ``REPO`` is its parent folder. The library (``resnest_gluon``) knows nothing of either.
Every command a demo prints or records (terminal, logs, report) is :func:`shell_line`'s: it pastes into a POSIX
shell in the repository root as it ran.
"""
import json
import os
import platform
import re
import shlex
import shutil
import signal
import string
import subprocess
import sys
import threading
import time
from contextlib import contextmanager

import numpy as np

__all__ = ["DemoError", "Steps", "run", "shell_line", "rank0_line", "epoch_echo", "run_line", "run_demo",
           "prepare_out", "check_environment", "find_backbone", "parse_demo_args", "read_events", "last_checkpoint",
           "pyplot", "render", "rows", "REPO", "BIN"]

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)  # the checkout this package sits in: scripts/, benchmarks/ and the demos' out/
TEMPLATES = os.path.join(HERE, "templates")
BIN = os.path.dirname(sys.executable)  # not resolved: .venv/bin, where horovodrun lives too
MARKER = ".resnest-demo"


class DemoError(Exception):
    """A failed step: printed as the reason the demo stopped, exit status 1."""



class Steps:
    """Prints a numbered header per step and its wall time; keeps the times for the report."""

    def __init__(self, total):
        self.total, self.done, self.times = total, 0, []
        self.start = time.time()

    @contextmanager
    def __call__(self, title):
        self.done += 1
        n = self.done
        print(f"\n=== [{n}/{self.total}] {title} ===", flush=True)
        tic = time.time()
        try:
            yield
        except DemoError as err:
            raise DemoError(f"step {n}/{self.total} ({title}) failed after {time.time() - tic:.1f} s: {err}") \
                from None
        seconds = time.time() - tic
        self.times.append((title, seconds))
        print(f"--- [{n}/{self.total}] {title}: {seconds:.1f} s", flush=True)

    def elapsed(self):
        return time.time() - self.start


def _pump(src, log, tail, echo):
    """Copies a child's stream into its log as it arrives; ``echo`` sees each complete line (tqdm's \\r redraws
    split into lines) and returns what to print, if anything; ``tail`` keeps the last 32 kB."""
    pending = b""
    while True:
        chunk = os.read(src.fileno(), 65536)
        if not chunk:
            break
        log.write(chunk)
        log.flush()
        if tail is not None:
            tail.append(chunk)
            while sum(map(len, tail)) > 32768 and len(tail) > 1:
                tail.pop(0)
        if echo is not None:
            *lines, pending = re.split(rb"[\r\n]", pending + chunk)
            for line in lines:
                shown = echo(line.decode("utf-8", "replace"))
                if shown:
                    print(shown, flush=True)


def stderr_tail(data, lines=25):
    """The last ``lines`` non-empty lines, with progress-bar redraws (\\r) as separate lines."""
    text = data.decode("utf-8", "replace").replace("\r", "\n")
    kept = [line for line in text.split("\n") if line.strip()]
    return "\n".join("    " + line for line in kept[-lines:])


def shell_line(cmd):
    """``cmd`` (an argv list) as one line for a POSIX shell in the repository root: paths inside the checkout made
    relative to it, each argument quoted where the shell would otherwise read it (:func:`shlex.join`), so
    ``shlex.split`` of the line gives the arguments back (relative paths aside)."""
    def shown(arg):
        arg = str(arg)
        inside = os.path.isabs(arg) and (arg == REPO or arg.startswith(REPO + os.sep))
        return os.path.relpath(arg, REPO) if inside else arg
    return shlex.join(shown(c) for c in cmd)


def run(cmd, logs, name, threads=None, echo=None):
    """Runs ``cmd`` from the repo root; its output goes to ``logs/name.{out,err}.log``, the terminal gets the command
    line and what ``echo(line)`` returns for lines of its stdout (e.g. one line per training epoch).

    ``threads`` sets OMP_NUM_THREADS for the child. A non-zero exit raises :class:`DemoError` with the command, the
    exit status and the tail of its stderr. Ctrl-C stops the child's whole process group (horovodrun's ranks too).
    """
    env = dict(os.environ)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    env.setdefault("PYTHONUNBUFFERED", "1")
    shown = shell_line(cmd)
    print(f"$ {shown}", flush=True)
    out_path, err_path = (os.path.join(logs, f"{name}.{s}.log") for s in ("out", "err"))
    tail = []
    with open(out_path, "wb") as out_log, open(err_path, "wb") as err_log:
        out_log.write(f"$ {shown}\n".encode())
        try:
            proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    start_new_session=True)
        except OSError as err:
            raise DemoError(f"cannot start {cmd[0]}: {err}") from None
        pumps = [threading.Thread(target=_pump, args=(proc.stdout, out_log, None, echo)),
                 threading.Thread(target=_pump, args=(proc.stderr, err_log, tail, None))]
        for t in pumps:
            t.start()
        try:
            code = proc.wait()
        except KeyboardInterrupt:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait()
            raise
        finally:
            for t in pumps:
                t.join()
    if code != 0:
        raise DemoError(f"`{shown}` exited with status {code}. Last lines of its stderr:\n{stderr_tail(b''.join(tail))}"
                        f"\n  full output: {out_path} and {err_path}")


_RANK_LINE = re.compile(r"^\[(?:\d+,)?(\d+)\]<std(?:out|err)>:(.*)$")  # horovodrun's prefix: [rank]<stdout>:


def rank0_line(line):
    """The text of a line of a horovodrun child's output if rank 0 (or a plain process) printed it, else None."""
    m = _RANK_LINE.match(line)
    if m and m.group(1) != "0":
        return None
    return (m.group(2) if m else line).strip()


def epoch_echo(describe):
    """An ``echo`` for :func:`run` of a training command: rank 0's warnings, and ``describe(record)`` of its JSON
    epoch summaries; nothing else (the other ranks, progress bars)."""
    def echo(line):
        text = rank0_line(line)
        if text is None:
            return None
        if text.startswith("warning"):
            return "  " + text
        if not text.startswith('{"epoch"'):
            return None
        return describe(json.loads(text))
    return echo


def run_line(command, quick, env):
    """``(the report's first sentence, load averages at the end)``: when, what (``command``, the demo's program as
    a string), on what machine and how busy."""
    load_end = [round(x, 2) for x in os.getloadavg()]
    shown = shell_line(command.split() + (["--quick"] if quick else []))
    return (f"Run {time.strftime('%Y-%m-%d %H:%M:%S')} with `{shown}` on {env['cpus']} "
            f"CPU cores (load average {env['loadavg_start'][0]} at the start, {load_end[0]} at the end; Python "
            f"{env['python']}, MXNet {env['mxnet']}, Horovod {env['horovod']})."), load_end


def run_demo(steps, body, budget_s, quick):
    """Runs ``body()`` (the steps, inside ``with steps(title):`` blocks; returns ``(headline, report path)``) and
    says how it ended; the exit status: 0, 1 when a step failed (the reason on stderr), 130 on Ctrl-C."""
    try:
        headline, report = body()
    except DemoError as err:
        print(f"\ndemo FAILED: {err}", file=sys.stderr)
        print(f"(after {steps.elapsed():.0f} s)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ndemo interrupted", file=sys.stderr)
        return 130
    total = steps.elapsed()
    print(f"\n{headline}")
    print(f"report: {report}")
    print(f"total time: {total:.1f} s ({total / 60:.1f} min)"
          + (f" -- over the {budget_s / 60:.0f}-minute budget" if total > budget_s and not quick else ""))
    return 0


def prepare_out(out):
    """Deletes ``out`` if it is a previous demo's (or empty), recreates it with the marker."""
    out = os.path.abspath(out)
    if os.path.isdir(out) and os.listdir(out):
        if not os.path.exists(os.path.join(out, MARKER)):
            raise DemoError(f"refusing to delete {out}: it is not empty and was not made by a demo script "
                            f"(no {MARKER} file); pass a new or empty folder as --out")
        shutil.rmtree(out)
    elif os.path.exists(out) and not os.path.isdir(out):
        raise DemoError(f"--out {out} exists and is not a folder")
    os.makedirs(os.path.join(out, "logs"), exist_ok=True)
    open(os.path.join(out, MARKER), "w").close()
    return out


def check_environment():
    """Fails early and clearly when the pieces the later steps launch are missing."""
    horovodrun = os.path.join(BIN, "horovodrun")
    if not os.path.exists(horovodrun):
        raise DemoError(f"{horovodrun} not found: build the environment first (make env, or tools/setup_env.sh)")
    try:
        import horovod
        import matplotlib
        import mxnet as mx
    except ImportError as err:
        raise DemoError(f"{err} in {sys.executable}: build the environment first (make env)") from None
    info = {"python": platform.python_version(), "mxnet": mx.__version__, "numpy": np.__version__,
            "horovod": horovod.__version__, "matplotlib": matplotlib.__version__, "cpus": os.cpu_count(),
            "loadavg_start": [round(x, 2) for x in os.getloadavg()], "platform": platform.platform()}
    print(f"Python {info['python']}, MXNet {info['mxnet']}, numpy {info['numpy']}, Horovod {info['horovod']}, "
          f"{info['cpus']} CPUs, load {info['loadavg_start'][0]}")
    if info["loadavg_start"][0] > info["cpus"]:
        print(f"  note: the machine is busy (load {info['loadavg_start'][0]} on {info['cpus']} cores): "
              f"the steps will take longer than usual")
    return info, horovodrun


def parse_demo_args(prog, description, out_default, backbone, argv=None):
    """The flags of a demo that starts from the classification demo's checkpoint: ``--out``, ``--quick``,
    ``--backbone-from DEMO_OUT`` or ``--backbone-params FILE``, ``--seed``."""
    import argparse

    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("--out", default=out_default, help="output folder; deleted first if a demo made it")
    p.add_argument("--quick", action="store_true", help="every step on a few scenes for a few steps (for the tests)")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--backbone-from", metavar="DEMO_OUT",
                       help="the output folder of the classification demo (make demo: out/demo): its final checkpoint")
    where.add_argument("--backbone-params", help=f"a {backbone} classification checkpoint of this project")
    p.add_argument("--seed", type=int, default=0, help="scenes, sampling and training seed")
    args = p.parse_args(argv)
    if args.backbone_params and not os.path.isfile(args.backbone_params):
        p.error(f"--backbone-params: no such file {args.backbone_params}")
    return args


def find_backbone(backbone_from, backbone_params, backbone, model):
    """The classification checkpoint ``model`` starts from: named, or the one a classification demo run
    (``--backbone-from``, its ``summary.json``) ended with. It must be a whole checkpoint of ``backbone``."""
    from resnest_gluon.trained import read_info

    found = {"from": None, "val_top1": None}
    if backbone_from:
        path = os.path.join(backbone_from, "summary.json")
        if not os.path.isfile(path):
            raise DemoError(f"--backbone-from {backbone_from}: no summary.json (run `make demo` first, or give "
                            f"--backbone-params)")
        with open(path) as f:
            summary = json.load(f)
        backbone_params = summary["params"]
        found.update({"from": os.path.abspath(backbone_from), "val_top1": summary.get("val_top1"),
                      "classes": summary.get("classes"), "quick": summary.get("quick")})
    if not os.path.isfile(backbone_params):
        raise DemoError(f"backbone checkpoint {backbone_params} does not exist")
    try:
        info = read_info(backbone_params)
    except ValueError as err:
        raise DemoError(str(err)) from None
    if info is None or info.model != backbone:
        raise DemoError(f"{backbone_params} is not a {backbone} checkpoint of this project "
                        f"({'no model section' if info is None else info.model}); the demo's settings are measured "
                        f"for {model}")
    found.update({"params": os.path.abspath(backbone_params), "model": info.model, "num_classes": info.num_classes,
                  "input_size": info.data_config.input_size})
    top1 = f", val top-1 {found['val_top1']:.2%}" if found["val_top1"] is not None else ""
    print(f"backbone: {found['params']} ({info.model}, {info.num_classes} classes{top1})")
    return found


def read_events(path, event="epoch"):
    """The records of one kind in a training run's ``metrics.jsonl``."""
    if not os.path.isfile(path):
        raise DemoError(f"training wrote no metrics log {path}")
    with open(path) as f:
        records = [json.loads(line) for line in f if line.strip()]
    return [r for r in records if r.get("event") == event]


def last_checkpoint(save_dir):
    """The .params of the newest checkpoint, from its JSON (which training writes last, once the files are whole)."""
    metas = sorted(f for f in os.listdir(save_dir) if f.startswith("ckpt-") and f.endswith(".json"))
    if not metas:
        raise DemoError(f"training left no checkpoint in {save_dir}")
    with open(os.path.join(save_dir, metas[-1])) as f:
        meta = json.load(f)
    return os.path.join(save_dir, meta["files"]["params"][0])


def rows(lines):
    """Table rows (or any lines) as one template field."""
    return "\n".join(lines)


def render(name, fields):
    """``templates/<name>.md`` with its ``${field}`` placeholders filled from ``fields`` (a missing one is a
    ``KeyError``: a report never goes out with a hole)."""
    with open(os.path.join(TEMPLATES, f"{name}.md"), encoding="utf-8") as f:
        return string.Template(f.read()).substitute(fields)


def pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt
