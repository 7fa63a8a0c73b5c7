#!/usr/bin/env python
"""Ours (MXNet, and our ONNX file in ONNX Runtime and OpenVINO) vs GluonCV vs timm (eager, and its ONNX file in the
same engines) in one run, with ratios and the speed goals checked.

    python -m benchmarks.compare --threads 2        (from the repository root; python benchmarks/compare.py works too)

Cases: fp32 inference, the fp32 training step and low-precision (bfloat16, int8) inference.

Every side gets the same model, input, batch, thread count and random weights, and is timed in alternating rounds
(each side in turn, then again) so that a busy phase of a shared machine slows every side; img/s is the median of
the rounds. The goals are reported (pass/fail), never asserted.
"""
import argparse
import gc
import os
import sys
import textwrap
import traceback
from contextlib import ExitStack

if __name__ == "__main__" and not __package__:  # run as a file: rerun as python -m benchmarks.compare
    import _launch  # the script's folder is sys.path[0] when Python runs a file

    _launch.run_as_module(__file__)

# these helpers import no framework: threads must be set before mxnet loads
from . import _cases, _peers, _recipe  # noqa: E402
from ._bench import alternate, build, in_process, machine_info, parse_spec, positive, set_threads  # noqa: E402
from ._timing import summarize, warm_up  # noqa: E402

DEFAULT_MODELS = ("resnest50@224",)
DEFAULT_ROUNDS = 3
DEFAULT_SECONDS = 10.0
DEFAULT_WARMUP = 2  # the first call traces and allocates; bfloat16 was still slow in the second one
BACKENDS = tuple(side.partition("-")[2] for side in _cases.OURS)  # mxnet, onnxruntime, openvino

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
sides: ours-mxnet (deploy.optimize), ours-onnxruntime and ours-openvino (deploy.onnx_model's file, made once per
  model), gluoncv, timm (eager), timm-onnxruntime and timm-openvino (timm.utils.onnx.onnx_export's file: exportable
  layers, TorchScript exporter, opset 17, dynamic batch). Both files run through the same engine code
  (resnest_gluon.deploy.engines: ONNX Runtime with all graph optimisations and --threads intra-op threads, OpenVINO's
  CPU plugin with --threads inference threads), so ours-X vs timm-X compares the files alone. A side that does not
  offer a kind (ONNX Runtime has no bfloat16; int8 is timed for ours and the ONNX files) is n/a.
models: NAME[@SIZE] (default: {' '.join(DEFAULT_MODELS)}); both naming schemes work (resnest14 = resnest14d,
  resnest50_fast_4s2x40d = resnest50d_4s2x40d, ...). The peers time the same architecture under their own name
  (timm: resnest50 -> resnest50d, resnest101 -> resnest101e, ...); a peer without it (GluonCV has no
  resnest50_fast_*) is reported n/a.
peers: GluonCV (MXNet, --gluoncv-python) and timm (PyTorch, --torch-python; it also writes timm's ONNX files) each run
  in one persistent worker process (python -m benchmarks._peer_worker; gluoncv cannot import beside torch >= 2),
  which builds, prepares and warms up a model on request and times it when asked; the ONNX files run in this
  process. `--peers` with no name times ours alone; `--backends` picks our sides.
timing: after --warmup untimed batches, each round times --iters batches or --seconds seconds, whichever ends
  first (default: {DEFAULT_SECONDS:g} s, at least one batch), per side; --threads N (default: $OMP_NUM_THREADS or
  the CPUs this process may use) is exported as OMP/MKL/MXNet thread counts before mxnet loads and given to
  torch.set_num_threads and to the engines. Both MXNet processes enable Intel AMX (resnest_gluon.deploy.amx) before
  any model runs, so the bf16/int8 cases get it after the fp32 ones (torch uses AMX by itself); machine.amx says
  whether it is on.
goals (stated for resnest50@224; printed as PASS/FAIL/n/a for every model of the run; the exit code does not
  depend on them), by group:
{chr(10).join(textwrap.fill(f"{group} ({what}): " + "; ".join(g.name for g in _cases.GOALS if g.group == group),
                            114, initial_indent="  ", subsequent_indent="    ", break_on_hyphens=False)
              for group, what in _cases.GOAL_GROUPS.items())}
output: a table on stdout (img/s per side, best ours / best peer), OUT/compare.json (schema resnest-gluon/compare/2:
  machine with the load average at start and end, command line, protocol, engine versions, per case and side the
  latencies of every round and img/s, the best of ours and of the peers, goals) and OUT/compare.png (img/s per case
  and side)."""


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), metavar="NAME[@SIZE]",
                   help=f"models to compare (default: {' '.join(DEFAULT_MODELS)})")
    p.add_argument("--cases", nargs="+", type=_cases.parse_case, metavar="KIND-bN",
                   default=[_cases.parse_case(c) for c in _cases.DEFAULT_CASES],
                   help=f"what to time (default: {' '.join(_cases.DEFAULT_CASES)}; see below)")
    p.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS),
                   help=f"our sides: ours-BACKEND (default: {' '.join(BACKENDS)})")
    p.add_argument("--peers", nargs="*", choices=_cases.PEERS, default=list(_cases.PEERS),
                   help=f"peers timed beside ours (default: {' '.join(_cases.PEERS)}; no name: ours alone)")
    p.add_argument("--rounds", type=positive, default=DEFAULT_ROUNDS, help="alternating rounds (default: %(default)s)")
    p.add_argument("--iters", type=positive, help="timed batches per round and side")
    p.add_argument("--seconds", type=float, help=f"time budget per round and side (default: {DEFAULT_SECONDS:g} "
                                                 "unless --iters is given)")
    p.add_argument("--warmup", type=positive, default=DEFAULT_WARMUP,
                   help="untimed batches after preparing each side, at least 1: the first call traces the graph, "
                        "allocates and creates the optimizer state; bfloat16 was still slow in the second "
                        "(default: %(default)s)")
    p.add_argument("--threads", type=positive, help="CPU threads for every framework and engine")
    p.add_argument("--torch-python", default=_peers.PYTHON["timm"][0],
                   help="interpreter with torch + timm (default: the repo's .venv-torch/bin/python)")
    p.add_argument("--gluoncv-python", default=_peers.PYTHON["gluoncv"][0],
                   help="interpreter with gluoncv (default: the repo's .venv/bin/python)")
    p.add_argument("--out", default=os.path.join(_peers.REPO, "out", "compare"),
                   help="folder for compare.json and compare.png (default: out/compare in the repo)")
    return p


def prepare_ours(spec, case, ctx):
    """Our MXNet side of a case: (step, params)."""
    from resnest_gluon import count_params

    from . import _mx_prep

    net = build(spec.name)
    step = _mx_prep.make_case_step(net, case.spec.mode, case.batch_size, spec.input_size, case.spec.dtype, ctx)
    return step, count_params(net)


def _n_a(reason, **extra):
    return {**extra, "available": False, "reason": reason}


def prepare_side(side, spec, case, args, ctx, workers, files):
    """Builds, prepares and warms up one side of a case: (info {available, model?, params? | reason}, timer), the
    timer ``(iters, seconds) -> latencies`` or None when the side is not available."""
    ours = side in _cases.OURS
    model = spec.name if ours else _peers.MODELS["timm" if side.startswith("timm") else side].get(spec.name)
    if model is None:
        return _n_a(f"{side.partition('-')[0]} has no {spec.name}", model=None), None
    if side not in case.spec.sides:
        return _n_a(f"{case.kind} is not timed for {side} (see --help)", model=model), None
    engine = _cases.engine_of(side)
    try:
        if side == "ours-mxnet":
            step, params = prepare_ours(spec, case, ctx)
            info = {"model": model, "available": True, "params": params}
        elif engine:
            from . import _engines

            who = "ours" if ours else "timm"
            onnx_model = files.model(who, spec, model, case.spec.dtype)
            step = _engines.engine_step(onnx_model, engine, case.spec.dtype, case.batch_size, spec.input_size,
                                        args.threads)
            info = {"model": model, "available": True, "params": files.params[(who, spec.label)],
                    "file": _engines.FILE_OF[who]}
        else:  # a peer worker times it
            worker = workers[side]
            params = worker.load(model, spec.input_size, case.batch_size, case.spec.dtype, "cpu", args.warmup,
                                 mode=case.spec.mode)
            return {"model": model, "available": True, "params": params}, worker.measure
    except Exception as err:  # reported in the row (traceback on stderr): the other sides and cases still run
        if not isinstance(err, (_peers.PeerError, ValueError)):
            traceback.print_exc(file=sys.stderr)
        print(f"[compare] {spec.label} {case.name}: {side} n/a: {err}", file=sys.stderr, flush=True)
        return _n_a(f"{side} failed: {type(err).__name__}: {err}", model=model), None
    warm_up(step, args.warmup)
    return info, in_process(step)


def measure(spec, case, args, ctx, workers, files):
    """One row: a case of one model, every side timed in alternating rounds."""
    tag = f"[compare] {spec.label} {case.name}"
    print(f"{tag}: preparing and warming up", file=sys.stderr, flush=True)
    row = {"model": spec.name, "label": spec.label, "input_size": spec.input_size, "case": case.name,
           "kind": case.kind, "mode": case.spec.mode, "dtype": case.spec.dtype, "batch_size": case.batch_size}
    sides, timers = {}, {}
    for side in args.sides:
        if side in _cases.PEERS and not any(s["available"] for name, s in sides.items() if name in _cases.OURS):
            sides[side] = _n_a("no side of ours ran")
            continue
        sides[side], timer = prepare_side(side, spec, case, args, ctx, workers, files)
        if timer:
            timers[side] = timer
    times = alternate(tag, timers, args.rounds, args.iters, args.seconds)
    for side, latencies in times.items():
        sides[side].update(summarize(latencies, case.batch_size))
    row["sides"] = sides
    row["best_ours"], row["best_peer"] = _cases.best(row, _cases.OURS), _cases.best(row, _cases.PEERS)
    peer = row["best_peer"] and sides[row["best_peer"]]["img_per_s"]
    for side in _cases.OURS:
        if side in sides and sides[side]["available"] and peer:
            sides[side]["over_best_peer"] = sides[side]["img_per_s"] / peer
    row["best_ours_over_best_peer"] = sides[row["best_ours"]]["over_best_peer"] if row["best_ours"] and peer else None
    del timers
    gc.collect()
    return row


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    threads = set_threads(args.threads)
    args.threads = threads

    from . import _mx_prep  # imports mxnet, now that the thread variables are set

    try:
        specs = [parse_spec(text) for text in args.models]
    except ValueError as err:
        parser.error(f"--models: {err}")
    if args.seconds is not None and args.seconds <= 0:
        parser.error(f"--seconds must be > 0, got {args.seconds}")
    if args.iters is None and args.seconds is None:
        args.seconds = DEFAULT_SECONDS
    args.cases = list(dict.fromkeys(args.cases))
    chosen = {f"ours-{b}" for b in args.backends} | set(args.peers)
    args.sides = [side for side in _cases.SIDES if side in chosen]
    pythons = {peer: args.gluoncv_python if peer == "gluoncv" else args.torch_python
               for peer in _peers.PEERS if any(side.partition("-")[0] == peer for side in args.peers)}
    for peer, python in pythons.items():
        try:
            _peers.check_python(peer, python)
        except _peers.PeerError as err:
            parser.error(str(err))

    from . import _engines

    info = machine_info(threads)
    info["amx"] = _mx_prep.enable_amx()  # before any model runs (the GluonCV worker does the same)
    with ExitStack() as stack:
        try:
            workers = {peer: stack.enter_context(_peers.PeerWorker(peer, python, threads))
                       for peer, python in pythons.items()}
            files = stack.enter_context(_engines.OnnxFiles(workers.get("timm")))
            side_workers = {side: workers[side] for side in ("gluoncv", "timm") if side in workers}
            results = [measure(spec, case, args, _mx_prep.context("cpu"), side_workers, files)
                       for spec in specs for case in args.cases]
        except _peers.PeerError as err:
            sys.exit(f"compare.py: error: {err}")
        peer_env = {peer: {"python": pythons[peer], "versions": w.versions} for peer, w in workers.items()}
    info["loadavg_end"] = list(os.getloadavg())
    return report(args, info, results, peer_env, _engines.versions())


def table(results, sides):
    """The printed table: img/s of every side and best ours / best peer, one line per model and case."""
    from ._report import fmt, format_table, noisy_notes

    lines = [["model", "case", "dtype", "batch"] + [f"{side}" for side in sides] + ["best ours/peer"]]
    for r in results:
        line = [r["label"], r["case"], r["dtype"], str(r["batch_size"])]
        for side in sides:
            s = r["sides"].get(side, {"available": False})
            line.append(fmt(s.get("img_per_s"), ".2f") if s["available"] else "n/a")
        lines.append(line + [fmt(r.get("best_ours_over_best_peer"), ".2f")])
    notes = sorted({f"  n/a {r['label']} {r['case']} {side}: {s['reason']}" for r in results
                    for side, s in r["sides"].items()
                    if not s["available"] and "is not timed for" not in s["reason"]
                    and s["reason"] != "no side of ours ran"})
    notes += noisy_notes(results)
    return ("img/s per side (best ours/peer: the fastest of ours over the fastest peer)\n" + format_table(lines)
            + ("\n" + "\n".join(notes) if notes else ""))


def goal_lines(goals):
    lines = ["goals (stated for resnest50@224; reported, not asserted):"]
    for group, what in _cases.GOAL_GROUPS.items():
        chosen = [g for g in goals if g["group"] == group]
        if chosen:
            lines.append(f"  {what}:")
        for g in chosen:
            verdict = "n/a " if g["passed"] is None else ("PASS" if g["passed"] else "FAIL")
            value = f"{g['value']:.2f}" if g["value"] is not None else g["note"]
            lines.append(f"    {verdict}  {g['label']} {g['case']}: {g['metric']} {value} (goal >= {g['target']:g})")
    return "\n".join(lines)


def report(args, info, results, peer_env, engines):
    from . import _engines, _mx_prep, _plot, _report

    goals = _cases.check_goals(results)
    print(table(results, args.sides))
    print(goal_lines(goals))
    doc = {
        **_report.header("resnest-gluon/compare/2", info),
        "protocol": {
            "ctx": "cpu", "warmup": args.warmup, "iters": args.iters, "seconds": args.seconds, "rounds": args.rounds,
            "sides": args.sides,
            "order": "alternating rounds: each side in the order of 'sides', per round",
            "cases": {case.name: case.spec.what for case in args.cases},
            "hybridize": dict(static_alloc=True, static_shape=True),
            "sync": "inference: wait_to_read() on the output (engines: the logits in a numpy array); training: "
                    "mx.nd.waitall() after Trainer.step (timm: synchronous CPU)",
            "train": _recipe.DESCRIPTION,
            "onnx_files": _engines.FILE_OF,
            "engines": _engines.SETTINGS,
            "int8_calibration": f"{_mx_prep.CALIBRATION_BATCHES} random batches (speed only, not accuracy)",
            "weights": "random; speed does not depend on weight values",
            "img_per_s": "median over rounds of batch_size * timed batches / time",
            "ratios": "img/s over img/s, both medians; best ours / best peer: the fastest available side of each",
        },
        "peers": peer_env,
        "engines": engines,
        "results": results,
        "goals": goals,
    }
    _report.write_outputs(args.out, "compare", doc, lambda png_path: _plot.compare_chart(
        png_path, results, args.sides, f"{info['cpu']}, {info['threads']} threads"))
    return doc


if __name__ == "__main__":
    main()
