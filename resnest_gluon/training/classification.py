"""Classification as a task of the one trainer (:mod:`.trainer`): the official ResNeSt recipe on ImageNet-style
RecordIO data.

The task supplies the network (Xavier initialisation, or the published weights, or a weights file to fine-tune
from), the input pipeline (:mod:`resnest_gluon.data`: random-resized crops, AutoAugment, the fast path that leaves
out undecodable records), mixup with label smoothing, the DropBlock ramp, the learning-rate rule (``lr`` per
``lr_reference_batch`` images per worker, scaled linearly) and top-1/top-5 validation with the evaluation transform
``scripts/verify.py`` uses, so both report the same accuracy for the same weights.
"""
import dataclasses
import os
from dataclasses import dataclass, field

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon

from ..data.mixup import MixupLabelSmoothing
from ..data.preflight import preflight
from ..data.train import RecordTrainIter, RecordTrainLoader
from ..data.val import ValRecordIter
from ..dropblock import set_drop_prob
from ..evaluation import evaluate
from ..trained import ModelInfo, load_class_names, read_info
from ..weights import classes_in_params, load_weights
from ..zoo import get_config, get_model
from .bad_input import prepare_fast_path
from .health import LearningWatch
from .checkpoint import latest_checkpoint
from .optim import (LINEAR_RULE, PER_WORKER_RULE, REFERENCE_BATCH, apply_classifier_lr_mult, apply_no_wd,
                    dropblock_prob_at, learning_rate, optimizer_params)
from .recipes import get_recipe
from .schedule import build_lr_scheduler
from .trainer import OptimizerSetup, StepResult, Task

__all__ = ["ClassificationConfig", "ClassificationTask", "classes_file_beside", "fresh_classifier_reason"]

# Settings a checkpoint only makes sense with: its weights (model, classes), its optimizer state (optimizer), and
# its update count, which the schedule turns into epochs through world x batch size x steps per epoch. The other
# hyperparameters (lr, schedule, epochs, momentum, wd, seed) are taken from the resuming command.
FIXED_ON_RESUME = ("model", "num_classes", "world", "batch_size", "steps_per_epoch", "optimizer")


@dataclass
class ClassificationConfig:
    """A classification run's own settings (the shared ones are :class:`~.trainer.RunConfig`'s). Defaults: the
    official ResNeSt-50 recipe; ``None`` means the model's own (training size, final dropout)."""

    model: str = "resnest50"
    pretrained: bool = False
    resume_params: str = None  # fine-tune from this weights file (classifier replaced when the classes differ)
    num_classes: int = None  # default: the number of class names, else 1000
    classes: str = None  # class-names file (default: PREFIX_classes.txt beside the training .rec)
    input_size: int = None
    crop_ratio: float = None  # evaluation centre-crop ratio (default: the model's crop_pct)
    final_drop: float = None
    dropblock_prob: float = 0.1
    last_gamma: bool = True
    dtype: str = "float32"
    auto_aug: bool = True
    min_random_area: float = 0.08
    mixup: bool = True
    mixup_alpha: float = 0.2
    mixup_off_epoch: int = 0
    label_smoothing: float = 0.1
    lr: float = 0.05
    lr_reference_batch: int = REFERENCE_BATCH
    effective_lr: float = None
    classifier_lr_mult: float = 1.0
    lr_mode: str = "cosine"
    lr_decay: float = 0.1
    lr_decay_epoch: tuple = (40, 60)
    warmup_epochs: int = 5
    warmup_lr: float = 0.0
    optimizer: str = "nag"
    momentum: float = 0.9
    wd: float = 1e-4
    no_wd: bool = True
    recipe: str = None
    recipe_overrides: tuple = field(default_factory=tuple)


def classes_file_beside(rec_path):
    """``data/train.rec`` -> ``data/train_classes.txt`` (what ``recordio_tools make-list`` / ``pack`` write), if any."""
    path = os.path.splitext(rec_path)[0] + "_classes.txt"
    return path if os.path.isfile(path) else None


def resolve_classes(config, rec_train):
    """``(class names or None, number of classes)``: names from ``classes``, else the classes file beside
    ``rec_train``; the count from ``num_classes``, else the names, else 1000. An explicit ``classes`` whose length
    differs from ``num_classes`` is an error; a found file that differs is ignored with a warning."""
    path, found = config.classes, False
    if path is None:
        path, found = classes_file_beside(rec_train), True
    names = load_class_names(path) if path else None
    if names is not None and config.num_classes is not None and len(names) != config.num_classes:
        if not found:
            raise ValueError(f"--classes {path} lists {len(names)} classes, --num-classes says {config.num_classes}")
        print(f"warning: {path} lists {len(names)} classes but --num-classes is {config.num_classes}: checkpoints "
              f"will carry no class names (pass --classes FILE)")
        names = None
    return names, config.num_classes or (len(names) if names else 1000)


def fresh_classifier_reason(resume_params, num_classes, class_names):
    """Why fine-tuning from ``resume_params`` starts with a fresh classifier, or None when its rows are this
    dataset's classes: another class count, or other class names (as the file's information and this dataset's
    classes file say; at the same count, keeping rows that mean other classes only misleads the first steps)."""
    if not resume_params:
        return None
    if not os.path.isfile(resume_params):
        raise FileNotFoundError(f"--resume-params: no such file {resume_params}")
    file_classes = classes_in_params(resume_params) or num_classes
    if file_classes != num_classes:
        return f"its {file_classes} classes are not this dataset's {num_classes}"
    info = read_info(resume_params)
    names = info.class_names if info else None
    if names and class_names and tuple(names) != tuple(class_names):
        def show(n):
            return ", ".join(n[:3]) + (", ..." if len(n) > 3 else "")
        return f"its classes ({show(names)}) are not this dataset's ({show(class_names)})"
    return None


class ClassificationTask(Task):
    """Classification with the official recipe; ``config`` is a :class:`ClassificationConfig`."""

    scores = (("train_acc", "train top-1"), ("val_top1", "val top-1"), ("val_top5", "val top-5"))
    fixed_on_resume = FIXED_ON_RESUME

    def __init__(self, config):
        self.config = dataclasses.replace(config)  # the caller's keeps its None defaults

    def resolve(self, rec_train):
        """Fills what the flags left to the data and the model: the classes (names beside ``rec_train``), the
        validation transform (the model's data config with ``input_size`` / ``crop_ratio`` applied as
        ``scripts/verify.py`` applies them), the training size and final dropout (the model's own), and the model
        information the checkpoints carry."""
        c = self.config
        self.class_names, self.num_classes = resolve_classes(c, rec_train)
        changes = {k: v for k, v in (("input_size", c.input_size), ("crop_pct", c.crop_ratio)) if v is not None}
        self.eval_data = dataclasses.replace(get_config(c.model).data, **changes)
        model_config = get_config(c.model)
        self.input_size = c.input_size or model_config.train_input_size
        self.final_drop = model_config.arch.get("final_drop", 0.0) if c.final_drop is None else c.final_drop
        arch = {"final_drop": self.final_drop} if self.final_drop != model_config.arch.get("final_drop", 0.0) else {}
        self.info = ModelInfo(c.model, self.num_classes, self.eval_data, self.class_names, arch)
        return self

    def prepare(self, run, dist, ctx):
        c = self.config
        if c.dtype == "float16" and not run.gpus:
            raise ValueError("--dtype float16 (multi-precision training) needs a GPU: pass --gpus, or use "
                             "--dtype float32 on CPU")
        self.resolve(run.rec_train)
        for rec, idx in ((run.rec_train, run.rec_train_idx), (run.rec_val, run.rec_val_idx)):
            if rec:
                preflight(rec, idx, self.num_classes)
        self.fresh_classifier = fresh_classifier_reason(c.resume_params, self.num_classes, self.class_names)
        if self.fresh_classifier and dist.is_root:
            print(f"--resume-params {c.resume_params}: {self.fresh_classifier}: a fresh classifier")

    def build(self, run, dist, ctx):
        """The data first: the input pipeline's worker processes fork before the network has run (a DataLoader
        forked after it broke Horovod's collectives under horovodrun)."""
        data = self.build_data(run, dist)
        return self.build_model(run, dist, ctx), data

    def build_model(self, run, dist, ctx):
        """Xavier(gaussian, in, 2) like the official recipe, or loaded from ``resume_params`` / the published
        weights; the classifier replaced when fine-tuning on another label set."""
        c = self.config
        kwargs = dict(dropblock_prob=c.dropblock_prob, final_drop=self.final_drop, last_gamma=c.last_gamma)
        init = mx.init.Xavier(rnd_type="gaussian", factor_type="in", magnitude=2)
        if c.resume_params:
            file_classes = classes_in_params(c.resume_params) or self.num_classes
            net = get_model(c.model, classes=file_classes, **kwargs)
            net.initialize(init, ctx=ctx)
            self._forward_once(net, ctx)
            try:  # every weight must fit: a file of another model is an error, not a silently partial load
                load_weights(net, c.resume_params, ctx=ctx)
            except ValueError as err:
                raise ValueError(f"--resume-params: {err}") from None
            if self.fresh_classifier or file_classes != self.num_classes:
                net.reset_classifier(self.num_classes, ctx=ctx)
        else:
            net = get_model(c.model, pretrained=c.pretrained, ctx=ctx, classes=self.num_classes, **kwargs)
            net.initialize(init, ctx=ctx)
        if c.dtype == "float16":
            net.cast("float16")
        self._forward_once(net, ctx)
        if c.no_wd:
            apply_no_wd(net)
        if c.classifier_lr_mult != 1.0:
            apply_classifier_lr_mult(net, c.classifier_lr_mult)
        return net

    def _forward_once(self, net, ctx):
        """Finishes deferred initialisation (shapes are known only after a forward) before broadcasting."""
        net(mx.nd.zeros((1, 3, self.input_size, self.input_size), ctx=ctx, dtype=self.config.dtype))

    def build_data(self, run, dist):
        c = self.config
        common = dict(batch_size=run.batch_size, num_workers=run.num_workers, rank=dist.rank, world=dist.world,
                      seed=run.seed, dtype=c.dtype)
        for flag, path in (("--rec-train", run.rec_train), ("--rec-train-idx", run.rec_train_idx)):
            if path and not os.path.isfile(path):
                raise FileNotFoundError(f"{flag}: no such file {path}")
        if c.auto_aug:
            data = RecordTrainLoader(run.rec_train, run.rec_train_idx, input_size=self.input_size, autoaugment=True,
                                     min_random_area=c.min_random_area, **common)
        else:
            # the fast path reads a copy without undecodable records: rank 0 finds them (once per file) first
            prepare_fast_path(run.rec_train, run.rec_train_idx, run.num_workers, run.bad_records, dist)
            data = RecordTrainIter(run.rec_train, run.rec_train_idx, data_shape=self.input_size,
                                   min_random_area=c.min_random_area, skip_bad=True, scan_workers=run.num_workers,
                                   **common)
        self.mixer = MixupLabelSmoothing(self.num_classes, c.mixup_alpha if c.mixup else 0.0, c.label_smoothing,
                                         c.mixup_off_epoch, run.num_epochs)
        self.loss = gluon.loss.SoftmaxCrossEntropyLoss(sparse_label=False)
        return data

    def describe(self, run, dist, steps):
        c = self.config
        return [get_recipe(c.recipe).describe(c.recipe_overrides)] if c.recipe else []

    def _learning_rate(self, run, world):
        """``lr`` per ``lr_reference_batch`` images per worker, scaled to the batch and the workers, or
        ``effective_lr``. A run resumed from a checkpoint saved before this rule keeps that checkpoint's meaning
        (``lr`` per worker, whatever the batch)."""
        c, rule = self.config, LINEAR_RULE
        if run.resume:
            ckpt = latest_checkpoint(run.resume)
            if ckpt is not None and "lr_rule" not in (ckpt.get("run") or {}):
                rule = PER_WORKER_RULE
        return learning_rate(c.lr, run.batch_size, world, c.lr_reference_batch, c.effective_lr, rule)

    def optimizer(self, net, run, dist, steps):
        c = self.config
        lr = self.lr = self._learning_rate(run, dist.world)
        scheduler = build_lr_scheduler(c.lr_mode, lr.effective, run.num_epochs, steps, c.warmup_epochs,
                                       c.warmup_lr, c.lr_decay, c.lr_decay_epoch)
        return OptimizerSetup(net.collect_params(), c.optimizer,
                              optimizer_params(c.optimizer, scheduler, c.momentum, c.wd, c.dtype), lr,
                              {"momentum": c.momentum, "wd": c.wd})

    def run_settings(self, run, world, steps):
        c = self.config
        return {"model": c.model, "num_classes": self.num_classes, "batch_size": run.batch_size,
                "optimizer": c.optimizer, "num_epochs": run.num_epochs, "lr": c.lr, "lr_mode": c.lr_mode,
                "lr_decay": c.lr_decay, "lr_decay_epoch": list(c.lr_decay_epoch), "warmup_epochs": c.warmup_epochs,
                "warmup_lr": c.warmup_lr, "momentum": c.momentum, "wd": c.wd, "no_wd": c.no_wd, "seed": run.seed,
                "input_size": self.input_size, "recipe": c.recipe, "classifier_lr_mult": c.classifier_lr_mult,
                "lr_rule": self.lr.rule, "effective_lr": self.lr.effective}

    def model_info(self, net):
        return self.info.to_dict()

    def learning_watch(self, run, lr):
        return LearningWatch(self.num_classes, self.config.warmup_epochs, run.num_epochs, lr.effective)

    def begin_epoch(self, net, epoch, seed, first_step, run):
        """Mixup draws from the epoch's seed (the skipped steps' draws replayed on a resume) and DropBlock's
        probability of this epoch."""
        c = self.config
        self.mixer.rng = np.random.RandomState(seed)
        self.mixer.skip(first_step, epoch)
        drop = dropblock_prob_at(epoch, run.num_epochs, c.dropblock_prob)
        if c.dropblock_prob > 0:
            set_drop_prob(net, drop)
        return {"dropblock_prob": drop, "mixup": self.mixer.active(epoch)}

    def train_step(self, net, batch, ctx, epoch):
        x, y = (b.as_in_context(ctx) for b in batch)
        x, targets = self.mixer(x, y, epoch)
        with autograd.record():
            out = net(x)
            loss = self.loss(out.astype("float32"), targets.astype("float32"))
        loss.backward()
        hits = (out.argmax(axis=1) == targets.argmax(axis=1)).sum()
        return StepResult(loss, x.shape[0], counts={"correct": hits})

    def summarize(self, sums, steps):
        return {"train_acc": sums.get("correct", 0.0) / max(sums["images"], 1)}

    def validate(self, net, run, dist, ctx):
        """Top-1/top-5 accuracy and image count over the whole validation set (all ranks together)."""
        val = ValRecordIter(run.rec_val, self.eval_data, idx_path=run.rec_val_idx, batch_size=run.batch_size,
                            num_workers=run.num_workers, rank=dist.rank, world=dist.world, dtype=self.config.dtype)
        try:
            res = evaluate(net, val, ctx, self.num_classes, dist)
        finally:
            val.close()
        images = max(res.images, 1)
        return {"val_top1": res.top1_correct / images, "val_top5": res.topk_correct / images,
                "val_images": res.images}

    def watch_values(self, stats):
        return stats.get("val_top1"), stats.get("val_images")
