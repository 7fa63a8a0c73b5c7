"""Top-1/top-k accuracy of a network over a validation set: the one evaluation loop, for training's validation and
``scripts/verify.py``.

Each rank evaluates its shard of a :class:`~resnest_gluon.data.ValRecordIter` (every image once, the last batch
partial); counts and throughputs are summed over ranks at the end, so shards may differ in length. A label outside
``[0, num_classes)`` stops the loop, but every rank still joins the sum (no rank hangs waiting for the others)
before all of them raise :class:`LabelError`.
"""
import time
from dataclasses import dataclass

import mxnet as mx
import numpy as np

from .data.records import max_label
from .distributed import Distributed

__all__ = ["EvalResult", "LabelError", "count_correct", "evaluate"]


class LabelError(ValueError):
    """Labels that do not fit the network: outside ``[0, num_classes)``, or more than one per record."""


@dataclass
class EvalResult:
    """Counts over all ranks; ``images_per_sec`` is summed over ranks, timed from batch ``timed_from_batch``."""

    top1_correct: int
    topk_correct: int
    images: int
    k: int
    images_per_sec: float
    timed_from_batch: int
    corrupt: list  # [(record index, message)] of the undecodable records skipped, over all ranks

    @property
    def top1(self):
        return self.top1_correct / self.images if self.images else None

    @property
    def topk(self):
        return self.topk_correct / self.images if self.images else None


def count_correct(logits, labels, k):
    """``(top-1 correct, top-k correct)`` of a batch; ranks by descending logit (ties: the lower class first)."""
    top = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    hits = top == labels[:, None]
    return int(hits[:, 0].sum()), int(hits.any(axis=1).sum())


def _bad_labels(labels, num_classes):
    return (labels >= num_classes) | (labels < 0) | (labels % 1 != 0)


def evaluate(net, batches, ctx, num_classes, dist=None, k=5, timed_from_batch=0):
    """Evaluates ``net`` on ``batches`` (a ``ValRecordIter`` of this rank's shard) over the contexts ``ctx``.

    Each batch is split over the contexts (a context or a list). ``k`` is capped at ``num_classes``. Throughput
    is timed from batch ``timed_from_batch`` when the shard has more batches than that, else from the start.
    Returns an :class:`EvalResult`.
    """
    dist = dist or Distributed(use_horovod=False)
    contexts = list(ctx) if isinstance(ctx, (list, tuple)) else [ctx]
    k = min(k, num_classes)
    top1 = topk = seen = timed = 0
    bad_label, timed_from = -1.0, 0
    tic = time.time()
    for i, (x, y) in enumerate(batches):
        if timed_from_batch and i == timed_from_batch:
            tic, timed, timed_from = time.time(), 0, timed_from_batch
        labels = y.asnumpy()
        if labels.ndim != 1:
            raise LabelError(f"{batches.rec_path}: records carry {labels.shape[1:]} labels each; evaluation "
                             f"expects one")
        bad = _bad_labels(labels, num_classes)
        if bad.any():
            bad_label = float(labels[bad].max())
            break  # stop, but still join the collective sum below so no rank hangs
        parts = mx.gluon.utils.split_and_load(x, contexts, even_split=False)
        logits = np.concatenate([net(p).astype("float32").asnumpy() for p in parts])
        c1, ck = count_correct(logits, labels.astype(np.int64), k)
        top1, topk, seen, timed = top1 + c1, topk + ck, seen + len(labels), timed + len(labels)
    elapsed = time.time() - tic
    rate = timed / elapsed if elapsed > 0 else 0.0
    top1, topk, seen, rate, n_bad = dist.allreduce_sum([top1, topk, seen, rate, bad_label >= 0], "eval_counts")
    if n_bad:
        raise LabelError(f"{batches.rec_path}: max label {max_label(batches.rec_path):g} is outside the model's "
                         f"classes [0, {num_classes})")
    corrupt = sorted(c for part in dist.allgather_object(list(batches.corrupt)) for c in part)
    return EvalResult(int(top1), int(topk), int(seen), k, rate, timed_from, corrupt)
