#!/usr/bin/env python
"""Ours vs GluonCV vs timm in one run, with ratios and issue 6's speed goals checked.

Cases: fp32 inference, the fp32 training step and low-precision (bfloat16, int8) inference.

Every side gets the same model, input, batch, thread count and random weights, and is timed in alternating rounds
(ours, gluoncv, timm, ours, ...) so that a busy phase of a shared machine slows every side; img/s is the median of
the rounds. The goals are reported (pass/fail), never asserted.
"""
import argparse
import gc
import os
import sys
import textwrap
import traceback
from contextlib import ExitStack

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import _cases  # noqa: E402  (these helpers import no framework: threads must be set before mxnet loads)
import _peers  # noqa: E402
import _recipe  # noqa: E402
from _bench import alternate, build, machine_info, parse_spec, positive, set_threads  # noqa: E402
from _timing import summarize, warm_up  # noqa: E402

DEFAULT_MODELS = ("resnest50@224",)
DEFAULT_ROUNDS = 3
DEFAULT_SECONDS = 10.0
DEFAULT_WARMUP = 2  # the first call traces and allocates; bfloat16 was still slow in the second one

EPILOG = f"""\
cases (--cases, default: {' '.join(_cases.DEFAULT_CASES)}): KIND-bN times KIND at batch size N;
  one timed batch is
{chr(10).join(textwrap.fill(k.what, 114, initial_indent=f'    {kind:6s}', subsequent_indent=' ' * 10)
              for kind, k in _cases.KINDS.items())}
  Every side starts from random weights (Xavier; torch's default init) and one fixed random batch: speed does not
  depend on the values. The training step uses the official recipe's optimizer on every side (NAG,
  momentum {_recipe.MOMENTUM}, weight decay {_recipe.WEIGHT_DECAY}, lr {_recipe.LR_PER_128} x N / 128), random labels
  and no DropBlock (GluonCV builds resnest26 and up with DropBlock 0.1: its worker sets it to 0), so every side
  trains the same network.
models: NAME[@SIZE] (default: {' '.join(DEFAULT_MODELS)}); both naming schemes work (resnest14 = resnest14d,
  resnest50_fast_4s2x40d = resnest50d_4s2x40d, ...). The peers time the same architecture under their own name
  (timm: resnest50 -> resnest50d, resnest101 -> resnest101e, ...); a peer without it (GluonCV has no
  resnest50_fast_*) is reported n/a.
peers: GluonCV (MXNet, --gluoncv-python) and timm (PyTorch, --torch-python) each run in one persistent
  benchmarks/_peer_worker.py process (gluoncv cannot import beside torch >= 2), which builds, prepares and warms up
  a model on request and times it when asked; `--peers` with no name times ours alone.
timing: after --warmup untimed batches, each round times --iters batches or --seconds seconds, whichever ends
  first (default: {DEFAULT_SECONDS:g} s, at least one batch), per side; --threads N (default: $OMP_NUM_THREADS or
  the CPUs this process may use) is exported as OMP/MKL/MXNet thread counts before mxnet loads and given to
  torch.set_num_threads. Both MXNet processes enable Intel AMX (resnest_gluon.deploy.amx) before any model runs, so the
  bf16/int8 cases get it after the fp32 ones (torch uses AMX by itself); machine.amx says whether it is on.
goals (issue 6, resnest50@224): fp32 inference ours/gluoncv >= 2.5 and ours/timm >= 1.3 at batch 1 and 16;
  training step ours/gluoncv >= 3 and ours/timm >= 1 at batch 16; bf16 and int8 >= 25 img/s at batch 16.
  Printed as PASS/FAIL/n/a for every model of the run; the exit code does not depend on them.
output: a table on stdout, OUT/compare.json (schema resnest-gluon/compare/1: machine with the load average at
  start and end, command line, protocol, per case and side the latencies of every round, img/s, ours/peer
  ratios, goals) and OUT/compare.png (img/s per case, ours beside the peers)."""


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), metavar="NAME[@SIZE]",
                   help=f"models to compare (default: {' '.join(DEFAULT_MODELS)})")
    p.add_argument("--cases", nargs="+", type=_cases.parse_case, metavar="KIND-bN",
                   default=[_cases.parse_case(c) for c in _cases.DEFAULT_CASES],
                   help=f"what to time (default: {' '.join(_cases.DEFAULT_CASES)}; see below)")
    p.add_argument("--peers", nargs="*", choices=_peers.PEERS, default=list(_peers.PEERS),
                   help=f"peers timed beside ours (default: {' '.join(_peers.PEERS)}; no name: ours alone)")
    p.add_argument("--rounds", type=positive, default=DEFAULT_ROUNDS, help="alternating rounds (default: %(default)s)")
    p.add_argument("--iters", type=positive, help="timed batches per round and side")
    p.add_argument("--seconds", type=float, help=f"time budget per round and side (default: {DEFAULT_SECONDS:g} "
                                                 "unless --iters is given)")
    p.add_argument("--warmup", type=positive, default=DEFAULT_WARMUP,
                   help="untimed batches after preparing each side, at least 1: the first call traces the graph, "
                        "allocates and creates the optimizer state; bfloat16 was still slow in the second "
                        "(default: %(default)s)")
    p.add_argument("--threads", type=positive, help="CPU threads for every framework")
    p.add_argument("--torch-python", default=_peers.PYTHON["timm"][0],
                   help="interpreter with torch + timm (default: the repo's .venv-torch/bin/python)")
    p.add_argument("--gluoncv-python", default=_peers.PYTHON["gluoncv"][0],
                   help="interpreter with gluoncv (default: the repo's .venv/bin/python)")
    p.add_argument("--out", default=os.path.join(_peers.REPO, "out", "compare"),
                   help="folder for compare.json and compare.png (default: out/compare in the repo)")
    return p


def prepare_ours(spec, case, ctx):
    """Our side of a case: (step, params)."""
    import _mx_prep
    from resnest_gluon import count_params

    net = build(spec.name)
    step = _mx_prep.make_case_step(net, case.spec.mode, case.batch_size, spec.input_size, case.spec.dtype, ctx)
    return step, count_params(net)


def load_peer(peer, worker, spec, case, warmup):
    """Builds and warms up the peer's side of a case: {model, available, params | reason}."""
    model = _peers.MODELS[peer].get(spec.name)
    if model is None:
        return {"model": None, "available": False, "reason": f"{peer} has no {spec.name}"}
    if peer not in case.spec.peers:
        return {"model": model, "available": False, "reason": f"{case.kind} is timed for ours only"}
    try:
        params = worker.load(model, spec.input_size, case.batch_size, case.spec.dtype, "cpu", warmup,
                             mode=case.spec.mode)
    except _peers.PeerError as err:
        print(f"[compare] {spec.label} {case.name}: {peer} failed, reported n/a: {err}", file=sys.stderr)
        return {"model": model, "available": False, "reason": str(err)}
    return {"model": model, "available": True, "params": params}


def measure(spec, case, args, ctx, workers):
    """One row: a case of one model, ours and the peers timed in alternating rounds."""
    tag = f"[compare] {spec.label} {case.name}"
    print(f"{tag}: preparing and warming up", file=sys.stderr, flush=True)
    row = {"model": spec.name, "label": spec.label, "input_size": spec.input_size, "case": case.name,
           "kind": case.kind, "mode": case.spec.mode, "dtype": case.spec.dtype, "batch_size": case.batch_size}
    try:
        step, params = prepare_ours(spec, case, ctx)
    except Exception as err:  # reported in the row (traceback on stderr): the other cases still run
        traceback.print_exc(file=sys.stderr)
        step, params = None, f"ours failed: {type(err).__name__}: {err}"
    if step is None:
        row.update(available=False, reason=params,
                   peers={peer: {"available": False, "reason": "ours unavailable"} for peer in workers})
        print(f"{tag}: n/a: {params}", file=sys.stderr, flush=True)
        return row
    warm_up(step, args.warmup)
    peers = {peer: load_peer(peer, worker, spec, case, args.warmup) for peer, worker in workers.items()}
    live = {peer: workers[peer] for peer, info in peers.items() if info["available"]}
    times = alternate(tag, step, live, args.rounds, args.iters, args.seconds)
    row.update(available=True, params=params, **summarize(times["ours"], case.batch_size))
    for peer in live:
        peers[peer].update(summarize(times[peer], case.batch_size))
        peers[peer]["ours_over_peer"] = row["img_per_s"] / peers[peer]["img_per_s"]
    row["peers"] = peers
    del step
    gc.collect()
    return row


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    threads = set_threads(args.threads)

    import _mx_prep  # imports mxnet, now that the thread variables are set

    try:
        specs = [parse_spec(text) for text in args.models]
    except ValueError as err:
        parser.error(f"--models: {err}")
    if args.seconds is not None and args.seconds <= 0:
        parser.error(f"--seconds must be > 0, got {args.seconds}")
    if args.iters is None and args.seconds is None:
        args.seconds = DEFAULT_SECONDS
    args.cases = list(dict.fromkeys(args.cases))
    pythons = {peer: args.gluoncv_python if peer == "gluoncv" else args.torch_python
               for peer in dict.fromkeys(args.peers)}
    for peer, python in pythons.items():
        try:
            _peers.check_python(peer, python)
        except _peers.PeerError as err:
            parser.error(str(err))

    info = machine_info(threads)
    info["amx"] = _mx_prep.enable_amx()  # before any model runs (the GluonCV worker does the same)
    with ExitStack() as stack:
        try:
            workers = {peer: stack.enter_context(_peers.PeerWorker(peer, python, threads))
                       for peer, python in pythons.items()}
            results = [measure(spec, case, args, _mx_prep.context("cpu"), workers)
                       for spec in specs for case in args.cases]
        except _peers.PeerError as err:
            sys.exit(f"compare.py: error: {err}")
        peer_env = {peer: {"python": pythons[peer], "versions": w.versions} for peer, w in workers.items()}
    info["loadavg_end"] = list(os.getloadavg())
    return report(args, info, results, peer_env)


def table(results, peers):
    """The printed table: img/s of every side and ours/peer, one line per model and case."""
    from _report import fmt, format_table, noisy_notes

    lines = [["model", "case", "dtype", "batch", "ours img/s"]
             + [cell for peer in peers for cell in (f"{peer} img/s", f"ours/{peer}")]]
    for r in results:
        line = [r["label"], r["case"], r["dtype"], str(r["batch_size"]), fmt(r.get("img_per_s"), ".2f")]
        for peer in peers:
            p = r["peers"][peer]
            line += [fmt(p.get("img_per_s"), ".2f") if p["available"] else "n/a", fmt(p.get("ours_over_peer"), ".2f")]
        lines.append(line)
    notes = sorted({f"  n/a {r['label']} {r['case']} {side}: {reason}" for r in results
                    for side, reason in [("ours", r.get("reason"))]
                    + [(peer, p.get("reason")) for peer, p in r["peers"].items()]
                    if reason and reason != "ours unavailable"})
    notes += noisy_notes(results)
    return format_table(lines) + ("\n" + "\n".join(notes) if notes else "")


def goal_lines(goals):
    lines = ["goals (issue 6, stated for resnest50@224; reported, not asserted):"]
    for g in goals:
        verdict = "n/a " if g["passed"] is None else ("PASS" if g["passed"] else "FAIL")
        value = f"{g['value']:.2f}" if g["value"] is not None else g["note"]
        lines.append(f"  {verdict}  {g['label']} {g['case']}: {g['metric']} {value} (goal >= {g['target']:g})")
    return "\n".join(lines)


def report(args, info, results, peer_env):
    import _mx_prep
    import _plot
    import _report

    peers = tuple(peer_env)
    goals = _cases.check_goals(results)
    print(table(results, peers))
    print(goal_lines(goals))
    doc = {
        **_report.header("resnest-gluon/compare/1", info),
        "protocol": {
            "ctx": "cpu", "warmup": args.warmup, "iters": args.iters, "seconds": args.seconds, "rounds": args.rounds,
            "order": "alternating rounds: ours, then each peer, per round",
            "cases": {case.name: case.spec.what for case in args.cases},
            "hybridize": dict(static_alloc=True, static_shape=True),
            "sync": "inference: wait_to_read() on the output; training: mx.nd.waitall() after Trainer.step "
                    "(timm: synchronous CPU)",
            "train": _recipe.DESCRIPTION,
            "int8_calibration": f"{_mx_prep.CALIBRATION_BATCHES} random batches (speed only, not accuracy)",
            "weights": "random; speed does not depend on weight values",
            "img_per_s": "median over rounds of batch_size * timed batches / time",
            "ratios": "ours img/s / peer img/s, both medians",
        },
        "peers": peer_env,
        "results": results,
        "goals": goals,
    }
    _report.write_outputs(args.out, "compare", doc, lambda png_path: _plot.compare_chart(
        png_path, results, peers, f"{info['cpu']}, {info['threads']} threads"))
    return doc


if __name__ == "__main__":
    main()
