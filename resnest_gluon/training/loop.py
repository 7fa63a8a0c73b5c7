"""The training loop: builds model, data, optimizer from an argparse namespace, trains, evaluates, checkpoints.

Every rank runs the same number of steps per epoch (Horovod would hang otherwise); rank 0 alone writes files and
shows progress. Everything random in epoch E is seeded from (``--seed``, E, rank) alone: the data order and
augmentation (the input pipeline is re-seeded per epoch), mixup, DropBlock and dropout masks (MXNet's RNG is
re-seeded before every step from (epoch seed, step), so step k's masks do not depend on the steps before it). With
the optimizer state and schedule position restored from the checkpoint, a run killed and resumed ends with the same
weights as an uninterrupted one (bit-identical batches need ``--data-nthreads 1``; see
:mod:`resnest_gluon.data.train`). SIGTERM/SIGINT stop every rank at the next step boundary with a checkpoint of
that step (:mod:`.preemption`); resuming from it skips the epoch's first steps (their data, mixup draws and masks).
"""
import copy
import dataclasses
import hashlib
import json
import os
import random
import time

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon

from ..data import MixupLabelSmoothing, RecordTrainIter, RecordTrainLoader, ValRecordIter
from ..data.bad_records import BadRecordLimit, TooManyBadRecords
from ..data.preflight import preflight
from ..distributed import Distributed
from ..dropblock import set_drop_prob
from ..evaluation import evaluate
from ..trained import ModelInfo, load_class_names, read_info
from ..zoo import classes_in_params, get_config, get_model, load_weights
from .bad_input import BadRecordWatch, prepare_fast_path
from .checkpoint import CheckpointManager, latest_checkpoint
from .health import LearningWatch, NotLearning
from .metrics_log import MetricsLog, plot_curves
from .optim import (LINEAR_RULE, PER_WORKER_RULE, REFERENCE_BATCH, apply_classifier_lr_mult, apply_no_wd,
                    dropblock_prob_at, learning_rate, optimizer_params)
from .preemption import Preempted, StopSignals
from .recipes import get_recipe
from .schedule import build_lr_scheduler

__all__ = ["train", "restore_checkpoint", "checkpoint_and_stop", "TrainingDiverged", "TooManyBadRecords", "NotLearning", "CheckpointNotSaved", "ResumeMismatch",
           "Preempted", "param_digest", "resolve_model_defaults", "eval_data_config", "resolve_classes", "model_info", "check_resume", "FIXED_ON_RESUME"]

# Settings a checkpoint only makes sense with: its weights (model, classes), its optimizer state (optimizer), and
# its update count, which the schedule turns into epochs through world x batch size x steps per epoch. The other
# hyperparameters (lr, schedule, epochs, momentum, wd, seed) are taken from the resuming command.
FIXED_ON_RESUME = ("model", "num_classes", "world", "batch_size", "steps_per_epoch", "optimizer")
# Recorded in each checkpoint's JSON (what produced it).
RUN_SETTINGS = FIXED_ON_RESUME + ("num_epochs", "lr", "lr_mode", "lr_decay", "lr_decay_epoch", "warmup_epochs",
                                  "warmup_lr", "momentum", "wd", "no_wd", "seed", "input_size", "recipe",
                                  "classifier_lr_mult")


class CheckpointNotSaved(RuntimeError):
    """Rank 0 could not write a checkpoint or log (disk full, ...); every rank stops, the last complete checkpoint
    stays the latest. Stopping beats training on: every later save would fail too, and days of training with no
    checkpoint are lost at the next preemption; after freeing space, ``--resume`` loses at most
    ``--save-frequency`` epochs."""


class TrainingDiverged(RuntimeError):
    """The loss or the weights became NaN/inf; the last good checkpoint is left untouched."""


class ResumeMismatch(ValueError):
    """``--resume`` found a checkpoint made with other run settings (world size, batch size, schedule, ...)."""


def resolve_model_defaults(args):
    """Fills the model-dependent defaults left as None: ``input_size`` (the model's official training size) and
    ``final_drop`` (the model's own, 0.2 for resnest200/269)."""
    cfg = get_config(args.model)
    if args.input_size is None:
        args.input_size = cfg.train_input_size
    if args.final_drop is None:
        args.final_drop = cfg.arch.get("final_drop", 0.0)
    return args


def eval_data_config(args):
    """The validation transform (call before :func:`resolve_model_defaults`): the model's data config (size,
    crop_pct, interpolation), with ``--input-size`` / ``--crop-ratio`` replacing size / crop_pct when given, exactly
    as ``scripts/verify.py --crop-size/--crop-ratio`` does, so both report the same accuracy for the same weights."""
    changes = {}
    if args.input_size is not None:
        changes["input_size"] = args.input_size
    if args.crop_ratio is not None:
        changes["crop_pct"] = args.crop_ratio
    return dataclasses.replace(get_config(args.model).data, **changes)


def classes_file_beside(rec_path):
    """``data/train.rec`` -> ``data/train_classes.txt`` (what ``recordio_tools make-list`` / ``pack`` write), if any."""
    path = os.path.splitext(rec_path)[0] + "_classes.txt"
    return path if os.path.isfile(path) else None


def resolve_classes(args):
    """``(class names or None, number of classes)``: names from ``--classes``, else the classes file beside
    ``--rec-train``; the count from ``--num-classes``, else the names, else 1000. An explicit ``--classes`` whose
    length differs from ``--num-classes`` is an error; a found file that differs is ignored with a warning."""
    path, found = getattr(args, "classes", None), False
    if path is None:
        path, found = classes_file_beside(args.rec_train), True
    names = load_class_names(path) if path else None
    if names is not None and args.num_classes is not None and len(names) != args.num_classes:
        if not found:
            raise ValueError(f"--classes {path} lists {len(names)} classes, --num-classes says {args.num_classes}")
        print(f"warning: {path} lists {len(names)} classes but --num-classes is {args.num_classes}: checkpoints "
              f"will carry no class names (pass --classes FILE)")
        names = None
    return names, args.num_classes or (len(names) if names else 1000)


def model_info(args):
    """What the checkpoints record so the weights can be used without repeating flags: the model, classes and
    their names, the evaluation data config validation used, and constructor arguments that differ from the
    registry's (call after :func:`resolve_model_defaults`)."""
    arch = {}
    if args.final_drop != get_config(args.model).arch.get("final_drop", 0.0):
        arch["final_drop"] = args.final_drop
    return ModelInfo(args.model, args.num_classes, args.eval_data, args.class_names, arch)


def run_learning_rate(args, world):
    """The run's :class:`~.optim.LearningRate`: ``--lr`` per ``--lr-reference-batch`` images per worker, scaled to
    ``--batch-size`` and the workers, or ``--effective-lr``. A run resumed from a checkpoint saved before this rule
    keeps that checkpoint's meaning (``--lr`` per worker, whatever the batch)."""
    rule = LINEAR_RULE
    if getattr(args, "resume", None):
        ckpt = latest_checkpoint(args.resume)
        if ckpt is not None and "lr_rule" not in (ckpt.get("run") or {}):
            rule = PER_WORKER_RULE
    return learning_rate(args.lr, args.batch_size, world, getattr(args, "lr_reference_batch", REFERENCE_BATCH),
                         getattr(args, "effective_lr", None), rule)


def seed_everything(seed, epoch, rank):
    """One seed per (run seed, epoch, rank): ranks differ (mixup, DropBlock masks), epochs are reproducible."""
    s = (seed * 1_000_003 + epoch * 1_009 + rank) % 2 ** 31
    random.seed(s)
    np.random.seed(s)
    mx.random.seed(s)
    return s


def step_seed(epoch_seed, step):
    """MXNet's seed for ``step`` (0-based) of the epoch seeded with ``epoch_seed`` (set before every step)."""
    return (epoch_seed * 65_537 + step + 1) % 2 ** 31


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


def fresh_classifier_reason(args):
    """Why fine-tuning from ``--resume-params`` starts with a fresh classifier, or None when its rows are this
    dataset's classes: another class count, or other class names (as the file's information and this dataset's
    classes file say; at the same count, keeping rows that mean other classes only misleads the first steps)."""
    if not args.resume_params:
        return None
    if not os.path.isfile(args.resume_params):
        raise FileNotFoundError(f"--resume-params: no such file {args.resume_params}")
    file_classes = classes_in_params(args.resume_params) or args.num_classes
    if file_classes != args.num_classes:
        return f"its {file_classes} classes are not this dataset's {args.num_classes}"
    info = read_info(args.resume_params)
    names = info.class_names if info else None
    if names and args.class_names and tuple(names) != tuple(args.class_names):
        def show(n):
            return ", ".join(n[:3]) + (", ..." if len(n) > 3 else "")
        return f"its classes ({show(names)}) are not this dataset's ({show(args.class_names)})"
    return None


def build_net(args, ctx, fresh_classifier=None):
    """The model, fully initialised on ``ctx``: Xavier(gaussian, in, 2) like the official recipe, or loaded
    (``fresh_classifier``: :func:`fresh_classifier_reason`, the file's classifier is replaced)."""
    kwargs = dict(dropblock_prob=args.dropblock_prob, final_drop=args.final_drop, last_gamma=args.last_gamma)
    if args.resume_params:
        if not os.path.isfile(args.resume_params):
            raise FileNotFoundError(f"--resume-params: no such file {args.resume_params}")
        file_classes = classes_in_params(args.resume_params) or args.num_classes
        net = get_model(args.model, classes=file_classes, **kwargs)
        net.initialize(mx.init.Xavier(rnd_type="gaussian", factor_type="in", magnitude=2), ctx=ctx)
        _forward_once(net, args, ctx)
        try:  # every weight must fit: a file of another model is an error, not a silently partial load
            load_weights(net, args.resume_params, ctx=ctx)
        except ValueError as err:
            raise ValueError(f"--resume-params: {err}") from None
        if fresh_classifier or file_classes != args.num_classes:  # fine-tuning on another label set
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
    min_area = getattr(args, "min_random_area", 0.08)  # --min-random-area (namespaces built by hand may lack it)
    if args.auto_aug:
        return RecordTrainLoader(args.rec_train, args.rec_train_idx, input_size=args.input_size, autoaugment=True,
                                 min_random_area=min_area, **common)
    # the fast path reads a copy without undecodable records: rank 0 finds them (once per file) and writes it first
    prepare_fast_path(args.rec_train, args.rec_train_idx, args.data_nthreads, max_bad_fraction(args), dist)
    return RecordTrainIter(args.rec_train, args.rec_train_idx, data_shape=args.input_size, min_random_area=min_area,
                           skip_bad=True, scan_workers=args.data_nthreads, **common)


def max_bad_fraction(args):
    """``--max-bad-records-fraction`` (namespaces built by hand may lack it: the flag's default)."""
    return BadRecordLimit(getattr(args, "max_bad_records_fraction", 0.001), getattr(args, "max_bad_records", 10))


def _trainable(net):
    return [(name, p) for name, p in sorted(net._collect_params_with_prefix().items()) if p.grad_req != "null"]


def all_finite(net):
    """Whether every trainable weight is finite (checked before each checkpoint: only good weights are saved)."""
    return all(bool(mx.nd.contrib.isfinite(p.data()).min().asscalar()) for _, p in _trainable(net))


def average_running_stats(net, dist):
    """Averages the BatchNorm running mean/var over ranks (each rank saw only its shard), so the checkpoint and
    training-time validation use the same statistics on every rank, the ones ``scripts/verify.py`` then sees."""
    if dist.hvd is None:
        return
    for name, p in sorted(net._collect_params_with_prefix().items()):
        if name.endswith(("running_mean", "running_var", "moving_mean", "moving_var")):  # Gluon, symbol names
            dist.hvd.allreduce_(p.data(), op=dist.hvd.Average, name=f"bn_stats.{name}")
    # Wait here on every rank: a rank that went on and exited would shut Horovod down under the others' pending
    # allreduces (seen under load: rank 0's checkpoint write then failed with "Horovod has been shut down").
    mx.nd.waitall()


def param_digest(net):
    """SHA-256 and per-parameter sums of the trainable parameters (sorted by name), to compare ranks after
    synchronous training: the sums agree to float tolerance (the allreduce may round differently per rank in the
    last bit, so the hash can differ). BN running statistics are excluded: they are per-rank by design."""
    h = hashlib.sha256()
    total = 0.0
    sums = []
    for name, p in _trainable(net):
        arr = p.data().asnumpy().astype(np.float32)
        h.update(name.encode())
        h.update(arr.tobytes())
        total += float(np.abs(arr).sum())
        sums.append(float(arr.astype(np.float64).sum()))
    return {"sha256": h.hexdigest(), "abs_sum": total, "sums": sums}


def validate(net, args, dist, ctx):
    """Top-1/top-5 accuracy and image count over the whole validation set (all ranks together)."""
    val = ValRecordIter(args.rec_val, args.eval_data, idx_path=args.rec_val_idx,
                        batch_size=args.batch_size, num_workers=args.data_nthreads, rank=dist.rank,
                        world=dist.world, dtype=args.dtype)
    try:
        res = evaluate(net, val, ctx, args.num_classes, dist)
    finally:
        val.close()
    return res.top1_correct / max(res.images, 1), res.topk_correct / max(res.images, 1), res.images


def check_resume(ckpt, current):
    """Raises :class:`ResumeMismatch` naming every setting of ``FIXED_ON_RESUME`` that differs from the checkpoint's
    (no rescaling: a schedule position in updates means other epochs under another world or batch size)."""
    stored = ckpt.get("run") or {k: ckpt[k] for k in FIXED_ON_RESUME if k in ckpt}  # older checkpoints: top level
    names = {"world": "world size (processes)", "steps_per_epoch": "steps per epoch"}
    diffs = [f"{names.get(k, '--' + k.replace('_', '-'))} {stored[k]!r} in the checkpoint, {current[k]!r} now"
             for k in FIXED_ON_RESUME if k in stored and stored[k] != current[k]]
    if diffs:
        raise ResumeMismatch(f"--resume: {ckpt['meta_path']} does not fit this run: {'; '.join(diffs)}. Resume "
                             f"with the same model, classes, optimizer, batch size, data and number of processes, "
                             f"or start a new run from its weights with --resume-params {ckpt['params']}")


def restore_checkpoint(directory, net, trainer, scheduler, check, dist, log, ctx, **optimizer_settings):
    """``(start epoch, position inside the next epoch or None)`` after loading the latest complete checkpoint of
    ``directory`` (``check(ckpt)`` first refuses one of another run): weights, momenta and update count; the
    schedule and ``optimizer_settings`` (momentum, wd) are the resuming command's, from the restored update on.
    ``(0, None)`` when there is none."""
    ckpt = latest_checkpoint(directory)
    if ckpt is None:
        if dist.is_root:
            print(f"--resume {directory}: no complete checkpoint there, starting from epoch 0")
        return 0, None
    check(ckpt)
    net.load_parameters(ckpt["params"], ctx=ctx)
    trainer.load_states(ckpt["states"])
    trainer._optimizer.lr_scheduler = scheduler
    for name, value in optimizer_settings.items():
        setattr(trainer._optimizer, name, value)
    start_epoch = int(ckpt["epoch"])
    resume_at = {"step": int(ckpt["step"]), **ckpt["epoch_sums"]} if ckpt.get("step") else None
    if dist.is_root:
        print(f"resumed from {ckpt['meta_path']} (epoch {start_epoch}, step {ckpt.get('step', 0)}, update "
              f"{ckpt['num_update']})")
        log.write("resume", epoch=start_epoch, step=ckpt.get("step", 0), checkpoint=ckpt["meta_path"])
    return start_epoch, resume_at


def train(args):
    """Runs the whole recipe described by ``args`` (see ``scripts/train_imagenet.py``); returns a summary dict.
    A SIGTERM/SIGINT stops every rank at the next step boundary: rank 0 writes a checkpoint of that step, then
    :class:`~.preemption.Preempted` is raised; a second signal raises :class:`~.preemption.StopNow` at once."""
    with StopSignals() as stop:  # before the DataLoader forks its workers: they keep the handler (no death on SIGTERM)
        return _train(args, stop)


def _train(args, stop):
    args = copy.copy(args)  # the caller's namespace keeps its None defaults
    args.class_names, args.num_classes = resolve_classes(args)
    args.eval_data = eval_data_config(args)
    resolve_model_defaults(args)
    info = model_info(args)
    dist = Distributed()
    args._local_rank = dist.local_rank
    ctx = resolve_context(args)
    seed_everything(args.seed, 0, 0)  # same initial weights everywhere (rank 0's are broadcast anyway)
    os.makedirs(args.save_dir, exist_ok=True)
    log = MetricsLog(os.path.join(args.save_dir, "metrics.jsonl")) if dist.is_root else None

    for rec, idx in ((args.rec_train, args.rec_train_idx), (args.rec_val, args.rec_val_idx)):
        if rec:  # on every rank, before any trains: a cut .rec, a wrong .idx or a bad label stops all of them here
            preflight(rec, idx, args.num_classes)
    train_data = build_train_data(args, dist)
    bad_watch = BadRecordWatch(args.rec_train, train_data.source_records, max_bad_fraction(args), dist, log)
    bad_watch.report(getattr(train_data, "bad_records", []), 0, "left out (found by the scan before training)")
    steps = len(train_data)
    if args.max_steps_per_epoch:
        steps = min(steps, args.max_steps_per_epoch)

    fresh_classifier = fresh_classifier_reason(args)
    if fresh_classifier and dist.is_root:
        print(f"--resume-params {args.resume_params}: {fresh_classifier}: a fresh classifier")
    net = build_net(args, ctx, fresh_classifier)
    if args.no_wd:
        apply_no_wd(net)
    if getattr(args, "classifier_lr_mult", 1.0) != 1.0:
        apply_classifier_lr_mult(net, args.classifier_lr_mult)
    params = net.collect_params()
    dist.broadcast_parameters(params)
    net.hybridize(static_alloc=True, static_shape=True)

    lr = run_learning_rate(args, dist.world)
    base_lr = lr.effective
    scheduler = build_lr_scheduler(args.lr_mode, base_lr, args.num_epochs, steps, args.warmup_epochs,
                                   args.warmup_lr, args.lr_decay, args.lr_decay_epoch)
    trainer = dist.trainer(params, args.optimizer,
                           optimizer_params(args.optimizer, scheduler, args.momentum, args.wd, args.dtype))

    run = {k: getattr(args, k) for k in RUN_SETTINGS if hasattr(args, k)}
    run.update(world=dist.world, steps_per_epoch=steps, lr_rule=lr.rule, effective_lr=lr.effective)
    start_epoch, resume_at = 0, None
    if args.resume:
        start_epoch, resume_at = restore_checkpoint(args.resume, net, trainer, scheduler, lambda c: check_resume(c, run),
                                                    dist, log, ctx, momentum=args.momentum, wd=args.wd)
    saver = CheckpointManager(args.save_dir, keep=args.keep_checkpoints) if dist.is_root else None

    mixer = MixupLabelSmoothing(args.num_classes, args.mixup_alpha if args.mixup else 0.0, args.label_smoothing,
                                args.mixup_off_epoch, args.num_epochs)
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss(sparse_label=False)
    if dist.is_root:
        if getattr(args, "recipe", None):
            print(get_recipe(args.recipe).describe(getattr(args, "recipe_overrides", ())))
        print(lr.describe())
        print(f"{args.model}: {dist.world} worker(s) x batch {args.batch_size}, {steps} steps/epoch, "
              f"lr {base_lr:g} ({args.lr_mode}), epochs {start_epoch}..{args.num_epochs}")

    summary = {"epochs": [], "world": dist.world, "steps_per_epoch": steps}
    watch = LearningWatch(args.num_classes, args.warmup_epochs, args.num_epochs, base_lr)
    for epoch in range(start_epoch, args.num_epochs):
        try:
            summary["epochs"].append(_train_epoch(epoch, net, trainer, train_data, steps, mixer, loss_fn, args, dist,
                                                  ctx, log, stop, resume_at, bad_watch))
        except _StoppedAtStep as at:  # every rank, after the same step
            checkpoint_and_stop(at, steps, net, trainer, saver, args.save_dir, dist, log, run=run, base_lr=base_lr,
                                model=info.to_dict())
        resume_at = None
        stats = summary["epochs"][-1]
        last = epoch + 1 == args.num_epochs
        save = (epoch + 1) % args.save_frequency == 0 or last
        evaluate_now = args.rec_val and ((epoch + 1) % args.eval_frequency == 0 or last)
        if save or evaluate_now:
            average_running_stats(net, dist)
        if save and not all_finite(net):  # same weights on every rank: all ranks stop here together
            raise TrainingDiverged(f"weights became NaN/inf during epoch {epoch + 1} (its losses were finite); "
                                   f"not saving it, the last good checkpoint in {args.save_dir} is kept")
        if evaluate_now:
            stats["val_top1"], stats["val_top5"], stats["val_images"] = validate(net, args, dist, ctx)
        found = watch.update(epoch + 1, stats["loss"], stats.get("val_top1"), stats.get("val_images"))
        if found and dist.is_root:
            for finding in found:
                print(f"warning: {finding.message}", flush=True)
                log.write("warning", **finding.to_dict())
        write_error = None
        if dist.is_root:
            try:
                log.write("epoch", **stats)
                plot_curves(log.path, os.path.join(args.save_dir, "curves.png"))
                print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in stats.items()}))
                if save:
                    saver.save(epoch + 1, net, trainer, run=run, num_update=int(trainer._optimizer.num_update),
                               base_lr=base_lr, model=info.to_dict())
            except OSError as err:  # DiskFullError names the path and the space needed
                write_error = err
        if dist.allreduce_sum([write_error is not None], name="write_error")[0]:  # all ranks stop together
            raise CheckpointNotSaved(f"{write_error or 'rank 0 could not write its files'} (after epoch "
                                     f"{epoch + 1}); stopping, the last complete checkpoint in {args.save_dir} is kept")
        if found and getattr(args, "stop_if_not_learning", False):  # the same findings on every rank
            raise NotLearning(f"{found[0].message} (--stop-if-not-learning: stopped after epoch {epoch + 1}; "
                              f"checkpoints in {args.save_dir})")
    summary["warnings"] = [f.to_dict() for f in watch.findings]
    if dist.is_root and summary["epochs"]:
        last = summary["epochs"][-1]
        val = f", val top-1 {last['val_top1']:.2%}" if "val_top1" in last else ""
        kinds = ", ".join(f"{f.kind} (epoch {f.epoch})" for f in watch.findings) or "none"
        print(f"done: {len(summary['epochs'])} epoch(s), last loss {last['loss']:.4g}{val}; not-learning warnings: "
              f"{kinds}", flush=True)
    if args.param_digest:
        digest = {"rank": dist.rank, **param_digest(net)}
        with open(os.path.join(args.save_dir, f"param-digest-rank{dist.rank}.json"), "w") as f:
            json.dump(digest, f)
        net.save_parameters(os.path.join(args.save_dir, f"final-rank{dist.rank}.params"))
    summary["param_digest"] = param_digest(net)
    return summary


class _StoppedAtStep(Exception):
    """All ranks agreed to stop (a signal) after ``step`` steps of ``epoch`` (0-based); ``sums`` are the epoch's
    loss/accuracy/image/time sums so far, stored in the checkpoint so the resumed epoch's summary covers it all."""

    def __init__(self, epoch, step, sums):
        super().__init__(f"stopped after step {step} of epoch {epoch + 1}")
        self.epoch, self.step, self.sums = epoch, step, sums


def checkpoint_and_stop(at, steps, net, trainer, saver, save_dir, dist, log, weights=None, **meta):
    """Every rank: BN statistics averaged (as before any checkpoint; averaging is linear, so the end state is the
    uninterrupted run's), rank 0 writes the checkpoint of the position (of ``weights``: default ``net``), then all
    raise :class:`Preempted`."""
    average_running_stats(net, dist)
    if not all_finite(net):
        raise TrainingDiverged(f"weights became NaN/inf in epoch {at.epoch + 1} (by step {at.step}); not saving "
                               f"them at the stop, the last good checkpoint in {save_dir} is kept")
    write_error, where = None, f"rank 0 wrote a checkpoint in {save_dir}"
    if dist.is_root:
        try:
            where = saver.save(at.epoch, weights or net, trainer, step=at.step, epoch_sums=at.sums,
                               num_update=int(trainer._optimizer.num_update), **meta)
            log.write("preempted", epoch=at.epoch + 1, step=at.step, checkpoint=where)
        except OSError as err:
            write_error = err
    if dist.allreduce_sum([write_error is not None], name="preempt_write_error")[0]:
        raise CheckpointNotSaved(f"{write_error or 'rank 0 could not write its files'} (stopping on a signal in "
                                 f"epoch {at.epoch + 1}); the last complete checkpoint in {save_dir} is kept")
    raise Preempted(f"stopped on a signal after step {at.step} of {steps} in epoch {at.epoch + 1}: {where}; "
                    f"continue with --resume {save_dir}")


def epoch_bar(dist, epoch, num_epochs, steps, first=0):
    """Rank 0's progress bar of one epoch (None on the other ranks)."""
    if not dist.is_root:
        return None
    from tqdm import tqdm

    return tqdm(total=steps, initial=first, desc=f"epoch {epoch + 1}/{num_epochs}", unit="step", dynamic_ncols=True)


def _train_epoch(epoch, net, trainer, data, steps, mixer, loss_fn, args, dist, ctx, log, stop=None, start=None,
                 bad_watch=None):
    """Trains one epoch on every rank and returns its summary. ``start`` (from a checkpoint written inside this
    epoch) skips the steps before ``start["step"]``, replaying their mixup draws, and restores the epoch's sums, so
    the summary covers the whole epoch (its time and speed: the steps run, in both processes). After the step at
    which ``stop`` was requested on any rank, raises :class:`_StoppedAtStep` on all."""
    seed = seed_everything(args.seed, epoch, dist.rank)
    mixer.rng = np.random.RandomState(seed)
    first = start["step"] if start else 0
    mixer.skip(first, epoch)
    drop = dropblock_prob_at(epoch, args.num_epochs, args.dropblock_prob)
    if args.dropblock_prob > 0:
        set_drop_prob(net, drop)
    data.set_epoch(epoch, skip=first)
    bar = epoch_bar(dist, epoch, args.num_epochs, steps, first)
    tic = time.time() - (start["time_s"] if start else 0.0)
    loss_sum, correct, seen = (start["loss_sum"], start["correct"], start["images"]) if start else (0.0, 0.0, 0.0)
    for i, (x, y) in enumerate(data, start=first):
        if i >= steps:
            break
        mx.random.seed(step_seed(seed, i), ctx=ctx)
        x, y = x.as_in_context(ctx), y.as_in_context(ctx)
        x, targets = mixer(x, y, epoch)
        with autograd.record():
            out = net(x)
            loss = loss_fn(out.astype("float32"), targets.astype("float32"))
        loss.backward()
        trainer.step(args.batch_size)
        # one small allreduce per step: all ranks see the same mean loss, stop request and count of bad records
        # met, so all stop (or gather the bad records' names) together
        bad = data.take_bad()
        step_loss, step_hits, stop_votes, bad_met = dist.allreduce_sum(
            [float(loss.mean().asscalar()), float((out.argmax(axis=1) == targets.argmax(axis=1)).sum().asscalar()),
             float(stop is not None and stop.poll()), float(len(bad))], name="step_stats")
        if bad_met and bad_watch is not None:
            try:
                bad_watch.gather(data.dataset, bad, epoch + 1)
            except TooManyBadRecords:
                if bar:
                    bar.close()
                raise
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
        if stop_votes:
            if bar:
                bar.close()
            raise _StoppedAtStep(epoch, i + 1, {"loss_sum": loss_sum, "correct": correct, "images": seen,
                                                "time_s": time.time() - tic})
    if bar:
        bar.close()
    elapsed = time.time() - tic
    return {"epoch": epoch + 1, "loss": loss_sum / max(steps, 1), "train_acc": correct / max(seen, 1),
            "lr": trainer.learning_rate, "img_per_sec": seen / max(elapsed, 1e-9), "time_s": elapsed,
            "dropblock_prob": drop, "mixup": mixer.active(epoch)}
