"""ImageNet-style top-1/top-5 of a ResNeSt on a validation .rec, with the official evaluation protocol.

    python scripts/verify.py --rec-val val.rec --model resnest50 --pretrained --json result.json
    horovodrun --gloo -np 4 -H localhost:4 python scripts/verify.py --rec-val val.rec --model resnest50 --params f

Protocol: the model's ``DataConfig`` (``--crop-size`` / ``--crop-ratio`` replace its input size / crop_pct).
Every image of the file is evaluated exactly once (the last batch may be partial; no padding).

Undecodable records are skipped and reported (index and reason) in the printout and in the JSON
(``corrupt_records``); ``images`` counts only the evaluated ones, so accuracies are over decodable images. A label
outside ``[0, num_classes)`` is an error naming the file and the largest label seen.

Horovod is used only when this runs under ``horovodrun`` (``HOROVOD_RANK`` or ``OMPI_COMM_WORLD_RANK`` set) or
with ``--horovod``; it is imported only then. Each rank takes every ``size``-th record from its ``rank``; the
counts are summed with ``hvd.allreduce(op=Sum)`` and rank 0 prints and writes the JSON.
Throughput (images/s) is timed from batch 5 on, as the official script (from batch 0 when there are fewer than
6 batches); under Horovod it is the sum over ranks.
"""
import argparse
import dataclasses
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import mxnet as mx  # noqa: E402
import numpy as np  # noqa: E402

from resnest_gluon.data import ValRecordIter  # noqa: E402
from resnest_gluon.predict import classes_in_params  # noqa: E402
from resnest_gluon.zoo import get_config, get_model, load_weights  # noqa: E402

TIMED_FROM_BATCH = 5


class VerifyError(Exception):
    """A user-facing failure: printed as ``error: ...`` with exit code 1."""


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rec-val", required=True, help="validation .rec")
    p.add_argument("--rec-val-idx", help="its .idx (default: the .idx next to the .rec if any, else sequential)")
    p.add_argument("--model", default="resnest50")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--params", help="a .params file")
    src.add_argument("--pretrained", action="store_true", help="the published ImageNet weights")
    p.add_argument("--num-classes", type=int, help="default: the classifier size of --params, else 1000")
    p.add_argument("--crop-size", type=int, help="input size (default: the model's)")
    p.add_argument("--crop-ratio", type=float, help="crop_pct (default: the model's)")
    p.add_argument("--batch-size", type=int, default=50, help="per device")
    p.add_argument("--gpus", default="", help="comma-separated GPU ids; empty = CPU")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    p.add_argument("--num-workers", type=int, default=4)
    p.add_argument("--json", help="also write the summary to this JSON file")
    p.add_argument("--horovod", action="store_true", help="force Horovod (auto under horovodrun)")
    return p.parse_args(argv)


class Dist:
    """Rank, world size and a sum across ranks; a single process unless Horovod is wanted (see module doc)."""

    def __init__(self, force=False):
        self.hvd = None
        self.rank, self.size, self.local_rank = 0, 1, 0
        if force or "HOROVOD_RANK" in os.environ or "OMPI_COMM_WORLD_RANK" in os.environ:
            import horovod.mxnet as hvd

            hvd.init()
            self.hvd, self.rank, self.size, self.local_rank = hvd, hvd.rank(), hvd.size(), hvd.local_rank()

    def sum(self, values, name):
        arr = np.asarray(values, np.float64)
        if self.hvd is None:
            return arr
        return self.hvd.allreduce(mx.nd.array(arr, dtype="float64"), op=self.hvd.Sum, name=name).asnumpy()

    def gather(self, obj):
        return [obj] if self.hvd is None else self.hvd.allgather_object(obj)


def data_config(args):
    cfg = get_config(args.model).data
    changes = {}
    if args.crop_size is not None:
        if args.crop_size < 1:
            raise VerifyError(f"--crop-size must be positive, got {args.crop_size}")
        changes["input_size"] = args.crop_size
    if args.crop_ratio is not None:
        if not 0 < args.crop_ratio <= 1:
            raise VerifyError(f"--crop-ratio must be in (0, 1], got {args.crop_ratio}")
        changes["crop_pct"] = args.crop_ratio
    return dataclasses.replace(cfg, **changes)


def contexts(args, dist):
    if not args.gpus.strip():
        if args.dtype == "float16":
            raise VerifyError("--dtype float16 needs a GPU (--gpus): MXNet's CPU float16 convolutions are not "
                              "supported; use float32 or bfloat16 on CPU")
        return [mx.cpu()]
    gpus = [int(g) for g in args.gpus.split(",") if g.strip()]
    if dist.hvd is not None:  # one device per rank
        return [mx.gpu(gpus[dist.local_rank % len(gpus)])]
    return [mx.gpu(g) for g in gpus]


def build_net(args, ctx):
    num_classes = args.num_classes
    if args.params:
        if not os.path.isfile(args.params):
            raise VerifyError(f"params file not found: {args.params!r}")
        num_classes = num_classes or classes_in_params(args.params)
    num_classes = num_classes or 1000
    try:
        net = get_model(args.model, pretrained=args.pretrained, ctx=ctx, classes=num_classes)
        if args.params:
            load_weights(net, args.params, ctx=ctx)
    except ValueError as err:
        raise VerifyError(str(err)) from None
    net.hybridize(static_alloc=True, static_shape=True)
    if args.dtype == "float16":
        net.cast("float16")
    elif args.dtype == "bfloat16":
        from mxnet.contrib import amp

        net.hybridize()
        net(mx.nd.zeros((1, 3, 32, 32), ctx=ctx[0]))  # convert_hybrid_block needs a traced graph
        net = amp.convert_hybrid_block(net, target_dtype="bfloat16", ctx=ctx[0])
    return net, num_classes


def max_label(rec_path):
    """The largest label in a .rec, from the record headers alone (no image decoding): for the error message."""
    from resnest_gluon.data.records import iter_records

    return max(float(np.max(mx.recordio.unpack(payload)[0].label)) for _, payload in iter_records(rec_path))


def count_correct(logits, labels, k):
    """``(top-1 correct, top-k correct)`` of a batch; ranks by descending logit."""
    top = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    hits = top == labels[:, None]
    return int(hits[:, 0].sum()), int(hits.any(axis=1).sum())


def evaluate(args, dist):
    cfg = data_config(args)
    ctx = contexts(args, dist)
    net, num_classes = build_net(args, ctx)
    k = min(5, num_classes)
    if not os.path.isfile(args.rec_val):
        raise VerifyError(f"record file (.rec) not found: {args.rec_val!r}")
    if args.rec_val_idx and not os.path.isfile(args.rec_val_idx):
        raise VerifyError(f"record index (.idx) not found: {args.rec_val_idx!r}")
    batch = args.batch_size * len(ctx)
    data = ValRecordIter(args.rec_val, cfg, idx_path=args.rec_val_idx, batch_size=batch,
                         num_workers=args.num_workers, rank=dist.rank, world=dist.size)
    in_dtype = "float16" if args.dtype == "float16" else "float32"
    top1 = top5 = seen = timed = 0
    bad_label, timed_from = -1.0, 0
    tic = time.time()
    for i, (x, y) in enumerate(data):
        if i == TIMED_FROM_BATCH:
            tic, timed, timed_from = time.time(), 0, TIMED_FROM_BATCH
        labels = y.asnumpy()
        if labels.ndim != 1:
            raise VerifyError(f"{args.rec_val}: records carry {labels.shape[1:]} labels each; verify expects one")
        if labels.size and (labels.max() >= num_classes or labels.min() < 0 or np.any(labels % 1)):
            bad_label = float(labels[(labels >= num_classes) | (labels < 0) | (labels % 1 != 0)].max())
            break  # stop, but still join the collective sums below so no rank hangs
        parts = mx.gluon.utils.split_and_load(x.astype(in_dtype), ctx, even_split=False)
        logits = np.concatenate([net(p).astype("float32").asnumpy() for p in parts])
        c1, c5 = count_correct(logits, labels.astype(np.int64), k)
        top1, top5, seen, timed = top1 + c1, top5 + c5, seen + len(labels), timed + len(labels)
    elapsed = time.time() - tic
    rate = timed / elapsed if elapsed > 0 else 0.0
    t1, t5, n, total_rate, n_bad = dist.sum([top1, top5, seen, rate, bad_label >= 0], "verify_counts")
    if n_bad:
        worst = max_label(args.rec_val)
        raise VerifyError(f"{args.rec_val}: max label {worst:g} is outside the model's classes [0, {num_classes}) "
                          f"({args.model} built with {num_classes} classes; pass --num-classes or another file)")
    corrupt = sorted(c for part in dist.gather(list(data.corrupt)) for c in part)
    n = int(n)
    return {
        "model": args.model, "params": args.params, "pretrained": args.pretrained, "rec": args.rec_val,
        "idx": args.rec_val_idx or data.idx_path, "data_config": cfg.to_dict(), "num_classes": num_classes,
        "dtype": args.dtype, "batch_size": batch, "world_size": dist.size,
        "top1": t1 / n if n else None, "top5": t5 / n if n else None, "topk": k,
        "top1_correct": int(t1), "top5_correct": int(t5), "images": n,
        "corrupt_records": [{"index": int(i), "message": m} for i, m in corrupt],
        "images_per_sec": float(total_rate), "timed_from_batch": timed_from,
    }


def main(argv=None):
    args = parse_args(argv)
    dist = Dist(force=args.horovod)
    try:
        summary = evaluate(args, dist)
    except (VerifyError, FileNotFoundError) as err:
        sys.exit(f"error: {err}")
    if dist.rank == 0 and summary["images"] == 0:
        print(f"{args.model} on {args.rec_val}: no decodable images")
    elif dist.rank == 0:
        print(f"{args.model} on {args.rec_val}: top-1 {summary['top1']:.4%}  top-{summary['topk']} "
              f"{summary['top5']:.4%}  ({summary['top1_correct']}/{summary['top5_correct']} of "
              f"{summary['images']} images)  {summary['images_per_sec']:.1f} images/s")
    if dist.rank == 0:
        if summary["corrupt_records"]:
            print(f"skipped {len(summary['corrupt_records'])} undecodable records:")
            for c in summary["corrupt_records"]:
                print(f"  record #{c['index']}: {c['message']}")
        if args.json:
            with open(args.json, "w") as f:
                json.dump(summary, f, indent=2)
    return summary


if __name__ == "__main__":
    main()
