#!/usr/bin/env python
"""Inference speed of the ResNeSt family with the paper's Gluon protocol, optionally beside GluonCV and timm.

Each model is built with random weights (speed does not depend on the weight values), hybridized with
static_alloc=True and static_shape=True, warmed up, then timed batch by batch, each batch synchronised with
wait_to_read(). The table gives per-batch latency (p50/p90), img/s, the paper's V100 img/s and, since a CPU cannot
be compared with a V100 in absolute terms, each model's img/s relative to resnest50@224, in our run and in the paper.

    python benchmarks/latency.py --threads 2        (or python -m benchmarks.latency from the repository root)
"""
import argparse
import gc
import os
import sys
from contextlib import ExitStack

if __name__ == "__main__" and not __package__:  # run as a file: rerun as python -m benchmarks.latency
    import _launch  # the script's folder is sys.path[0] when Python runs a file

    _launch.run_as_module(__file__)

# these helpers import no framework: threads must be set before mxnet loads
from . import _paper, _peers  # noqa: E402
from ._bench import alternate, build, in_process, machine_info, parse_spec, positive, set_threads  # noqa: E402
from ._timing import summarize, warm_up  # noqa: E402

CPU_BATCH_SIZE = 16
DEFAULT_ITERS = 20
DTYPES = ("float32", "float16", "bfloat16", "int8")  # resnest_gluon.deploy's dtypes (checked at start-up)

EPILOG = f"""\
models: the paper's table by default ({' '.join(_paper.TABLE)}). NAME@SIZE picks an input size; a bare NAME
  (any registered model, see resnest_gluon.list_models(), or 'resnet50' for MXNet's resnet50_v1) uses its own.
batch size: default {_paper.GPU_BATCH_SIZE} on GPU (the per-GPU batch of the official verify.py that produced the
  paper's numbers) and {CPU_BATCH_SIZE} on CPU (a V100-sized batch is minutes per batch on a few cores).
threads: --threads N exports OMP_NUM_THREADS=N, MKL_NUM_THREADS=N and MXNET_OMP_MAX_THREADS=N (and
  MXNET_CPU_WORKER_NTHREADS=1 unless set) before mxnet is imported; without it, N is $OMP_NUM_THREADS or the
  number of CPUs this process may run on; it is exported either way, so MXNet, OpenMP and the peers all use the
  same count. timm runs with torch.set_num_threads(N).
dtypes: float32; float16 (net.cast, GPU only); bfloat16 (MXNet AMP convert_hybrid_block, CPU/oneDNN only);
  int8 (resnest_gluon.deploy's quantization, calibrated on random batches: speed only; ours only, no peer).
--compare: GluonCV's resnest* (MXNet, under --gluoncv-python) and timm's resnest* (PyTorch, eval mode,
  torch.inference_mode(), under --torch-python) in persistent worker processes, timed in alternating rounds
  (ours, gluoncv, timm, ours, ...); latency percentiles pool all rounds, img/s is the median of the rounds.
  timm names: resnest14->14d, 26->26d, 50->50d, 101->101e, 200->200e, 269->269e. resnet50 has no peer.
output: a table on stdout, OUT/latency.json (its schema: benchmarks/_report.py) and
  OUT/latency.png (img/s per model, ticks where the paper's ratios would put it)."""


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=_paper.TABLE, metavar="NAME[@SIZE]",
                   help="models to time (default: the paper's table)")
    p.add_argument("--batch-size", nargs="+", type=positive, metavar="N",
                   help=f"one or more batch sizes (default: {_paper.GPU_BATCH_SIZE} on GPU as the paper, "
                        f"{CPU_BATCH_SIZE} on CPU)")
    p.add_argument("--warmup", type=positive, default=_paper.WARMUP_BATCHES,
                   help="untimed batches after building each model, at least 1: the first call builds the graph "
                        "(default: %(default)s, as verify.py)")
    p.add_argument("--iters", type=positive, help=f"timed batches per round (default: {DEFAULT_ITERS} unless "
                                                   "--seconds is given; with both, whichever ends first)")
    p.add_argument("--seconds", type=float, help="time budget per round and model instead of a batch count")
    p.add_argument("--rounds", type=positive, help="alternating rounds (default: 3 with --compare, else 1)")
    p.add_argument("--ctx", choices=("cpu", "gpu"), default="cpu", help="cpu, or gpu = mx.gpu(0) (default: cpu)")
    p.add_argument("--dtype", choices=DTYPES, default="float32", help="default: float32")
    p.add_argument("--threads", type=positive, help="CPU threads for every framework (see below)")
    p.add_argument("--compare", action="store_true", help="also time GluonCV's and timm's ResNeSt in the same run")
    p.add_argument("--torch-python", default=_peers.PYTHON["timm"][0],
                   help="interpreter with torch + timm (default: the repo's .venv-torch/bin/python)")
    p.add_argument("--gluoncv-python", default=_peers.PYTHON["gluoncv"][0],
                   help="interpreter with gluoncv (default: the repo's .venv/bin/python)")
    p.add_argument("--out", default=os.path.join(_peers.REPO, "out", "latency"),
                   help="folder for latency.json and latency.png (default: out/latency in the repo)")
    return p


def measure(spec, batch, args, ctx, workers):
    """One table row: ours and each peer that has this architecture, timed in alternating rounds."""
    from resnest_gluon import count_params

    from . import _mx_prep

    print(f"[latency] {spec.label} batch {batch}: building and warming up", file=sys.stderr, flush=True)
    net = build(spec.name)
    step = _mx_prep.make_step(net, batch, spec.input_size, args.dtype, ctx)
    params = count_params(net)
    warm_up(step, args.warmup)
    peers = {}
    for peer, worker in workers.items():
        model = _peers.MODELS[peer].get(spec.name)
        if model and args.dtype in _peers.DTYPES:
            peers[peer] = {"model": model, "params": worker.load(model, spec.input_size, batch, args.dtype,
                                                                  args.ctx, args.warmup)}
    timers = {"ours": in_process(step),
              **{peer: workers[peer].measure for peer in peers}}
    rounds = alternate(f"[latency] {spec.label} batch {batch}", timers, args.rounds, args.iters, args.seconds)
    row = {"model": spec.name, "label": spec.label, "input_size": spec.input_size, "batch_size": batch,
           "dtype": args.dtype, "params": params, **summarize(rounds["ours"], batch),
           "paper_gpu_img_per_s": _paper.GPU_IMG_PER_S.get(spec.label)}
    if workers:
        row["peers"] = {peer: {**info, **summarize(rounds[peer], batch)} for peer, info in peers.items()}
    del step, net
    gc.collect()
    return row


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    threads = set_threads(args.threads)

    from . import _mx_prep  # imports mxnet, now that the thread variables are set

    assert set(_mx_prep.SUPPORTED_CTX) <= set(DTYPES), "DTYPES must list resnest_gluon.deploy's dtypes"
    if args.ctx not in _mx_prep.SUPPORTED_CTX[args.dtype]:
        hint = {"float16": "float16 needs --ctx gpu (MXNet has no fast float16 CPU kernels); on CPU use "
                           "--dtype bfloat16", "bfloat16": "bfloat16 is a CPU (oneDNN) path; on GPU use float16"}
        hint = hint.get(args.dtype, f"{args.dtype} runs on {' or '.join(_mx_prep.SUPPORTED_CTX[args.dtype])} only")
        parser.error(f"--dtype {args.dtype} is not supported with --ctx {args.ctx}: {hint}")
    try:
        specs = [parse_spec(text) for text in args.models]
    except ValueError as err:
        parser.error(f"--models: {err}")
    try:
        ctx = _mx_prep.context(args.ctx)
    except RuntimeError as err:
        parser.error(str(err))
    batches = args.batch_size or [_paper.GPU_BATCH_SIZE if args.ctx == "gpu" else CPU_BATCH_SIZE]
    if args.seconds is not None and args.seconds <= 0:
        parser.error(f"--seconds must be > 0, got {args.seconds}")
    if args.iters is None and args.seconds is None:
        args.iters = DEFAULT_ITERS
    args.rounds = args.rounds or (3 if args.compare else 1)
    pythons = {"gluoncv": args.gluoncv_python, "timm": args.torch_python} if args.compare else {}
    for peer, python in pythons.items():
        try:
            _peers.check_python(peer, python)
        except _peers.PeerError as err:
            parser.error(str(err))

    info = machine_info(threads)
    with ExitStack() as stack:
        try:
            workers = {peer: stack.enter_context(_peers.PeerWorker(peer, python, threads))
                       for peer, python in pythons.items()}
            results = [measure(spec, batch, args, ctx, workers) for spec in specs for batch in batches]
        except _peers.PeerError as err:
            sys.exit(f"latency.py: error: {err}")
        peer_env = {peer: {"python": pythons[peer], "versions": w.versions} for peer, w in workers.items()}
    info["loadavg_end"] = list(os.getloadavg())
    return report(args, info, results, peer_env)


def report(args, info, results, peer_env):
    from . import _plot, _report

    _report.add_ratios(results)
    checks = _report.order_check(results)
    peers = tuple(peer_env)
    print(_report.table(results, peers))
    if checks:
        print(_report.order_lines(checks))
    doc = {
        **_report.header("resnest-gluon/latency/1", info),
        "protocol": {"ctx": args.ctx, "dtype": args.dtype, "warmup": args.warmup, "iters": args.iters,
                     "seconds": args.seconds, "rounds": args.rounds, "hybridize": dict(static_alloc=True,
                                                                                      static_shape=True),
                     "sync": "wait_to_read() per batch (timm: synchronous CPU / cuda.synchronize)",
                     "weights": "random (Xavier); speed does not depend on weight values",
                     "img_per_s": "median over rounds of batch_size * timed batches / time",
                     "reference": _paper.REFERENCE},
        "peers": peer_env,
        "results": results,
        "order_check": checks,
    }
    _report.write_outputs(args.out, "latency", doc, lambda png_path: _plot.bar_chart(
        png_path, results, peers, f"{info['cpu']}, {info['threads']} threads, {args.dtype}"))
    return doc


if __name__ == "__main__":
    main()
