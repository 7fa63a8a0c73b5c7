"""Input pipelines for training and evaluating ResNeSt on RecordIO (.rec/.idx) ImageNet-style data.

Training: :class:`RecordTrainIter` (ImageRecordIter, fast, default) or :class:`RecordTrainLoader` (Gluon
DataLoader: AutoAugment, large sizes), both sharded with equal steps per rank; :class:`MixupLabelSmoothing` on
their batches. Evaluation: :func:`eval_transform` (the official verify protocol of a model's ``DataConfig``),
:class:`ValRecordIter`, :func:`preprocess_image`. Segmentation records (an image and its class mask, written by
``recordio_tools pack-segmentation``): :class:`SegmentationRecordDataset`. Detection records with instance
masks (``recordio_tools pack-detection --masks``): :class:`MaskedDetectionRecordDataset`,
:func:`decode_instance_masks`. Names are imported on first use, so a packing tool that needs only :mod:`.records`
does not load the pipelines.
"""
from .._lazy import lazy_attributes

_EXPORTS = {
    "IMAGENET_POLICY": ".autoaugment", "ImageNetAutoAugment": ".autoaugment",
    "MixupLabelSmoothing": ".mixup", "smooth_targets": ".mixup",
    "MaskedDetectionRecordDataset": ".detection_masks", "decode_instance_masks": ".detection_masks",
    "encode_instance_masks": ".detection_masks",
    "CorruptRecordError": ".records", "RecordImageDataset": ".records", "count_records": ".records",
    "MASK_IGNORE": ".segmentation_records", "SegmentationRecordDataset": ".segmentation_records",
    "decode_segmentation_record": ".segmentation_records",
    "encode_segmentation_record": ".segmentation_records",
    "ShardSampler": ".sharding", "steps_per_epoch": ".sharding",
    "RecordTrainIter": ".train", "RecordTrainLoader": ".train",
    "EvalTransform": ".transforms", "TrainTransform": ".transforms", "eval_crop": ".transforms",
    "eval_transform": ".transforms", "load_image": ".transforms",
    "ValRecordIter": ".val", "preprocess_image": ".val",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_attributes(__name__, _EXPORTS)
