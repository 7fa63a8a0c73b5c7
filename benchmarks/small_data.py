"""How ``--recipe small`` does on small sets of different character: README's small-data command, per set.

For each set of ``benchmarks.small_sets`` (made and packed once, reused): packs it with ``recordio_tools``,
trains with ``horovodrun --gloo -np 2`` (one core per process) exactly as README's small-data command does, and
reads the validation top-1 of every epoch and the wall time of the whole command from its run. Prints one line per
set and a table; writes ``small_data.json`` and ``small_data.png`` (validation top-1 per epoch) to ``--out``.
Exit status 1 when a set misses ``--goal-top1`` or ``--goal-seconds`` (default: 95 % top-1 in 5 minutes).

    python -m benchmarks.small_data --out out/small_data
    python -m benchmarks.small_data --sets strokes --train-args "--lr 0.1"   # try a change of the recipe
"""
import argparse
import json
import os
import shlex
import subprocess
import sys
import time

if __name__ == "__main__" and not __package__:  # run as a file: rerun as python -m benchmarks.small_data
    import _launch  # the script's folder is sys.path[0] when Python runs a file

    _launch.run_as_module(__file__)

from . import small_sets  # noqa: E402
from ._launch import ROOT as REPO, module_env  # noqa: E402

BIN = os.path.dirname(sys.executable)
WORLD = 2
# README's small-data command, after the data: the model, the recipe, the training size, CPU.
COMMAND = ["--model", "resnest14", "--recipe", "small", "--input-size", "32", "--no-cuda", "--num-workers", "1"]


def pack(images, rec, seed):
    """make-list (training list shuffled: shards are blocks of the file) and pack, per split; returns the prefixes."""
    os.makedirs(rec, exist_ok=True)
    tool = [sys.executable, "-m", "recordio_tools"]
    prefixes = {}
    for split in ("train", "val"):
        prefix = os.path.join(rec, split)
        if not os.path.isfile(prefix + ".rec"):
            tree = os.path.join(images, split)
            shuffle = ["--shuffle", "--seed", str(seed)] if split == "train" else []
            for cmd in (tool + ["make-list", tree, prefix, *shuffle],
                        tool + ["pack", prefix + ".lst", prefix, "--root", tree, "--pass-through", "--no-progress"]):
                subprocess.run(cmd, cwd=REPO, check=True, capture_output=True)
        prefixes[split] = prefix
    return prefixes


def train(prefixes, save_dir, extra, log_path):
    """README's small-data command on 2 processes; returns (exit status, seconds, per-epoch records)."""
    cmd = [os.path.join(BIN, "horovodrun"), "--gloo", "-np", str(WORLD), "-H", f"localhost:{WORLD}", sys.executable,
           os.path.join(REPO, "scripts", "train_imagenet.py"), "--rec-train", prefixes["train"] + ".rec",
           "--rec-val", prefixes["val"] + ".rec", *COMMAND, "--save-dir", save_dir, *extra]
    env = module_env(dict(os.environ, OMP_NUM_THREADS="1"))  # the library of this checkout in every process
    tic = time.time()
    with open(log_path, "wb") as log:
        code = subprocess.run(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    seconds = time.time() - tic
    epochs = []
    metrics = os.path.join(save_dir, "metrics.jsonl")
    if os.path.isfile(metrics):
        with open(metrics) as f:
            epochs = [e for e in map(json.loads, f) if e.get("event") == "epoch"]
    return code, seconds, epochs, cmd


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, r in results.items():
        ax.plot([e["epoch"] for e in r["epochs"]], [100 * e.get("val_top1", 0) for e in r["epochs"]], marker="o",
                label=f"{name} ({r['seconds']:.0f} s)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation top-1 (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("resnest14, --recipe small, 2 CPU processes")
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=100)
    os.replace(tmp, path)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="out/small_data")
    p.add_argument("--sets", default=",".join(small_sets.SETS),
                   help="comma-separated, of " + ", ".join(small_sets.SETS))
    p.add_argument("--train-per-class", type=int, default=144, help="1,440 training images at 10 classes")
    p.add_argument("--val-per-class", type=int, default=36)
    p.add_argument("--seed", type=int, default=0, help="of the generated images")
    p.add_argument("--train-args", default="", help="more train_imagenet.py flags, e.g. \"--num-epochs 4\"")
    p.add_argument("--goal-top1", type=float, default=0.95)
    p.add_argument("--goal-seconds", type=float, default=300)
    args = p.parse_args(argv)
    args.out = os.path.abspath(args.out)  # the packing and training commands run in the repository root
    names = [n for n in args.sets.split(",") if n]
    unknown = [n for n in names if n not in small_sets.SETS]
    if unknown:
        p.error(f"--sets: unknown {unknown}; known: {', '.join(small_sets.SETS)}")
    extra = shlex.split(args.train_args)
    results = {}
    for name in names:
        root = os.path.join(args.out, "data", f"{name}-{args.train_per_class}-{args.val_per_class}-{args.seed}")
        images = os.path.join(root, "images")
        if not os.path.isdir(os.path.join(images, name, "val")):
            small_sets.make(images, name, args.train_per_class, args.val_per_class, seed=args.seed)
        prefixes = pack(os.path.join(images, name), os.path.join(root, "rec"), args.seed)
        run_dir = os.path.join(args.out, "runs", name)
        code, seconds, epochs, cmd = train(prefixes, run_dir, extra, os.path.join(args.out, f"{name}.log"))
        top1 = epochs[-1].get("val_top1") if epochs else None
        ok = code == 0 and top1 is not None and top1 >= args.goal_top1 and seconds <= args.goal_seconds
        results[name] = {"exit": code, "seconds": round(seconds, 1), "val_top1": top1, "epochs": epochs, "goal_met": ok,
                         "command": cmd}
        shown = f"{100 * top1:.1f}%" if top1 is not None else "-"
        print(f"{name:9s} val top-1 {shown:>6s} after {len(epochs)} epochs, {seconds:4.0f} s, exit {code}"
              f"{'' if ok else '  (goal missed)'}", flush=True)
    os.makedirs(args.out, exist_ok=True)
    report = {"goal": {"top1": args.goal_top1, "seconds": args.goal_seconds}, "train_args": extra, "sets": results}
    tmp = os.path.join(args.out, "small_data.json.tmp")
    with open(tmp, "w") as f:
        json.dump(report, f, indent=1)
    os.replace(tmp, os.path.join(args.out, "small_data.json"))
    plot(results, os.path.join(args.out, "small_data.png"))
    print(f"{sum(r['goal_met'] for r in results.values())} of {len(results)} set(s) met the goal "
          f"(>= {args.goal_top1:.0%} in <= {args.goal_seconds:.0f} s); {args.out}/small_data.json, small_data.png")
    return 0 if all(r["goal_met"] for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
