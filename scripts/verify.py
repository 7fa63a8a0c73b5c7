"""ImageNet-style top-1/top-5 of a ResNeSt on a validation .rec, with the official evaluation protocol.

    python scripts/verify.py --rec-val val.rec --model resnest50 --pretrained --json result.json
    python scripts/verify.py --rec-val val.rec --params runs/x/ckpt-0007.params     # model, classes, size: its own
    horovodrun --gloo -np 4 -H localhost:4 python scripts/verify.py --rec-val val.rec --params runs/x/ckpt-0007.params
    python scripts/verify.py --rec-val val.rec --model resnest50 --pretrained --dtype int8 --calib-rec train.rec
    python scripts/verify.py --rec-val val.rec --params model.onnx --backend openvino   # scripts/export_onnx.py's

Protocol: the weights' ``DataConfig`` -- for a training checkpoint the one its validation used, else the model's
(``--crop-size`` / ``--crop-ratio`` / ``--interpolation`` replace its input size / crop_pct / interpolation).
Every image of the file is evaluated exactly once (the last batch may be partial; no padding).

Undecodable records are skipped and reported (index and reason) in the printout and in the JSON
(``corrupt_records``); ``images`` counts only the evaluated ones, so accuracies are over decodable images. A label
outside ``[0, num_classes)`` is an error naming the file and the largest label seen.

Exit status (:mod:`resnest_gluon.exits`): 0 evaluated (damaged records included: skipped and listed); 2 with one
line ``error: ...`` naming the file, flag or model (a missing or unreadable file, weights of another model, labels
the model does not have, unusable flags); 8 when ``--pretrained`` weights cannot be had (offline, mirror, SHA-1).

``--backend onnxruntime`` / ``openvino`` evaluates in that engine (CPU) the ``.onnx`` file given as ``--params``,
or the network exported to ONNX on the fly; the batches, the counting and the JSON are the same.

Horovod is used only when this runs under ``horovodrun`` (``HOROVOD_RANK`` or ``OMPI_COMM_WORLD_RANK`` set) or
with ``--horovod``; it is imported only then. Each rank takes every ``size``-th record from its ``rank``; the
counts are summed with ``hvd.allreduce(op=Sum)`` and rank 0 prints and writes the JSON.
Throughput (images/s) is timed from batch 5 on, as the official script (from batch 0 when there are fewer than
6 batches); under Horovod it is the sum over ranks.
"""
import os
import sys
import warnings

import mxnet as mx

from resnest_gluon.atomic import write_json
from resnest_gluon.data import ValRecordIter
from resnest_gluon.deploy import NDArrayCalls, engine_for, input_dtype, optimize
from resnest_gluon.distributed import Distributed
from resnest_gluon.evaluation import LabelError, evaluate
from resnest_gluon.exits import ArgumentParser, run_script
from resnest_gluon.cli import (add_backend_arguments, add_data_config_arguments, add_model_arguments,
                               add_precision_arguments, model_info, optimize_kwargs)
from resnest_gluon.trained import is_onnx

TIMED_FROM_BATCH = 5


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rec-val", required=True, help="validation .rec")
    p.add_argument("--rec-val-idx", help="its .idx (default: the .idx next to the .rec if any, else sequential)")
    add_model_arguments(p)
    add_data_config_arguments(p)
    p.add_argument("--batch-size", type=int, default=50, help="per device")
    p.add_argument("--gpus", default="", help="comma-separated GPU ids; empty = CPU")
    add_precision_arguments(p)
    add_backend_arguments(p)
    p.add_argument("--num-workers", type=int, default=4)
    p.add_argument("--json", help="also write the summary to this JSON file")
    p.add_argument("--horovod", action="store_true", help="force Horovod (auto under horovodrun)")
    return p.parse_args(argv)


def contexts(args, dist):
    if not args.gpus.strip():
        return [mx.cpu()]
    gpus = [int(g) for g in args.gpus.split(",") if g.strip()]
    if dist.hvd is not None:  # one device per rank
        return [mx.gpu(gpus[dist.local_rank % len(gpus)])]
    return [mx.gpu(g) for g in gpus]


def backend_of(args):
    """``--backend``, defaulting to onnxruntime for an ``.onnx`` file and to mxnet otherwise."""
    return args.backend or ("onnxruntime" if args.params and is_onnx(args.params) else "mxnet")


def build_net(args, ctx):
    """The model with its weights, optimized for ``--dtype`` (int8: calibrated on ``--calib-rec`` read with the
    weights' data config), or the ONNX engine of ``--backend`` called like it; and its
    :class:`~resnest_gluon.trained.ModelInfo`."""
    backend = backend_of(args)
    if backend != "mxnet" and args.gpus.strip():
        raise ValueError(f"--backend {backend} runs on the CPU: drop --gpus")
    info = model_info(args)
    if backend == "mxnet" and args.params and is_onnx(args.params):
        raise ValueError(f"{args.params} is an ONNX file: run it with --backend onnxruntime or openvino")
    net = None
    if not (args.params and is_onnx(args.params)):
        net = info.load(args.params, ctx) if args.params else info.build(ctx, pretrained=True)
    calibration = optimize_kwargs(args, info.data_config, args.batch_size)
    if backend == "mxnet":
        return optimize(net, args.dtype, ctx, **calibration), info
    return NDArrayCalls(engine_for(info, backend, args.params, net, args.threads, args.dtype, **calibration)), info


def calibration_summary(args):
    """What calibrated an int8 run (``None`` for the other dtypes), for the JSON."""
    if args.dtype != "int8":
        return None
    return {"rec": args.calib_rec, "mode": args.calib_mode, "batches": args.num_calib_batches,
            "batch_size": args.batch_size, "exclude_first_conv": args.exclude_first_conv}


def verify(args, dist):
    if not os.path.isfile(args.rec_val):  # before the model is built: a typo fails at once
        raise FileNotFoundError(f"record file (.rec) not found: {args.rec_val}")
    if args.rec_val_idx and not os.path.isfile(args.rec_val_idx):
        raise FileNotFoundError(f"record index (.idx) not found: {args.rec_val_idx}")
    ctx = contexts(args, dist)
    net, info = build_net(args, ctx)
    cfg, num_classes = info.data_config, info.num_classes
    batch = args.batch_size * len(ctx)
    data = ValRecordIter(args.rec_val, cfg, idx_path=args.rec_val_idx, batch_size=batch,
                         num_workers=args.num_workers, rank=dist.rank, world=dist.world,
                         dtype=input_dtype(args.dtype) if backend_of(args) == "mxnet" else "float32")
    try:
        res = evaluate(net, data, ctx, num_classes, dist, k=5, timed_from_batch=TIMED_FROM_BATCH)
    except LabelError as err:
        raise LabelError(f"{err} ({info.model} built with {num_classes} classes; pass --num-classes or another "
                         f"file)") from err
    return {
        "model": info.model, "params": args.params, "pretrained": args.pretrained, "rec": args.rec_val,
        "idx": args.rec_val_idx or data.idx_path, "data_config": cfg.to_dict(), "num_classes": num_classes,
        "dtype": args.dtype, "backend": backend_of(args), "calibration": calibration_summary(args),
        "batch_size": batch, "world_size": dist.world,
        "top1": res.top1, "top5": res.topk, "topk": res.k,
        "top1_correct": res.top1_correct, "top5_correct": res.topk_correct, "images": res.images,
        "corrupt_records": [{"index": int(i), "message": m} for i, m in res.corrupt],
        "images_per_sec": float(res.images_per_sec), "timed_from_batch": res.timed_from_batch,
    }


def run(argv=None):
    """Evaluates, prints the result (rank 0), writes ``--json``; returns the summary. Raises the library's errors."""
    args = parse_args(argv)
    dist = Distributed(use_horovod=True if args.horovod else None)
    with warnings.catch_warnings():  # listed below, once, instead of a warning each on stderr
        warnings.filterwarnings("ignore", message="skipped undecodable record")
        summary = verify(args, dist)
    if dist.rank == 0 and summary["images"] == 0:
        print(f"{summary['model']} on {args.rec_val}: no decodable images")
    elif dist.rank == 0:
        print(f"{summary['model']} at {summary['data_config']['input_size']} px on {args.rec_val}: "
              f"top-1 {summary['top1']:.4%}  top-{summary['topk']} "
              f"{summary['top5']:.4%}  ({summary['top1_correct']}/{summary['top5_correct']} of "
              f"{summary['images']} images)  {summary['images_per_sec']:.1f} images/s")
    if dist.rank == 0:
        if summary["corrupt_records"]:
            print(f"skipped {len(summary['corrupt_records'])} undecodable records:")
            for c in summary["corrupt_records"]:
                print(f"  record #{c['index']}: {c['message']}")
        if args.json:
            write_json(args.json, summary)
    return summary


def main(argv=None):
    """The exit code of :func:`run`: 0, or a known failure's, its message one line on stderr."""
    return run_script(run, argv)


if __name__ == "__main__":
    sys.exit(main())
