"""Input pipelines for training and evaluating ResNeSt on RecordIO (.rec/.idx) ImageNet-style data.

Training: :class:`RecordTrainIter` (ImageRecordIter, fast, default) or :class:`RecordTrainLoader` (Gluon
DataLoader: AutoAugment, large sizes), both sharded with equal steps per rank; :class:`MixupLabelSmoothing` on
their batches. Evaluation: :func:`eval_transform` (the official verify protocol of a model's ``DataConfig``),
:class:`ValRecordIter`, :func:`preprocess_image`.
"""
from .autoaugment import IMAGENET_POLICY, ImageNetAutoAugment
from .mixup import MixupLabelSmoothing, smooth_targets
from .records import CorruptRecordError, RecordImageDataset, count_records
from .sharding import ShardSampler, steps_per_epoch
from .train import RecordTrainIter, RecordTrainLoader
from .transforms import EvalTransform, TrainTransform, eval_crop, eval_transform, load_image
from .val import ValRecordIter, preprocess_image

__all__ = ["RecordTrainIter", "RecordTrainLoader", "ShardSampler", "steps_per_epoch", "MixupLabelSmoothing",
           "smooth_targets", "ImageNetAutoAugment", "IMAGENET_POLICY", "TrainTransform", "EvalTransform",
           "eval_transform", "eval_crop", "load_image", "ValRecordIter", "preprocess_image", "RecordImageDataset",
           "count_records", "CorruptRecordError"]
