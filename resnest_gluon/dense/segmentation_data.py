"""Segmentation training data: GluonCV's synchronised image-and-mask augmentation over records or a dataset folder.

The data are either segmentation records (``python -m recordio_tools pack-segmentation``) or a Pascal VOC / ADE20K
folder (:class:`~.segmentation_eval.SegmentationFolder`); both give ``load(i)`` = (RGB uint8 image, int64 class
indices with -1 where a pixel does not count). :class:`SegmentationTrainTransform` is GluonCV's
``SegmentationDataset._sync_transform`` (flip, random long side in ``[0.5, 2.0] x base_size``, pad, random crop,
Gaussian blur), with one difference: padding a mask adds pixels that do not count (GluonCV pads masks with 0, so
the black border it adds to small images is learnt as class 0, Pascal VOC's background).
"""
import os
import random

import numpy as np
from PIL import Image, ImageFilter

from ..config import IMAGENET_MEAN, IMAGENET_STD
from ..data.batches import ShardedBatches
from ..data.records import CorruptRecordError

__all__ = ["SegmentationTrainTransform", "SegmentationTrainLoader", "open_segmentation_data", "MASK_IGNORE",
           "class_pixel_counts", "balanced_class_weights"]

MASK_IGNORE = 255  # the uint8 value of pixels that do not count while a mask is resized and padded


def open_segmentation_data(path, idx_path=None, split="train", layout=None):
    """The labelled images at ``path``: segmentation records (a ``.rec``, its ``.idx`` beside it or ``idx_path``) or
    a Pascal VOC / ADE20K folder (its ``split``). Both have ``len``, ``load(i)``, ``labels(i)``, ``name(i)`` and
    ``class_names`` (None when the data do not name their classes)."""
    if os.path.isdir(path):
        from .segmentation_eval import SegmentationFolder

        return SegmentationFolder(path, split=split, layout=layout)
    from ..data.segmentation_records import SegmentationRecordDataset

    return SegmentationRecordDataset(path, idx_path)


class SegmentationTrainTransform:
    """GluonCV's training augmentation of an (image, labels) pair, as numpy in and out (no MXNet: it runs in
    DataLoader workers): ``(CHW float32 normalised image, (crop, crop) int32 labels, -1 where not counted)``.

    Random choices come from Python's ``random`` (the loader seeds it per sample): flip (``flip_p``), the long side
    drawn uniformly from ``[scale[0] * base_size, scale[1] * base_size]`` (GluonCV's "random scale"), pad to the crop
    (image with black, mask with pixels that do not count), a random ``crop_size`` square, and with ``blur_p`` a
    Gaussian blur of radius U(0, 1) (as GluonCV's, after PSPNet)."""

    def __init__(self, base_size=520, crop_size=480, scale=(0.5, 2.0), flip_p=0.5, blur_p=0.5, mean=IMAGENET_MEAN,
                 std=IMAGENET_STD):
        if crop_size < 8 or base_size < 8:
            raise ValueError(f"crop size and base size must be at least 8 px, got {crop_size} and {base_size}")
        if not 0 < scale[0] <= scale[1]:
            raise ValueError(f"scale must be (low, high) with 0 < low <= high, got {scale}")
        self.base_size, self.crop_size, self.scale = base_size, crop_size, tuple(scale)
        self.flip_p, self.blur_p = flip_p, blur_p
        self.mean = np.array(mean, np.float32).reshape(3, 1, 1)
        self.std = np.array(std, np.float32).reshape(3, 1, 1)

    def __call__(self, image, labels):
        img = Image.fromarray(image)
        if labels.max(initial=-1) >= MASK_IGNORE:
            raise ValueError(f"class {int(labels.max())} in a mask: training takes at most {MASK_IGNORE} classes")
        mask = Image.fromarray(np.where(labels < 0, MASK_IGNORE, labels).astype(np.uint8))
        if random.random() < self.flip_p:
            img, mask = img.transpose(Image.FLIP_LEFT_RIGHT), mask.transpose(Image.FLIP_LEFT_RIGHT)
        crop = self.crop_size
        long_size = random.randint(int(self.base_size * self.scale[0]), int(self.base_size * self.scale[1]))
        w, h = img.size
        if h > w:
            oh, ow = long_size, int(1.0 * w * long_size / h + 0.5)
        else:
            ow, oh = long_size, int(1.0 * h * long_size / w + 0.5)
        img, mask = img.resize((ow, oh), Image.BILINEAR), mask.resize((ow, oh), Image.NEAREST)
        if min(ow, oh) < crop:
            pw, ph = max(crop, ow), max(crop, oh)
            padded_img, padded_mask = Image.new("RGB", (pw, ph)), Image.new("L", (pw, ph), MASK_IGNORE)
            padded_img.paste(img, (0, 0))
            padded_mask.paste(mask, (0, 0))
            img, mask = padded_img, padded_mask
        w, h = img.size
        x1, y1 = random.randint(0, w - crop), random.randint(0, h - crop)
        img, mask = img.crop((x1, y1, x1 + crop, y1 + crop)), mask.crop((x1, y1, x1 + crop, y1 + crop))
        if random.random() < self.blur_p:
            img = img.filter(ImageFilter.GaussianBlur(radius=random.random()))
        x = (np.asarray(img, np.float32).transpose(2, 0, 1) / 255 - self.mean) / self.std
        out = np.asarray(mask, np.int32).copy()
        out[out == MASK_IGNORE] = -1
        return np.ascontiguousarray(x), out


class _SeededPairs:
    """Training items keyed by ``(index, sample seed)``: the transform's random choices are seeded per sample, so an
    epoch's batches depend neither on the worker processes nor on the steps before (resume). An unreadable item is
    replaced by the next readable one and reported with the batch (``bad``: its index, else -1)."""

    def __init__(self, data, transform):
        self.data, self.transform = data, transform

    def __len__(self):
        return len(self.data)

    def __getitem__(self, key):
        index, sample_seed = key
        bad = -1
        for step in range(len(self.data)):
            i = (index + step) % len(self.data)
            try:
                image, labels = self.data.load(i)
                break
            except (CorruptRecordError, OSError, ValueError):
                bad = i if bad < 0 else bad
        else:
            raise ValueError(f"{self.data.name(0)}: none of the {len(self.data)} images and masks can be read")
        random.seed(sample_seed)
        x, y = self.transform(image, labels)
        return x, y, bad

    def problem(self, index):
        """``(key, position, reason)`` of the unreadable item ``index`` (read again, in this process)."""
        try:
            self.data.load(index)
            reason = "reads now (a read error?)"
        except (CorruptRecordError, OSError, ValueError) as err:
            reason = str(err).split(": ", 1)[-1] if hasattr(self.data, "keys") else str(err)
        if hasattr(self.data, "keys"):  # records: the key and byte offset, as the other loaders name them
            key = self.data.keys[index]
            return key, int(self.data._record.idx[key]), reason
        return self.data.name(index), index, reason


def _batchify(items):
    x, y, bad = zip(*items)
    return np.stack(x), np.stack(y), np.array(bad, np.int64)


class SegmentationTrainLoader(ShardedBatches):
    """Training batches ``(images (B, 3, crop, crop) float32, labels (B, crop, crop) int32)`` of this rank's shard
    (:class:`~resnest_gluon.data.sharding.ShardSampler`: the same number of full batches on every rank, a new order
    each epoch). ``set_epoch(E, skip=k)`` then iteration yields epoch E's batches from batch k on, the same as an
    uninterrupted epoch's; ``take_bad()`` gives the indices of unreadable items replaced since the last call."""

    def __init__(self, data, transform, batch_size=1, rank=0, world=1, seed=0, num_workers=0):
        self.dataset = _SeededPairs(data, transform)
        self.source_records = len(data)
        self._start(len(data), batch_size, rank, world, seed, _batchify, num_workers)
        if self.steps < 1:
            raise ValueError(f"{data.name(0)}: {len(data)} images give no full batch of {batch_size} to each of "
                             f"{world} process(es); lower --batch-size")


def class_pixel_counts(dataset, num_classes, limit=1000):
    """``(pixels of each class (num_classes,) int64, masks read, masks skipped)`` over up to ``limit`` masks spread
    evenly over ``dataset`` (its ``labels(i)``: the masks only). Unreadable masks are skipped and counted; a class
    index beyond ``num_classes`` is a ``ValueError`` naming the item."""
    count = len(dataset)
    picks = sorted({int(i) for i in np.linspace(0, count - 1, min(count, limit))}) if count else []
    pixels, skipped = np.zeros(num_classes, np.int64), 0
    for i in picks:
        try:
            labels = dataset.labels(i)
        except (CorruptRecordError, ValueError, OSError):
            skipped += 1
            continue
        counted = labels[labels >= 0]
        if counted.size and counted.max() >= num_classes:
            raise ValueError(f"{dataset.name(i)}: class {int(counted.max())} in the mask, but there are "
                             f"{num_classes} class names")
        pixels += np.bincount(counted, minlength=num_classes)
    return pixels, len(picks) - skipped, skipped


def balanced_class_weights(pixels, power=0.5, most=10.0):
    """Loss weight of each class: ``(pixels of the commonest class / its pixels) ** power``, at most ``most`` (1 for
    the commonest; classes without pixels get 1, nothing to weigh). ``power`` 0: every class 1 (unweighted); 0.5:
    inverse square root of the frequency, so rare classes (what mIoU counts as much as the background) pull harder
    early in a short run without drowning the common ones."""
    pixels = np.asarray(pixels, np.float64)
    weights = np.ones(len(pixels))
    present = pixels > 0
    if power and present.any():
        weights[present] = np.minimum((pixels.max() / pixels[present]) ** power, most)
    return weights
