#!/usr/bin/env python
"""Where a batch's time goes: MXNet's profiler per operator, for one model, case and batch size.

The network is prepared exactly as compare.py prepares ours (``deploy.optimize`` for inference, the recipe's
training step), with operator bulking off so that every operator is timed on its own. Besides the table, the run
states a bound: the img/s the model would reach if everything but its convolutions took no time. A speed goal above
that bound cannot be met by rearranging the rest of the graph. Writes OUT/op_profile.json, OUT/op_profile.png and
MXNet's trace of the profiled batches, OUT/op_profile_trace.json (open it in chrome://tracing or Perfetto).

    python -m benchmarks.op_profile --model resnest50 --batch 16 --threads 2   (python benchmarks/op_profile.py too)
"""
import argparse
import json
import os
import time

if __name__ == "__main__" and not __package__:  # run as a file: rerun as python -m benchmarks.op_profile
    import _launch  # the script's folder is sys.path[0] when Python runs a file

    _launch.run_as_module(__file__)

# these helpers import no framework: threads must be set before mxnet loads
from . import _peers  # noqa: E402
from ._bench import build, machine_info, parse_spec, positive, set_threads  # noqa: E402
from ._timing import warm_up  # noqa: E402

MODES = ("infer", "train")
DTYPES = ("float32", "bfloat16", "int8")  # CPU inference dtypes of resnest_gluon.deploy; training is float32
TOP = 12  # operators in the printed table and the chart; the JSON has all


def is_convolution(op):
    """Convolutions in every form the graphs contain: oneDNN-fused (``_sg_mkldnn_conv``, with its folded BN, ReLU
    and residual add), plain, quantized and their backward passes."""
    return "conv" in op.lower()


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__.split("\n", 2)[2],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="resnest50", metavar="NAME[@SIZE]", help="default: %(default)s")
    p.add_argument("--batch", type=positive, default=16, help="batch size (default: %(default)s)")
    p.add_argument("--mode", choices=MODES, default="infer", help="inference or one training step (default: infer)")
    p.add_argument("--dtype", choices=DTYPES, default="float32", help="inference dtype (default: float32)")
    p.add_argument("--iters", type=positive, default=3, help="profiled batches (default: %(default)s)")
    p.add_argument("--warmup", type=positive, default=2, help="untimed batches first (default: %(default)s)")
    p.add_argument("--threads", type=positive, help="CPU threads (default: $OMP_NUM_THREADS or the CPUs allowed)")
    p.add_argument("--out", default=os.path.join(_peers.REPO, "out", "op_profile"),
                   help="folder for op_profile.json and op_profile.png (default: out/op_profile in the repo)")
    return p


def profile(step, iters, trace_path):
    """Per-operator totals over ``iters`` calls of ``step`` ({op: {calls, ms}}) and the profiled wall time (s);
    MXNet's own trace of the calls (chrome://tracing format) goes to ``trace_path``."""
    import mxnet as mx

    mx.profiler.set_config(profile_imperative=True, profile_symbolic=True, aggregate_stats=True,
                           filename=trace_path)
    mx.profiler.dumps(reset=True)
    mx.profiler.set_state("run")
    start = time.perf_counter()
    for _ in range(iters):
        step()
    wall = time.perf_counter() - start
    mx.profiler.set_state("stop")
    mx.profiler.dump()
    ops = json.loads(mx.profiler.dumps(format="json", reset=True))["Time"].get("operator", {})
    return {op: {"calls": s["Count"], "ms": s["Total"]} for op, s in ops.items()}, wall


def summarize_ops(ops, iters, batch, wall_s):
    """Per batch: each operator's ms and share of the operators' total, the convolutions' sum and the bound."""
    total = sum(s["ms"] for s in ops.values())
    rows = sorted(({"op": op, "calls_per_batch": s["calls"] / iters, "ms_per_batch": s["ms"] / iters,
                    "share": s["ms"] / total, "convolution": is_convolution(op)} for op, s in ops.items()),
                  key=lambda r: -r["ms_per_batch"])
    conv_ms = sum(r["ms_per_batch"] for r in rows if r["convolution"])
    return {
        "operators": rows,
        "operators_ms_per_batch": total / iters,
        "convolution_ms_per_batch": conv_ms,
        "convolution_share": conv_ms * iters / total,
        "img_per_s": batch * iters / wall_s,
        "img_per_s_if_only_convolutions": batch * 1e3 / conv_ms if conv_ms else None,
    }


def table(summary):
    from ._report import format_table

    lines = [["operator", "calls/batch", "ms/batch", "share"]]
    for r in summary["operators"][:TOP]:
        lines.append([r["op"], f"{r['calls_per_batch']:g}", f"{r['ms_per_batch']:.1f}", f"{100 * r['share']:.1f}%"])
    rest = summary["operators"][TOP:]
    if rest:
        lines.append([f"({len(rest)} more)", "", f"{sum(r['ms_per_batch'] for r in rest):.1f}",
                      f"{100 * sum(r['share'] for r in rest):.1f}%"])
    bound = summary["img_per_s_if_only_convolutions"]
    return "\n".join([
        format_table(lines),
        f"operators: {summary['operators_ms_per_batch']:.1f} ms/batch, of which convolutions "
        f"{summary['convolution_ms_per_batch']:.1f} ({100 * summary['convolution_share']:.1f}%)",
        f"img/s while profiled: {summary['img_per_s']:.2f}; with everything but the convolutions free: "
        + (f"{bound:.2f}" if bound else "- (no convolution)"),
    ])


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.mode == "train" and args.dtype != "float32":
        parser.error(f"--mode train runs in float32; --dtype {args.dtype} is for inference")
    threads = set_threads(args.threads)
    os.environ["MXNET_EXEC_BULK_EXEC_INFERENCE"] = os.environ["MXNET_EXEC_BULK_EXEC_TRAIN"] = "0"
    try:
        spec = parse_spec(args.model)  # imports mxnet, now that the thread and bulking variables are set
    except ValueError as err:
        parser.error(f"--model: {err}")

    from . import _mx_prep, _plot, _report

    info = machine_info(threads)
    info["amx"] = _mx_prep.enable_amx()
    step = _mx_prep.make_case_step(build(spec.name), args.mode, args.batch, spec.input_size, args.dtype,
                                   _mx_prep.context("cpu"))
    warm_up(step, args.warmup)
    os.makedirs(args.out, exist_ok=True)
    ops, wall = profile(step, args.iters, os.path.join(args.out, "op_profile_trace.json"))
    summary = summarize_ops(ops, args.iters, args.batch, wall)
    info["loadavg_end"] = list(os.getloadavg())
    case = f"{spec.label} {args.mode} {args.dtype} batch {args.batch}"  # training is float32 (checked above)
    print(case)
    print(table(summary))
    doc = {**_report.header("resnest-gluon/op_profile/1", info),
           "case": {"model": spec.name, "input_size": spec.input_size, "mode": args.mode,
                    "dtype": args.dtype, "batch_size": args.batch,
                    "iters": args.iters, "warmup": args.warmup, "bulking": "off (every operator timed alone)"},
           **summary}
    _report.write_outputs(args.out, "op_profile", doc, lambda png: _plot.op_profile_chart(
        png, summary["operators"][:TOP], f"{case}, {info['cpu']}, {threads} threads"))
    return doc


if __name__ == "__main__":
    main()
