"""The training loop: builds model, data, optimizer from an argparse namespace, trains, evaluates, checkpoints.

Every rank runs the same number of steps per epoch (Horovod would hang otherwise); rank 0 alone writes files and
shows progress. Per-epoch reseeding (from ``--seed``, epoch and rank) makes a resumed run draw the same random
numbers (mixup, DropBlock, initialisation) as an uninterrupted one from the checkpoint epoch on.
"""
import hashlib
import json
import os
import random
import time

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon

from ..data import MixupLabelSmoothing, RecordTrainIter, RecordTrainLoader, ValRecordIter
from ..distributed import Distributed
from ..dropblock import set_drop_prob
from ..evaluation import evaluate
from ..zoo import DataConfig, classes_in_params, get_model
from .checkpoint import CheckpointManager, latest_checkpoint
from .metrics_log import MetricsLog, plot_curves
from .optim import apply_no_wd, dropblock_prob_at, optimizer_params
from .schedule import build_lr_scheduler

__all__ = ["train", "TrainingDiverged", "param_digest"]


class TrainingDiverged(RuntimeError):
    """The loss became NaN/inf; the last good checkpoint is left untouched."""


def seed_everything(seed, epoch, rank):
    """One seed per (run seed, epoch, rank): ranks differ (mixup, DropBlock masks), epochs are reproducible."""
    s = (seed * 1_000_003 + epoch * 1_009 + rank) % 2 ** 31
    random.seed(s)
    np.random.seed(s)
    mx.random.seed(s)
    return s


def resolve_context(args):
    """CPU unless GPUs are asked for; with Horovod one GPU per process (its local rank)."""
    if args.no_cuda or not args.gpus:
        if args.dtype == "float16":
            raise ValueError("--dtype float16 (multi-precision training) needs a GPU: pass --gpus, or use "
                             "--dtype float32 on CPU")
        return mx.cpu()
    gpus = [int(g) for g in str(args.gpus).split(",") if g.strip()]
    if mx.context.num_gpus() == 0:
        raise ValueError(f"--gpus {args.gpus} given but MXNet sees no GPU (pass --no-cuda to train on CPU)")
    return mx.gpu(gpus[args._local_rank % len(gpus)])


def build_net(args, ctx):
    """The model, fully initialised on ``ctx``: Xavier(gaussian, in, 2) like the official recipe, or loaded."""
    kwargs = dict(dropblock_prob=args.dropblock_prob, final_drop=args.final_drop, last_gamma=args.last_gamma)
    if args.resume_params:
        if not os.path.isfile(args.resume_params):
            raise FileNotFoundError(f"--resume-params: no such file {args.resume_params}")
        file_classes = classes_in_params(args.resume_params) or args.num_classes
        net = get_model(args.model, classes=file_classes, **kwargs)
        net.initialize(mx.init.Xavier(rnd_type="gaussian", factor_type="in", magnitude=2), ctx=ctx)
        _forward_once(net, args, ctx)
        net.load_parameters(args.resume_params, ctx=ctx, allow_missing=True, ignore_extra=True)
        if file_classes != args.num_classes:  # fine-tuning on another label set: fresh classifier
            net.reset_classifier(args.num_classes, ctx=ctx)
    else:
        net = get_model(args.model, pretrained=args.pretrained, ctx=ctx, classes=args.num_classes, **kwargs)
        net.initialize(mx.init.Xavier(rnd_type="gaussian", factor_type="in", magnitude=2), ctx=ctx)
    if args.dtype == "float16":
        net.cast("float16")
    _forward_once(net, args, ctx)
    return net


def _forward_once(net, args, ctx):
    """Finishes deferred initialisation (shapes are known only after a forward) before broadcasting."""
    net(mx.nd.zeros((1, 3, args.input_size, args.input_size), ctx=ctx, dtype=args.dtype))


def build_train_data(args, dist):
    common = dict(batch_size=args.batch_size, num_workers=args.data_nthreads, rank=dist.rank, world=dist.world,
                  seed=args.seed, dtype=args.dtype)
    for flag, path in (("--rec-train", args.rec_train), ("--rec-train-idx", args.rec_train_idx)):
        if path and not os.path.isfile(path):
            raise FileNotFoundError(f"{flag}: no such file {path}")
    if args.auto_aug:
        return RecordTrainLoader(args.rec_train, args.rec_train_idx, input_size=args.input_size, autoaugment=True,
                                 **common)
    return RecordTrainIter(args.rec_train, args.rec_train_idx, data_shape=args.input_size, **common)


def param_digest(net):
    """SHA-256 and per-parameter sums of the trainable parameters (sorted by name), to compare ranks after
    synchronous training: the sums agree to float tolerance (the allreduce may round differently per rank in the
    last bit, so the hash can differ). BN running statistics are excluded: they are per-rank by design."""
    h = hashlib.sha256()
    total = 0.0
    sums = []
    for name, p in sorted(net._collect_params_with_prefix().items()):
        if p.grad_req == "null":
            continue
        arr = p.data().asnumpy().astype(np.float32)
        h.update(name.encode())
        h.update(arr.tobytes())
        total += float(np.abs(arr).sum())
        sums.append(float(arr.astype(np.float64).sum()))
    return {"sha256": h.hexdigest(), "abs_sum": total, "sums": sums}


def validate(net, args, dist, ctx):
    """Top-1/top-5 accuracy and image count over the whole validation set (all ranks together)."""
    val = ValRecordIter(args.rec_val, DataConfig(args.input_size, args.crop_ratio), idx_path=args.rec_val_idx,
                        batch_size=args.batch_size, num_workers=args.data_nthreads, rank=dist.rank,
                        world=dist.world, dtype=args.dtype)
    res = evaluate(net, val, ctx, args.num_classes, dist)
    return res.top1_correct / max(res.images, 1), res.topk_correct / max(res.images, 1), res.images


def train(args):
    """Runs the whole recipe described by ``args`` (see ``scripts/train_imagenet.py``); returns a summary dict."""
    dist = Distributed()
    args._local_rank = dist.local_rank
    ctx = resolve_context(args)
    seed_everything(args.seed, 0, 0)  # same initial weights everywhere (rank 0's are broadcast anyway)
    os.makedirs(args.save_dir, exist_ok=True)
    log = MetricsLog(os.path.join(args.save_dir, "metrics.jsonl")) if dist.is_root else None

    train_data = build_train_data(args, dist)
    steps = len(train_data)
    if args.max_steps_per_epoch:
        steps = min(steps, args.max_steps_per_epoch)

    net = build_net(args, ctx)
    if args.no_wd:
        apply_no_wd(net)
    params = net.collect_params()
    dist.broadcast_parameters(params)
    net.hybridize(static_alloc=True, static_shape=True)

    base_lr = args.lr * dist.world  # --lr is per worker (linear scaling with the number of workers)
    scheduler = build_lr_scheduler(args.lr_mode, base_lr, args.num_epochs, steps, args.warmup_epochs,
                                   args.warmup_lr, args.lr_decay, args.lr_decay_epoch)
    trainer = dist.trainer(params, args.optimizer,
                           optimizer_params(args.optimizer, scheduler, args.momentum, args.wd, args.dtype))

    start_epoch = 0
    if args.resume:
        ckpt = latest_checkpoint(args.resume)
        if ckpt is None:
            if dist.is_root:
                print(f"--resume {args.resume}: no complete checkpoint there, starting from epoch 0")
        else:
            net.load_parameters(ckpt["params"], ctx=ctx)
            trainer.load_states(ckpt["states"])
            start_epoch = int(ckpt["epoch"])
            if dist.is_root:
                print(f"resumed from {ckpt['meta_path']} (epoch {start_epoch}, update {ckpt['num_update']})")
                log.write("resume", epoch=start_epoch, checkpoint=ckpt["meta_path"])
    saver = CheckpointManager(args.save_dir, keep=args.keep_checkpoints) if dist.is_root else None

    mixer = MixupLabelSmoothing(args.num_classes, args.mixup_alpha if args.mixup else 0.0, args.label_smoothing,
                                args.mixup_off_epoch, args.num_epochs)
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss(sparse_label=False)
    if dist.is_root:
        print(f"{args.model}: {dist.world} worker(s) x batch {args.batch_size}, {steps} steps/epoch, "
              f"lr {base_lr:g} ({args.lr_mode}), epochs {start_epoch}..{args.num_epochs}")

    summary = {"epochs": [], "world": dist.world, "steps_per_epoch": steps}
    for epoch in range(start_epoch, args.num_epochs):
        summary["epochs"].append(_train_epoch(epoch, net, trainer, train_data, steps, mixer, loss_fn, args, dist,
                                              ctx, log))
        stats = summary["epochs"][-1]
        last = epoch + 1 == args.num_epochs
        if args.rec_val and ((epoch + 1) % args.eval_frequency == 0 or last):
            stats["val_top1"], stats["val_top5"], stats["val_images"] = validate(net, args, dist, ctx)
        if dist.is_root:
            log.write("epoch", **stats)
            plot_curves(log.path, os.path.join(args.save_dir, "curves.png"))
            print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in stats.items()}))
            if (epoch + 1) % args.save_frequency == 0 or last:
                saver.save(epoch + 1, net, trainer, seed=args.seed, model=args.model, num_classes=args.num_classes,
                           num_update=int(trainer._optimizer.num_update), base_lr=base_lr, world=dist.world,
                           steps_per_epoch=steps)
    if args.param_digest:
        digest = {"rank": dist.rank, **param_digest(net)}
        with open(os.path.join(args.save_dir, f"param-digest-rank{dist.rank}.json"), "w") as f:
            json.dump(digest, f)
    summary["param_digest"] = param_digest(net)
    return summary


def _train_epoch(epoch, net, trainer, data, steps, mixer, loss_fn, args, dist, ctx, log):
    seed = seed_everything(args.seed, epoch, dist.rank)
    mixer.rng = np.random.RandomState(seed)
    drop = dropblock_prob_at(epoch, args.num_epochs, args.dropblock_prob)
    if args.dropblock_prob > 0:
        set_drop_prob(net, drop)
    if hasattr(data, "set_epoch"):
        data.set_epoch(epoch)
    bar = None
    if dist.is_root:
        from tqdm import tqdm
        bar = tqdm(total=steps, desc=f"epoch {epoch + 1}/{args.num_epochs}", unit="step", dynamic_ncols=True)
    tic = time.time()
    loss_sum = correct = seen = 0.0
    for i, (x, y) in enumerate(data):
        if i >= steps:
            break
        x, y = x.as_in_context(ctx), y.as_in_context(ctx)
        x, targets = mixer(x, y, epoch)
        with autograd.record():
            out = net(x)
            loss = loss_fn(out.astype("float32"), targets.astype("float32"))
        loss.backward()
        trainer.step(args.batch_size)
        # one small allreduce per step: all ranks see the same mean loss, so all stop together on NaN
        step_loss, step_hits = dist.allreduce_sum(
            [float(loss.mean().asscalar()), float((out.argmax(axis=1) == targets.argmax(axis=1)).sum().asscalar())],
            name="step_stats")
        step_loss /= dist.world
        if not np.isfinite(step_loss):
            if bar:
                bar.close()
            raise TrainingDiverged(f"loss is {step_loss} at epoch {epoch + 1} step {i + 1} (of {steps}); "
                                   f"stopping, the last good checkpoint in {args.save_dir} is kept")
        loss_sum += step_loss
        correct += step_hits
        seen += x.shape[0] * dist.world
        lr = trainer.learning_rate
        if dist.is_root:
            speed = seen / max(time.time() - tic, 1e-9)
            bar.update(1)
            bar.set_postfix(loss=f"{step_loss:.4f}", lr=f"{lr:.4g}", img_s=f"{speed:.1f}")
            if (i + 1) % args.log_interval == 0 or i + 1 == steps:
                log.write("step", epoch=epoch + 1, step=i + 1, global_step=epoch * steps + i + 1, lr=lr,
                          loss=step_loss, img_per_sec=speed)
    if bar:
        bar.close()
    elapsed = time.time() - tic
    return {"epoch": epoch + 1, "loss": loss_sum / max(steps, 1), "train_acc": correct / max(seen, 1),
            "lr": trainer.learning_rate, "img_per_sec": seen / max(elapsed, 1e-9), "time_s": elapsed,
            "dropblock_prob": drop, "mixup": mixer.active(epoch)}
