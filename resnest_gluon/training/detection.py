"""Training Faster R-CNN FPN on a ResNeSt backbone from detection RecordIO files, one process or many (Horovod).

GluonCV's parts do the detection work (``FasterRCNNDefaultTrainTransform`` and its RPN target generator, the
detector's own sampler and R-CNN target generator, its four losses as its ``train_faster_rcnn.py`` weighs them);
this module gives them the guarantees of :mod:`.loop`: the same number of steps on every rank, everything random
seeded from (seed, epoch, rank, sample), atomic checkpoints that carry the model, classes and evaluation transform
(:mod:`resnest_gluon.trained`), ``resume`` from the latest complete one (also one written inside an epoch on
SIGTERM/SIGINT), a stop on a NaN/inf loss or weights, ``metrics.jsonl`` and ``curves.png``, validation mAP
(:mod:`resnest_gluon.dense.detection_eval`) every ``eval_frequency`` epochs.
"""
import copy
import dataclasses
import json
import os
import time
from dataclasses import dataclass, field

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon

from ..data.bad_records import BadRecordLimit, TooManyBadRecords
from ..data.preflight import preflight
from ..distributed import Distributed
from ..trained import info_of, load_class_names
from .bad_input import BadRecordWatch
from .checkpoint import CheckpointManager
from .loop import (CheckpointNotSaved, ResumeMismatch, TrainingDiverged, _StoppedAtStep, all_finite,
                   average_running_stats, checkpoint_and_stop, classes_file_beside, epoch_bar, restore_checkpoint,
                   seed_everything, step_seed)
from .metrics_log import MetricsLog, plot_curves
from .optim import LINEAR_RULE, learning_rate
from .preemption import StopSignals
from .schedule import build_lr_scheduler

__all__ = ["DetectionTrainConfig", "train_detection", "LOSS_NAMES"]

LOSS_NAMES = ("rpn_cls", "rpn_box", "rcnn_cls", "rcnn_box")
# what a checkpoint only makes sense with (its weights, optimizer state, update count per epoch)
FIXED_ON_RESUME = ("model", "classes", "world", "batch_size", "steps_per_epoch", "model_args")


@dataclass
class DetectionTrainConfig:
    """A detection run. Defaults: GluonCV's COCO schedule for its FPN detectors (26 epochs, x0.1 at 17 and 23,
    0.01 per 8 images scaled linearly with the total batch, 1000 warm-up updates from a third of it, SGD momentum
    0.9, wd 1e-4, gradients clipped at 5), GluonCV's FPN training scales (short side 640-800, long side <= 1333)."""

    model: str  # faster_rcnn_fpn_<backbone>
    rec_train: str
    rec_val: str = None
    rec_train_idx: str = None
    rec_val_idx: str = None
    classes: str = None  # class-names file (default: PREFIX_classes.txt beside rec_train)
    backbone_params: str = None  # a classification weights file of this project
    pretrained_base: bool = False  # the published ImageNet weights of the backbone
    model_args: dict = field(default_factory=dict)  # e.g. {"box_head": "2fc", "norm": "bn", "num_sample": 256}
    short: tuple = (640, 800)
    max_size: int = 1333
    val_short: int = None  # evaluation short side (default: the largest training one), saved with the model
    val_max_size: int = None
    flip_p: float = 0.5
    batch_size: int = 1  # images per process
    num_epochs: int = 26
    lr: float = 0.01
    lr_reference_batch: int = 8  # total images per update --lr is given for
    lr_mode: str = "step"
    lr_decay: float = 0.1
    lr_decay_epoch: tuple = (17, 23)
    lr_warmup: int = 1000  # updates
    lr_warmup_factor: float = 1.0 / 3
    momentum: float = 0.9
    wd: float = 1e-4
    clip_gradient: float = 5.0
    seed: int = 0
    data_nthreads: int = 0
    max_steps_per_epoch: int = 0
    max_bad_records_fraction: float = 0.001
    log_interval: int = 20
    eval_frequency: int = 1
    save_frequency: int = 1
    save_dir: str = "params"
    keep_checkpoints: int = 3
    resume: str = None
    gpus: str = ""

    def run_settings(self, world, steps):
        out = {k: v for k, v in dataclasses.asdict(self).items() if not k.startswith(("rec_", "save_dir", "resume"))}
        out.update(world=world, steps_per_epoch=steps, classes=self._class_names)
        return json.loads(json.dumps(out))


def _class_names(config):
    path = config.classes or classes_file_beside(config.rec_train)
    if path is None:
        raise ValueError(f"--rec-train {config.rec_train}: no class names (no {os.path.splitext(config.rec_train)[0]}"
                         f"_classes.txt beside it, as recordio_tools pack-detection writes; pass --classes FILE)")
    return list(load_class_names(path))


def build_detector(config, ctx):
    """The detector of ``config``: every parameter initialised (GluonCV's initializers; the backbone from
    ``backbone_params`` / ``pretrained_base``), its evaluation transform the validation size."""
    from ..dense import DenseDataConfig, dense_task, get_dense_model

    if dense_task(config.model) != "detection" or not config.model.startswith("faster_rcnn_fpn_"):
        raise ValueError(f"--model {config.model}: train_detection trains faster_rcnn_fpn_<backbone> models")
    base = config.backbone_params or config.pretrained_base
    net = get_dense_model(config.model, config._class_names, pretrained_base=base, ctx=ctx,
                          short=config.short, max_size=config.max_size, per_device_batch_size=config.batch_size,
                          **config.model_args)
    net.build_kwargs.pop("per_device_batch_size")  # GluonCV's images per training step; inference runs one at a time
    net.data_config = DenseDataConfig(config.val_short, config.val_max_size)
    return net


class _DetectorWeights:
    """What a checkpoint saves of a detector: its parameters without the constants of the R-CNN target generator
    GluonCV adds at the first training step (box-encoder means and stds), so the file fits the model as
    ``get_model`` / ``load_trained`` build it (and a resumed run before its first step)."""

    def __init__(self, net):
        self.net = net

    def save_parameters(self, path):
        params = {k: p._reduce() for k, p in self.net._collect_params_with_prefix().items()
                  if not k.startswith("_target_generator.")}
        mx.nd.save(path, params)


class _Losses:
    """GluonCV's Faster R-CNN losses, weighted as its training script does (per sampled anchor / RoI)."""

    def __init__(self):
        self.rpn_cls = gluon.loss.SigmoidBinaryCrossEntropyLoss(from_sigmoid=False)
        self.rpn_box = gluon.loss.HuberLoss(rho=1 / 9.0)  # smooth L1
        self.rcnn_cls = gluon.loss.SoftmaxCrossEntropyLoss()
        self.rcnn_box = gluon.loss.HuberLoss()

    def __call__(self, net, data, label, rpn_cls_targets, rpn_box_targets, rpn_box_masks):
        """``(total, [rpn_cls, rpn_box, rcnn_cls, rcnn_box], rcnn accuracy counts)`` of one batch (call inside
        ``autograd.record()``)."""
        gt_label, gt_box = label[:, :, 4:5], label[:, :, :4]
        cls_pred, box_pred, _, _, _, rpn_score, rpn_box, _, cls_targets, box_targets, box_masks, _ = \
            net(data, gt_box, gt_label)
        rpn_score = rpn_score.squeeze(axis=-1)
        num_rpn = (rpn_cls_targets >= 0).sum()
        rpn_cls = self.rpn_cls(rpn_score, rpn_cls_targets, rpn_cls_targets >= 0) * rpn_cls_targets.size / num_rpn
        rpn_box = self.rpn_box(rpn_box, rpn_box_targets, rpn_box_masks) * rpn_box.size / num_rpn
        num_rcnn = (cls_targets >= 0).sum()
        rcnn_cls = self.rcnn_cls(cls_pred, cls_targets, cls_targets.expand_dims(-1) >= 0) * cls_targets.size / num_rcnn
        rcnn_box = self.rcnn_box(box_pred, box_targets, box_masks) * box_pred.size / num_rcnn
        parts = [rpn_cls.sum(), rpn_box.sum(), rcnn_cls.sum(), rcnn_box.sum()]
        valid = cls_targets >= 0
        hits = ((cls_pred.argmax(axis=-1) == cls_targets) * valid).sum()
        return parts[0] + parts[1] + parts[2] + parts[3], parts, (hits, valid.sum())


def _context(config, dist):
    if not config.gpus:
        return mx.cpu()
    gpus = [int(g) for g in str(config.gpus).split(",") if g.strip()]
    if mx.context.num_gpus() == 0:
        raise ValueError(f"--gpus {config.gpus} given but MXNet sees no GPU (leave --gpus out to train on CPU)")
    return mx.gpu(gpus[dist.local_rank % len(gpus)])


def _check_resume(ckpt, run):
    stored = ckpt.get("run") or {}
    diffs = [f"{k}: checkpoint {stored[k]!r}, now {run[k]!r}" for k in FIXED_ON_RESUME
             if k in stored and stored[k] != run[k]]
    if diffs:
        raise ResumeMismatch(f"--resume: {ckpt['meta_path']} does not fit this run: {'; '.join(diffs)}. Resume with "
                             f"the same model, classes, batch size, data and number of processes")


def train_detection(config):
    """Runs ``config`` (a :class:`DetectionTrainConfig`); returns a summary dict. A SIGTERM/SIGINT stops every rank
    at the next step boundary with a checkpoint of that step (:class:`~.preemption.Preempted`)."""
    with StopSignals() as stop:
        return _train(config, stop)


def _train(config, stop):
    from ..dense.detection_data import DetectionTrainLoader, check_class_ids

    config = copy.copy(config)
    config._class_names = _class_names(config)
    config.short = tuple(config.short) if isinstance(config.short, (tuple, list)) else (config.short, config.short)
    config.val_short = config.val_short or max(config.short)
    config.val_max_size = config.val_max_size or config.max_size
    dist = Distributed()
    ctx = _context(config, dist)
    seed_everything(config.seed, 0, 0)
    os.makedirs(config.save_dir, exist_ok=True)
    log = MetricsLog(os.path.join(config.save_dir, "metrics.jsonl")) if dist.is_root else None
    num_classes = len(config._class_names)
    for flag, rec, idx in (("--rec-train", config.rec_train, config.rec_train_idx),
                           ("--rec-val", config.rec_val, config.rec_val_idx)):
        if rec:  # framing, .idx, header damage and class ids outside the names stop every rank here, by name
            preflight(rec, idx, None)
            check_class_ids(rec, idx, config._class_names, flag)

    net = build_detector(config, ctx)
    if config.backbone_params and dist.is_root:
        print(f"backbone from {config.backbone_params} (its classifier left out)")
    data = DetectionTrainLoader(config.rec_train, net, config.rec_train_idx, config.batch_size, config.short,
                                config.max_size, dist.rank, dist.world, config.seed, config.data_nthreads,
                                config.flip_p)
    steps = min(data.steps, config.max_steps_per_epoch or data.steps)
    bad_watch = BadRecordWatch(config.rec_train, data.source_records, BadRecordLimit(config.max_bad_records_fraction), dist, log)

    params = net.collect_train_params()  # all but BatchNorm's running statistics
    dist.broadcast_parameters(net.collect_params())
    net.hybridize(static_alloc=True)
    lr = learning_rate(config.lr, config.batch_size, dist.world, config.lr_reference_batch, None, LINEAR_RULE)
    warmup_epochs = min(config.lr_warmup / steps, config.num_epochs - 1e-9) if config.lr_warmup else 0
    scheduler = build_lr_scheduler(config.lr_mode, lr.effective, config.num_epochs, steps, warmup_epochs,
                                   lr.effective * config.lr_warmup_factor, config.lr_decay, config.lr_decay_epoch)
    opt = {"learning_rate": lr.effective, "lr_scheduler": scheduler, "momentum": config.momentum, "wd": config.wd}
    if config.clip_gradient:
        opt["clip_gradient"] = config.clip_gradient
    trainer = dist.trainer(params, "sgd", opt)

    run = config.run_settings(dist.world, steps)
    start_epoch, resume_at = 0, None
    if config.resume:
        start_epoch, resume_at = restore_checkpoint(config.resume, net, trainer, scheduler,
                                                    lambda c: _check_resume(c, run), dist, log, ctx,
                                                    momentum=config.momentum, wd=config.wd)
    saver = CheckpointManager(config.save_dir, keep=config.keep_checkpoints) if dist.is_root else None
    model = info_of(net).to_dict()
    if dist.is_root:
        empty = f"; {data.num_empty} record(s) without objects left out" if data.num_empty else ""
        print(lr.describe())
        print(f"{config.model}: {num_classes} classes, {dist.world} worker(s) x batch {config.batch_size}, {steps} "
              f"steps/epoch, short {config.short[0]}-{config.short[1]} max {config.max_size}, epochs "
              f"{start_epoch}..{config.num_epochs}{empty}", flush=True)

    losses = _Losses()
    summary = {"epochs": [], "world": dist.world, "steps_per_epoch": steps}
    for epoch in range(start_epoch, config.num_epochs):
        try:
            stats = _train_epoch(epoch, net, trainer, data, steps, losses, config, dist, ctx, log, stop, resume_at,
                                 bad_watch)
        except _StoppedAtStep as at:
            checkpoint_and_stop(at, steps, net, trainer, saver, config.save_dir, dist, log, _DetectorWeights(net),
                                run=run, model=model)
        summary["epochs"].append(stats)
        resume_at = None
        last = epoch + 1 == config.num_epochs
        save = (epoch + 1) % config.save_frequency == 0 or last
        evaluate_now = config.rec_val and ((epoch + 1) % config.eval_frequency == 0 or last)
        if save or evaluate_now:
            average_running_stats(net, dist)
        if save and not all_finite(net):
            raise TrainingDiverged(f"weights became NaN/inf during epoch {epoch + 1} (its losses were finite); not "
                                   f"saving it, the last good checkpoint in {config.save_dir} is kept")
        if evaluate_now:
            stats.update(_validate(net, config, dist, ctx))
        write_error = None
        if dist.is_root:
            try:
                log.write("epoch", **stats)
                plot_curves(log.path, os.path.join(config.save_dir, "curves.png"), scores=DETECTION_SCORES)
                print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in stats.items()
                                  if k != "per_class"}), flush=True)
                if save:
                    saver.save(epoch + 1, _DetectorWeights(net), trainer, run=run, num_update=int(trainer._optimizer.num_update),
                               model=model)
            except OSError as err:
                write_error = err
        if dist.allreduce_sum([write_error is not None], name="write_error")[0]:
            raise CheckpointNotSaved(f"{write_error or 'rank 0 could not write its files'} (after epoch {epoch + 1}); "
                                     f"stopping, the last complete checkpoint in {config.save_dir} is kept")
    data.close()
    if dist.is_root and summary["epochs"]:
        last = summary["epochs"][-1]
        val = f", val VOC07 mAP {last['val_voc07_map']:.3f}" if "val_voc07_map" in last else ""
        print(f"done: {len(summary['epochs'])} epoch(s), last loss {last['loss']:.4g}{val}", flush=True)
    return summary


# the curves' third panel: (epoch field, label)
DETECTION_SCORES = (("rcnn_acc", "train R-CNN accuracy"), ("val_voc07_map", "val VOC07 mAP"),
                    ("val_coco_map", "val COCO mAP"))


def _validate(net, config, dist, ctx):
    """Validation mAP over all ranks (the same numbers on each), as ``scripts/eval_detection.py`` reports them."""
    from ..dense.detection_data import DetectionRecordDataset
    from ..dense.detection_eval import evaluate_detection

    dataset = DetectionRecordDataset(config.rec_val, config.rec_val_idx)
    net.hybridize(static_alloc=True)  # a fresh graph for inference's one input (training's takes three), as GluonCV
    try:
        found = evaluate_detection(net, dataset, ctx=ctx, dist=dist, progress=dist.is_root)
    finally:
        net.hybridize(static_alloc=True)  # and for training again
    result = found.result.to_dict()
    scores = {f"val_{k}": result[k] for k in ("voc07_map", "voc_map", "coco_map", "coco_map50")
              if result.get(k) is not None}
    if found.skipped and dist.is_root:
        print(f"validation skipped {len(found.skipped)} damaged record(s): {found.skipped[0][1]}", flush=True)
    return scores


def _train_epoch(epoch, net, trainer, data, steps, losses, config, dist, ctx, log, stop, start, bad_watch):
    seed = seed_everything(config.seed, epoch, dist.rank)
    first = start["step"] if start else 0
    data.set_epoch(epoch, skip=first)
    bar = epoch_bar(dist, epoch, config.num_epochs, steps, first)
    tic = time.time() - (start["time_s"] if start else 0.0)
    sums = dict(start) if start else {"loss_sum": 0.0, "images": 0.0, "hits": 0.0, "rois": 0.0,
                                      **{f"{n}_sum": 0.0 for n in LOSS_NAMES}}
    sums.pop("step", None)
    sums.pop("time_s", None)
    try:
        for i, batch in enumerate(data, start=first):
            if i >= steps:
                break
            mx.random.seed(step_seed(seed, i), ctx=ctx)
            batch = [b.as_in_context(ctx) for b in batch]
            with autograd.record():
                total, parts, (hits, rois) = losses(net, *batch)
            total.backward()
            trainer.step(batch[0].shape[0])
            bad = data.take_bad()
            values = dist.allreduce_sum([float(total.asscalar()), *[float(p.asscalar()) for p in parts],
                                         float(hits.asscalar()), float(rois.asscalar()),
                                         float(stop is not None and stop.poll()), float(len(bad))],
                                        name="step_stats")
            step_loss, part_losses = values[0] / dist.world, [v / dist.world for v in values[1:5]]
            step_hits, step_rois, stop_votes, bad_met = values[5:]
            if bad_met:
                bad_watch.gather(data.dataset, bad, epoch + 1)
            if not np.isfinite(step_loss):
                raise TrainingDiverged(f"loss is {step_loss} at epoch {epoch + 1} step {i + 1} (of {steps}); "
                                       f"stopping, the last good checkpoint in {config.save_dir} is kept")
            sums["loss_sum"] += step_loss
            for name, value in zip(LOSS_NAMES, part_losses):
                sums[f"{name}_sum"] += value
            sums["hits"] += step_hits
            sums["rois"] += step_rois
            sums["images"] += batch[0].shape[0] * dist.world
            if dist.is_root:
                speed = sums["images"] / max(time.time() - tic, 1e-9)
                bar.update(1)
                bar.set_postfix(loss=f"{step_loss:.3f}", lr=f"{trainer.learning_rate:.3g}", img_s=f"{speed:.2f}")
                if (i + 1) % config.log_interval == 0 or i + 1 == steps:
                    log.write("step", epoch=epoch + 1, step=i + 1, global_step=epoch * steps + i + 1,
                              lr=trainer.learning_rate, loss=step_loss, img_per_sec=speed,
                              **dict(zip(LOSS_NAMES, part_losses)))
            if stop_votes:
                raise _StoppedAtStep(epoch, i + 1, {**sums, "time_s": time.time() - tic})
    finally:
        if bar:
            bar.close()
    elapsed = time.time() - tic
    done = max(steps, 1)
    return {"epoch": epoch + 1, "loss": sums["loss_sum"] / done,
            **{name: sums[f"{name}_sum"] / done for name in LOSS_NAMES},
            "rcnn_acc": sums["hits"] / max(sums["rois"], 1), "lr": trainer.learning_rate,
            "img_per_sec": sums["images"] / max(elapsed, 1e-9), "time_s": elapsed}

