"""DeepLabV3 on a dilated ResNeSt as a task of the one trainer (:mod:`.trainer`), from segmentation records or a
Pascal VOC / ADE20K folder.

GluonCV's recipe for its ``deeplab_resnest*`` models is the default: its synchronised augmentation (base size 520,
crop 480, random scale 0.5-2.0, flip, blur; :class:`~resnest_gluon.dense.segmentation_data.SegmentationTrainTransform`),
its ASPP and auxiliary FCN heads (:class:`~resnest_gluon.dense.segmentation.DeepLabV3`, heads at 10x the backbone's
learning rate), poly learning rate (power 0.9), SGD momentum 0.9, wd 1e-4. Validation is pixel accuracy and mean IoU
counted as ``scripts/eval_segmentation.py`` counts them (:mod:`resnest_gluon.dense.segmentation_eval`), over all
ranks.

The loss (:class:`SegmentationLoss`) is the softmax cross-entropy GluonCV's ``MixSoftmaxCrossEntropyLoss`` reports,
with a gradient that is the loss's own: GluonCV's goes through ``SoftmaxOutput``, whose backward ignores the weight
the auxiliary loss is multiplied by (so its published ``aux_weight`` 0.5 trains as 1.0) and divides by the counted
pixels of each device's batch (so its learning rate means less per image as the per-device batch grows). Here each
image's loss is the mean over its counted pixels, the auxiliary head's weighted by ``aux_weight``, and ``lr`` is per
``lr_reference_batch`` images, scaled linearly with the total batch. GluonCV's ``--lr 0.01`` for 16 images at two per
GPU moves the weights as ``lr 0.005`` does here, the default (``docs/segmentation.md``).
"""
import dataclasses
import json
import os
from dataclasses import dataclass

import mxnet as mx
from mxnet import autograd

from ..config import DenseDataConfig
from ..data.preflight import preflight
from ..dense import dense_task, get_dense_model
from ..dense.inference import Segmenter
from ..dense.segmentation_data import (SegmentationTrainLoader, SegmentationTrainTransform, balanced_class_weights,
                                      class_pixel_counts, open_segmentation_data)
from ..dense.segmentation_eval import evaluate_segmentation
from ..trained import info_of, load_class_names
from .classification import classes_file_beside
from .health import LearningWatch
from .optim import LINEAR_RULE, learning_rate
from .schedule import build_lr_scheduler
from .trainer import OptimizerSetup, StepResult, Task

__all__ = ["SegmentationConfig", "SegmentationTask", "SegmentationLoss", "SEGMENTATION_SCORES"]

FIXED_ON_RESUME = ("model", "classes", "world", "batch_size", "steps_per_epoch", "crop_size", "output_stride",
                   "decoder")


@dataclass
class SegmentationConfig:
    """A segmentation run's own settings (the shared ones are :class:`~.trainer.RunConfig`'s); defaults: GluonCV's
    ADE20K recipe for ``deeplab_resnest*`` (see the module's note on ``lr``)."""

    model: str = None  # default: deeplab_<the model of backbone_params>, else deeplab_resnest50
    classes: str = None  # class-names file (default: PREFIX_classes.txt beside the records, a folder's classes.txt)
    backbone_params: str = None  # a classification weights file of this project
    pretrained_base: bool = False  # the published ImageNet weights of the backbone
    layout: str = None  # a dataset folder's layout (voc, ade20k; default: found)
    base_size: int = 520
    crop_size: int = 480
    scale: tuple = (0.5, 2.0)  # the training long side, in base sizes
    flip_p: float = 0.5
    blur_p: float = 0.5
    val_short: int = None  # evaluation transform, saved with the model (default: short = max = base_size)
    val_max_size: int = None
    output_stride: int = 8  # 16: stage 4 dilated only, about half the work (a CPU recipe's choice)
    decoder: bool = False  # DeepLabV3+'s decoder on stage 1 (stride 4)
    aux: bool = True
    aux_weight: float = 0.5
    head_dropout: bool = True  # GluonCV's heads' dropout (0.5 after ASPP, 0.1 before the classifier); training only
    class_weight_power: float = 0.0  # loss weights (commonest class's pixels / the class's) ** this; 0: unweighted
    lr: float = 0.005
    lr_reference_batch: int = 16
    lr_mode: str = "poly"
    lr_power: float = 0.9
    lr_decay: float = 0.1
    lr_decay_epoch: tuple = ()
    warmup_epochs: float = 0.0
    momentum: float = 0.9
    wd: float = 1e-4
    head_lr_mult: float = 10.0
    recipe: str = "gluoncv"


class SegmentationLoss:
    """Per image: the mean softmax cross-entropy over the pixels that count (label >= 0), plus ``aux_weight`` x the
    auxiliary head's. Its gradient is its own (unlike GluonCV's ``MixSoftmaxCrossEntropyLoss``: module note). With
    ``class_weights`` (one per class) the mean is weighted by each pixel's class."""

    def __init__(self, aux_weight=0.5, class_weights=None):
        self.aux_weight = aux_weight
        self.class_weights = None if class_weights is None else mx.nd.array(class_weights)

    def cross_entropy(self, logits, labels):
        """(B,) mean cross-entropy of ``logits`` (B, C, H, W) over each image's counted pixels of ``labels``."""
        counted = labels >= 0
        known = mx.nd.maximum(labels, 0)
        if self.class_weights is not None:
            counted = counted * mx.nd.take(self.class_weights.as_in_context(logits.context), known)
        picked = mx.nd.pick(mx.nd.log_softmax(logits, axis=1), known, axis=1)
        return -(picked * counted).sum(axis=(1, 2)) / mx.nd.maximum(counted.sum(axis=(1, 2)), 1e-12)

    def __call__(self, outputs, labels):
        """``(per-image loss (B,), main loss (B,), main logits)`` of the network's ``outputs`` (logits, or logits
        and auxiliary logits)."""
        main, aux = (outputs[0], outputs[1]) if isinstance(outputs, (list, tuple)) else (outputs, None)
        main_loss = self.cross_entropy(main, labels)
        if aux is None or not self.aux_weight:
            return main_loss, main_loss, main
        return main_loss + self.aux_weight * self.cross_entropy(aux, labels), main_loss, main


# the curves' third panel: (epoch field, label)
SEGMENTATION_SCORES = (("pixel_acc", "train pixel accuracy"), ("val_pixel_accuracy", "val pixel accuracy"),
                       ("val_mean_iou", "val mIoU"))
# the not-learning watch's likely causes, in this task's flags
_CAUSES = ("the learning rate for this batch size (try a smaller --lr)",
           "masks that do not match the images or the class names (python -m recordio_tools check PREFIX)")


def build_segmenter(config, class_names, ctx):
    """The segmenter of ``config``, every parameter initialised (the backbone from ``backbone_params`` /
    ``pretrained_base``), its evaluation transform the validation size."""
    if dense_task(config.model) != "segmentation":
        raise ValueError(f"--model {config.model}: train_segmentation trains deeplab_<backbone> models")
    base = config.backbone_params or config.pretrained_base
    net = get_dense_model(config.model, class_names, pretrained_base=base, ctx=ctx, aux=config.aux,
                          output_stride=config.output_stride, decoder=config.decoder)
    net.data_config = DenseDataConfig(config.val_short, config.val_max_size)
    heads = [net.head] + ([net.auxlayer] if net.auxlayer is not None else [])
    for head in heads:
        head.collect_params().setattr("lr_mult", config.head_lr_mult)
        if not config.head_dropout:
            _without_dropout(head)
    return net


def _without_dropout(block):
    """Turns off every Dropout layer under ``block`` (Gluon's Dropout is an identity at rate 0)."""
    for child in block._children.values():
        if isinstance(child, mx.gluon.nn.Dropout):
            child._rate = 0.0
        _without_dropout(child)


def model_of_backbone(path):
    """``deeplab_<model>`` of a backbone file's information (``deeplab_resnest50`` without a file)."""
    if not path:
        return "deeplab_resnest50"
    from ..trained import read_info

    info = read_info(path)
    if info is None:
        raise ValueError(f"--backbone-params {path} has no model information (.json beside it): pass --model "
                         f"deeplab_<its backbone>")
    return f"deeplab_{info.model}"


def _class_names(config, data, flag, path):
    source = config.classes or (classes_file_beside(path) if os.path.isfile(path) else None)
    if source:
        return list(load_class_names(source))
    if data.class_names:
        return list(data.class_names)
    raise ValueError(f"{flag} {path}: no class names (no {os.path.splitext(path)[0]}_classes.txt beside the records, "
                     f"as recordio_tools pack-segmentation writes, nor a classes.txt in the folder); pass --classes "
                     f"FILE, one name per line, line i for mask value i")


class SegmentationTask(Task):
    """DeepLabV3 training; ``config`` is a :class:`SegmentationConfig`."""

    scores = SEGMENTATION_SCORES
    fixed_on_resume = FIXED_ON_RESUME

    def __init__(self, config):
        config = dataclasses.replace(config)
        config.model = config.model or model_of_backbone(config.backbone_params)
        config.scale = tuple(config.scale)
        config.val_short = config.val_short or config.base_size
        config.val_max_size = config.val_max_size or max(config.base_size, config.val_short)
        self.config = config

    def prepare(self, run, dist, ctx):
        c = self.config
        self.train_data = open_segmentation_data(run.rec_train, run.rec_train_idx, "train", c.layout)
        self.class_names = _class_names(c, self.train_data, "--rec-train", run.rec_train)
        for rec, idx in ((run.rec_train, run.rec_train_idx), (run.rec_val, run.rec_val_idx)):
            if rec and os.path.isfile(rec):  # framing and .idx damage stop every rank here, by name
                preflight(rec, idx, None)

    def build_model(self, run, dist, ctx):
        net = build_segmenter(self.config, self.class_names, ctx)
        if self.config.backbone_params and dist.is_root:
            print(f"backbone from {self.config.backbone_params} (its classifier left out)")
        self.info = info_of(net).to_dict()
        return net

    def build_data(self, run, dist):
        c = self.config
        self.loss = SegmentationLoss(c.aux_weight if c.aux else 0.0, self._class_weights(dist))
        transform = SegmentationTrainTransform(c.base_size, c.crop_size, c.scale, c.flip_p, c.blur_p)
        return SegmentationTrainLoader(self.train_data, transform, run.batch_size, dist.rank, dist.world, run.seed,
                                       run.num_workers)

    def _class_weights(self, dist):
        """The loss's class weights from the training masks' pixel counts (``class_weight_power``), or None."""
        power = self.config.class_weight_power
        if not power:
            return None
        pixels, read, skipped = class_pixel_counts(self.train_data, len(self.class_names))
        weights = balanced_class_weights(pixels, power)
        self.class_weights = [round(float(w), 4) for w in weights]
        if dist.is_root:
            shown = ", ".join(f"{n} {w:.2f}" for n, w in zip(self.class_names, weights))
            print(f"class weights (pixel counts of {read} training masks{f', {skipped} unreadable' if skipped else ''}"
                  f", power {power:g}): {shown}")
        return weights

    def describe(self, run, dist, steps):
        c = self.config
        return [f"{c.model}: {len(self.class_names)} classes, {len(self.train_data)} training images, base size "
                f"{c.base_size}, crop {c.crop_size}, output stride {c.output_stride}"
                f"{', decoder' if c.decoder else ''}, scale {c.scale[0]:g}-{c.scale[1]:g}, aux weight "
                f"{c.aux_weight if c.aux else 0:g}; evaluation at short {c.val_short} max {c.val_max_size}"]

    def optimizer(self, net, run, dist, steps):
        c = self.config
        lr = learning_rate(c.lr, run.batch_size, dist.world, c.lr_reference_batch, None, LINEAR_RULE)
        self.warmup_epochs = min(c.warmup_epochs, run.num_epochs - 1e-9)
        scheduler = build_lr_scheduler(c.lr_mode, lr.effective, run.num_epochs, steps, self.warmup_epochs, 0.0,
                                       c.lr_decay, c.lr_decay_epoch, poly_power=c.lr_power)
        settings = {"learning_rate": lr.effective, "lr_scheduler": scheduler, "momentum": c.momentum, "wd": c.wd}
        return OptimizerSetup(net.collect_params(), "sgd", settings, lr, {"momentum": c.momentum, "wd": c.wd})

    def run_settings(self, run, world, steps):
        out = dataclasses.asdict(self.config)
        out.update(classes=self.class_names, batch_size=run.batch_size, num_epochs=run.num_epochs, seed=run.seed,
                   class_weights=getattr(self, "class_weights", None))
        return json.loads(json.dumps(out))

    def model_info(self, net):
        return self.info

    def learning_watch(self, run, lr):
        return LearningWatch(None, self.warmup_epochs, run.num_epochs, lr.effective, causes=_CAUSES)

    def train_step(self, net, batch, ctx, epoch):
        x, y = (mx.nd.array(b, ctx=ctx, dtype="float32") for b in batch)  # labels too: MXNet's arithmetic wants one type
        with autograd.record():
            total, main, logits = self.loss(net(x), y)
        total.backward()
        counted = y >= 0
        hits = ((logits.argmax(axis=1) == y) * counted).sum()
        return StepResult(total, x.shape[0], means={"main_loss": main.mean()},
                          counts={"pixel_hits": hits, "pixels": counted.sum()})

    def summarize(self, sums, steps):
        return {"pixel_acc": sums.get("pixel_hits", 0.0) / max(sums.get("pixels", 0.0), 1)}

    def validate(self, net, run, dist, ctx):
        """Pixel accuracy and mean IoU over all ranks (the same numbers on each), as ``scripts/eval_segmentation.py``
        counts them on the checkpoint."""
        data = open_segmentation_data(run.rec_val, run.rec_val_idx, "val", self.config.layout)
        net.hybridize(static_alloc=True)  # images of any size: a graph without fixed shapes
        try:
            found = evaluate_segmentation(Segmenter.of_network(net, ctx), data, dist=dist, progress=dist.is_root)
        finally:
            self.hybridize(net)
        if found["skipped"] and dist.is_root:
            print(f"validation skipped {len(found['skipped'])} unreadable item(s): {found['skipped'][0]['reason']}",
                  flush=True)
        return {f"val_{k}": found[k] for k in ("pixel_accuracy", "mean_iou", "mean_iou_all_classes")
                if found.get(k) is not None}
