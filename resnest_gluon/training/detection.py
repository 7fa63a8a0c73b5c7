"""Faster and Mask R-CNN FPN on a ResNeSt backbone as a task of the one trainer (:mod:`.trainer`), from detection
RecordIO.

GluonCV's parts do the detection work (``FasterRCNNDefaultTrainTransform`` and its RPN target generator, the
detector's own sampler and R-CNN target generator, its four losses as its ``train_faster_rcnn.py`` weighs them;
for ``mask_rcnn_fpn_*`` on records of ``pack-detection --masks`` also the model's ``MaskTargetGenerator`` and the
mask loss as its ``train_mask_rcnn.py`` computes it);
the trainer gives them its guarantees (equal steps per rank, seeding, atomic self-describing checkpoints, resume,
preemption, NaN stop, bad records, curves). Validation is mAP (:mod:`resnest_gluon.dense.detection_eval`), as
``scripts/eval_detection.py`` reports it.
"""
import dataclasses
import json
import os
from dataclasses import dataclass, field

import mxnet as mx
from mxnet import autograd, gluon

from ..config import DenseDataConfig
from ..data.preflight import preflight
from ..dense import dense_task, get_dense_model
from ..dense.detection_data import DetectionTrainLoader, check_class_ids, check_instance_masks, evaluation_dataset
from ..dense.detection_eval import evaluate_detection
from ..trained import info_of, load_class_names
from .classification import classes_file_beside
from .health import LearningWatch
from .optim import LINEAR_RULE, learning_rate
from .schedule import build_lr_scheduler
from .trainer import OptimizerSetup, StepResult, Task

__all__ = ["DetectionConfig", "DetectionTask", "LOSS_NAMES", "DETECTION_SCORES"]

LOSS_NAMES = ("rpn_cls", "rpn_box", "rcnn_cls", "rcnn_box")
MASK_LOSS_NAME = "rcnn_mask"  # Mask R-CNN's fifth
DETECTOR_KINDS = ("faster_rcnn_fpn_", "mask_rcnn_fpn_")
# what a checkpoint only makes sense with (its weights, optimizer state, update count per epoch)
FIXED_ON_RESUME = ("model", "classes", "world", "batch_size", "steps_per_epoch", "model_args")


@dataclass
class DetectionConfig:
    """A detection run's own settings (the shared ones are :class:`~.trainer.RunConfig`'s). Defaults: GluonCV's
    COCO schedule for its FPN detectors (26 epochs, x0.1 at 17 and 23, 0.01 per 8 images scaled linearly with the
    total batch, 1000 warm-up updates from a third of it, SGD momentum 0.9, wd 1e-4, gradients clipped at 5),
    GluonCV's FPN training scales (short side 640-800, long side <= 1333)."""

    model: str = "faster_rcnn_fpn_resnest50"
    classes: str = None  # class-names file (default: PREFIX_classes.txt beside the training .rec)
    backbone_params: str = None  # a classification weights file of this project
    pretrained_base: bool = False  # the published ImageNet weights of the backbone
    model_args: dict = field(default_factory=dict)  # e.g. {"box_head": "2fc", "norm": "bn", "num_sample": 256}
    short: tuple = (640, 800)
    max_size: int = 1333
    val_short: int = None  # evaluation short side (default: the largest training one), saved with the model
    val_max_size: int = None
    flip_p: float = 0.5
    lr: float = 0.01
    lr_reference_batch: int = 8  # total images per update ``lr`` is given for
    lr_mode: str = "step"
    lr_decay: float = 0.1
    lr_decay_epoch: tuple = (17, 23)
    lr_warmup: int = 1000  # updates
    lr_warmup_factor: float = 1.0 / 3
    momentum: float = 0.9
    wd: float = 1e-4
    clip_gradient: float = 5.0


def _class_names(config, rec_train):
    path = config.classes or classes_file_beside(rec_train)
    if path is None:
        raise ValueError(f"--rec-train {rec_train}: no class names (no {os.path.splitext(rec_train)[0]}"
                         f"_classes.txt beside it, as recordio_tools pack-detection writes; pass --classes FILE)")
    return list(load_class_names(path))


def build_detector(config, class_names, batch_size, ctx):
    """The detector of ``config``: every parameter initialised (GluonCV's initializers; the backbone from
    ``backbone_params`` / ``pretrained_base``), its evaluation transform the validation size."""
    if dense_task(config.model) != "detection" or not config.model.startswith(DETECTOR_KINDS):
        raise ValueError(f"--model {config.model}: train_detection trains faster_rcnn_fpn_<backbone> and "
                         f"mask_rcnn_fpn_<backbone> models")
    base = config.backbone_params or config.pretrained_base
    net = get_dense_model(config.model, class_names, pretrained_base=base, ctx=ctx, short=config.short,
                          max_size=config.max_size, per_device_batch_size=batch_size, **config.model_args)
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


def is_mask_model(model):
    """True for Mask R-CNN (``mask_rcnn_fpn_<backbone>``): it trains on masked records and has a mask loss."""
    return model.startswith("mask_rcnn_fpn_")


class _Losses:
    """GluonCV's Faster R-CNN losses, weighted as its training script does (per sampled anchor / RoI); with
    ``masks`` also Mask R-CNN's: sigmoid binary cross-entropy between each positive sampled RoI's mask of its
    ground-truth class and that object's mask pooled into the RoI (``net.mask_target``: RoIAlign of the full-image
    mask to the mask head's size, 28x28), per mask pixel of the positives, as GluonCV's ``train_mask_rcnn.py``
    (``mask_rcnn/data_parallel.py``)."""

    def __init__(self, masks=False):
        self.masks = masks
        self.rpn_cls = gluon.loss.SigmoidBinaryCrossEntropyLoss(from_sigmoid=False)
        self.rpn_box = gluon.loss.HuberLoss(rho=1 / 9.0)  # smooth L1
        self.rcnn_cls = gluon.loss.SoftmaxCrossEntropyLoss()
        self.rcnn_box = gluon.loss.HuberLoss()
        self.rcnn_mask = gluon.loss.SigmoidBinaryCrossEntropyLoss(from_sigmoid=False)

    def __call__(self, net, data, label, *targets):
        """``(total, [rpn_cls, rpn_box, rcnn_cls, rcnn_box(, rcnn_mask)], rcnn accuracy counts)`` of one batch (call
        inside ``autograd.record()``); ``targets``: the loader's fields after ``label``."""
        gt_label, gt_box = label[:, :, 4:5], label[:, :, :4]
        if self.masks:
            gt_masks, rpn_cls_targets, rpn_box_targets, rpn_box_masks = targets
            cls_pred, box_pred, mask_pred, rois, _, matches, rpn_score, rpn_box, _, cls_targets, box_targets, \
                box_masks, indices = net(data, gt_box, gt_label)
        else:
            rpn_cls_targets, rpn_box_targets, rpn_box_masks = targets
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
        if self.masks:
            parts.append(self._mask_loss(net, mask_pred, rois, matches, cls_targets, indices, gt_masks).sum())
        valid = cls_targets >= 0
        hits = ((cls_pred.argmax(axis=-1) == cls_targets) * valid).sum()
        return sum(parts[1:], parts[0]), parts, (hits, valid.sum())

    def _mask_loss(self, net, mask_pred, rois, matches, cls_targets, indices, gt_masks):
        """GluonCV's: the positive samples (``indices``) of each image, their targets from ``net.mask_target``,
        the loss over the mask pixels of each one's class (``mask_masks``), normalised by their number."""
        F, n = mx.nd, indices.shape[0]

        def positives(x):
            return F.concat(*[F.take(x[i], indices[i]) for i in range(n)], dim=0).reshape((n, -1, *x.shape[2:]))

        mask_targets, mask_masks = net.mask_target(positives(rois), gt_masks, positives(matches),
                                                   positives(cls_targets))
        # at least one pixel: GluonCV divides by the count as it is (its sampler always has the ground truth boxes)
        return self.rcnn_mask(mask_pred, mask_targets, mask_masks) * mask_targets.size / F.maximum(
            mask_masks.sum(), 1)


# the curves' third panel: (epoch field, label)
DETECTION_SCORES = (("rcnn_acc", "train R-CNN accuracy"), ("val_voc07_map", "val VOC07 mAP"),
                    ("val_coco_map", "val COCO mAP"))
# the not-learning watch's likely causes, in this task's flags
_CAUSES = ("the learning rate for this batch size (try a smaller --lr)",
           "boxes or classes that do not match the images (python -m recordio_tools check PREFIX lists them)")


class DetectionTask(Task):
    """Faster R-CNN FPN training, or Mask R-CNN FPN's (``mask_rcnn_fpn_*``: masked records, a fifth loss);
    ``config`` is a :class:`DetectionConfig`."""

    scores = DETECTION_SCORES
    fixed_on_resume = FIXED_ON_RESUME

    def __init__(self, config):
        config = dataclasses.replace(config)
        config.short = tuple(config.short) if isinstance(config.short, (tuple, list)) else (config.short,) * 2
        config.val_short = config.val_short or max(config.short)
        config.val_max_size = config.val_max_size or config.max_size
        self.config = config
        self.masks = is_mask_model(config.model)
        self.loss_names = LOSS_NAMES + ((MASK_LOSS_NAME,) if self.masks else ())

    def prepare(self, run, dist, ctx):
        self.class_names = _class_names(self.config, run.rec_train)
        for flag, rec, idx in (("--rec-train", run.rec_train, run.rec_train_idx),
                               ("--rec-val", run.rec_val, run.rec_val_idx)):
            if rec:  # framing, .idx, header damage and class ids outside the names stop every rank here, by name
                preflight(rec, idx, None)
                check_class_ids(rec, idx, self.class_names, flag)
        if self.masks:  # records packed without --masks: stop here, naming the file and the flag
            check_instance_masks(run.rec_train, run.rec_train_idx, "--rec-train", self.config.model)

    def build_model(self, run, dist, ctx):
        net = build_detector(self.config, self.class_names, run.batch_size, ctx)
        if self.config.backbone_params and dist.is_root:
            print(f"backbone from {self.config.backbone_params} (its classifier left out)")
        self.info = info_of(net).to_dict()
        self.net = net  # its anchors and target generator make the training targets in the data pipeline
        return net

    def build_data(self, run, dist):
        c = self.config
        self.losses = _Losses(self.masks)
        self.data = DetectionTrainLoader(run.rec_train, self.net, run.rec_train_idx, run.batch_size, c.short,
                                         c.max_size, dist.rank, dist.world, run.seed, run.num_workers, c.flip_p,
                                         masks=self.masks)
        return self.data

    def describe(self, run, dist, steps):
        c = self.config
        empty = f"; {self.data.num_empty} record(s) without objects left out" if self.data.num_empty else ""
        return [f"{c.model}: {len(self.class_names)} classes, short {c.short[0]}-{c.short[1]} max {c.max_size}{empty}"]

    def optimizer(self, net, run, dist, steps):
        c = self.config
        lr = learning_rate(c.lr, run.batch_size, dist.world, c.lr_reference_batch, None, LINEAR_RULE)
        self.warmup_epochs = min(c.lr_warmup / steps, run.num_epochs - 1e-9) if c.lr_warmup else 0
        scheduler = build_lr_scheduler(c.lr_mode, lr.effective, run.num_epochs, steps, self.warmup_epochs,
                                       lr.effective * c.lr_warmup_factor, c.lr_decay, c.lr_decay_epoch)
        settings = {"learning_rate": lr.effective, "lr_scheduler": scheduler, "momentum": c.momentum, "wd": c.wd}
        if c.clip_gradient:
            settings["clip_gradient"] = c.clip_gradient
        # all but BatchNorm's running statistics
        return OptimizerSetup(net.collect_train_params(), "sgd", settings, lr, {"momentum": c.momentum, "wd": c.wd})

    def run_settings(self, run, world, steps):
        out = {k: v for k, v in dataclasses.asdict(self.config).items()}
        out.update(classes=self.class_names, batch_size=run.batch_size, num_epochs=run.num_epochs, seed=run.seed)
        return json.loads(json.dumps(out))

    def model_info(self, net):
        return self.info

    def saved_weights(self, net):
        return _DetectorWeights(net)

    def hybridize(self, net):
        net.hybridize(static_alloc=True)  # images differ in size: no static shapes

    def learning_watch(self, run, lr):
        return LearningWatch(None, self.warmup_epochs, run.num_epochs, lr.effective, causes=_CAUSES,
                             score="VOC07 mAP")

    def train_step(self, net, batch, ctx, epoch):
        batch = [b.as_in_context(ctx) for b in batch]
        with autograd.record():
            total, parts, (hits, rois) = self.losses(net, *batch)
        total.backward()
        return StepResult(total, batch[0].shape[0], means=dict(zip(self.loss_names, parts)),
                          counts={"hits": hits, "rois": rois})

    def summarize(self, sums, steps):
        return {"rcnn_acc": sums.get("hits", 0.0) / max(sums.get("rois", 0.0), 1)}

    def validate(self, net, run, dist, ctx):
        """Validation mAP over all ranks (the same numbers on each), as ``scripts/eval_detection.py`` reports it."""
        dataset = evaluation_dataset(run.rec_val, run.rec_val_idx, masks=self.masks)  # mask AP on masked records
        net.hybridize(static_alloc=True)  # a fresh graph for inference's one input (training's takes three)
        try:
            found = evaluate_detection(net, dataset, ctx=ctx, dist=dist, progress=dist.is_root)
        finally:
            net.hybridize(static_alloc=True)  # and for training again
        result = found.result.to_dict()
        scores = {f"val_{k}": result[k] for k in ("voc07_map", "voc_map", "coco_map", "coco_map50", "mask_map",
                                                  "mask_map50") if result.get(k) is not None}
        scores["val_images"] = result["images"]
        if found.skipped and dist.is_root:
            print(f"validation skipped {len(found.skipped)} damaged record(s): {found.skipped[0][1]}", flush=True)
        return scores

    def watch_values(self, stats):
        """VOC07 mAP (the demo's and ``eval_detection.py``'s headline) for the not-learning watch's zero check."""
        return stats.get("val_voc07_map"), stats.get("val_images")
