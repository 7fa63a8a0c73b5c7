"""Segmentation accuracy of a trained segmenter on a labelled dataset: pixel accuracy and mean IoU, per class too.

    data = SegmentationFolder("VOCdevkit/VOC2012", split="val")        # or ADEChallengeData2016, layout found
    result = evaluate_segmentation(Segmenter("seg.params"), data)      # {"pixel_accuracy", "mean_iou", ...}

The datasets are read in the layouts GluonCV's ``VOCSegmentation`` and ``ADE20KSegmentation`` read, with their label
conventions: Pascal VOC's masks hold the class index and 255 on object boundaries (not counted); ADE20K's hold the
class index + 1 and 0 where nothing is labelled (not counted). Each image is segmented whole, at the model's own
evaluation transform, and its logits resized back to the image's pixels (single scale, no flip).

The counts are GluonCV's ``SegmentationMetric``'s (``tests/test_segmentation_eval.py`` checks both on the same
arrays), with one difference: GluonCV averages the IoU over every class, so a class that is neither in the labels
nor predicted counts as an IoU of 0 and lowers the mean; here it has no IoU and is left out of the mean (as a class
without objects in detection). On a dataset where every class appears (ADE20K's and VOC's validation sets) the two
agree; ``mean_iou_all_classes`` gives GluonCV's number in any case.
"""
import os
import time

import numpy as np
from PIL import Image
from tqdm import tqdm

from ..data.transforms import load_image

__all__ = ["IGNORE", "LAYOUTS", "SegmentationFolder", "SegmentationScores", "evaluate_segmentation"]

IGNORE = -1  # the label of pixels that do not count, after the layout's own convention is applied

# layout -> (image list or folder, image folder, image suffix, mask folder, label offset, value not counted)
LAYOUTS = {
    "voc": ("ImageSets/Segmentation/{split}.txt", "JPEGImages", ".jpg", "SegmentationClass", 0, 255),
    "ade20k": (None, "images/{split}", ".jpg", "annotations/{split}", -1, 0),
}
_ADE_SPLITS = {"val": "validation", "train": "training"}


class SegmentationFolder:
    """The (image, mask) pairs of a dataset folder in Pascal VOC's or ADE20K's layout (``layout=None``: whichever
    the folder has). ``labels(i)`` gives mask ``i`` as class indices, ``IGNORE`` where a pixel does not count."""

    def __init__(self, root, split="val", layout=None):
        if not os.path.isdir(root):
            raise FileNotFoundError(f"--data: not a folder: {root!r}")
        self.root, self.split = root, split
        self.layout = layout or self._find_layout(root)
        if self.layout not in LAYOUTS:
            raise ValueError(f"unknown layout {self.layout!r}; choose from {', '.join(LAYOUTS)}")
        listing, images, self.suffix, masks, self.offset, self.not_counted = LAYOUTS[self.layout]
        folder_split = _ADE_SPLITS.get(split, split) if self.layout == "ade20k" else split
        self.image_dir = os.path.join(root, images.format(split=folder_split))
        self.mask_dir = os.path.join(root, masks.format(split=folder_split))
        for folder in (self.image_dir, self.mask_dir):
            if not os.path.isdir(folder):
                raise FileNotFoundError(f"{root}: no folder {os.path.relpath(folder, root)} ({self.layout} layout)")
        if listing:
            path = os.path.join(root, listing.format(split=split))
            if not os.path.isfile(path):
                raise FileNotFoundError(f"{root}: no list {os.path.relpath(path, root)} for split {split!r}")
            with open(path, encoding="utf-8") as f:
                self.ids = [line.strip() for line in f if line.strip()]
        else:
            self.ids = sorted(os.path.splitext(n)[0] for n in os.listdir(self.image_dir) if n.endswith(self.suffix))
        if not self.ids:
            raise ValueError(f"{root}: no images for split {split!r} ({self.layout} layout)")

    @staticmethod
    def _find_layout(root):
        found = [name for name, (_, images, _, masks, _, _) in LAYOUTS.items()
                 if os.path.isdir(os.path.join(root, images.split("/")[0]))
                 and os.path.isdir(os.path.join(root, masks.split("/")[0]))]
        if len(found) != 1:
            raise ValueError(f"{root}: not a Pascal VOC (JPEGImages/, SegmentationClass/) or ADE20K (images/, "
                             f"annotations/) folder; give the layout")
        return found[0]

    def __len__(self):
        return len(self.ids)

    def image_path(self, i):
        return os.path.join(self.image_dir, self.ids[i] + self.suffix)

    def mask_path(self, i):
        return os.path.join(self.mask_dir, self.ids[i] + ".png")

    @property
    def class_names(self):
        """The names in ``classes.txt`` at the folder's root (as :mod:`demos.segscenes` writes), else None."""
        path = os.path.join(self.root, "classes.txt")
        if not os.path.isfile(path):
            return None
        with open(path, encoding="utf-8") as f:
            return [line.strip() for line in f if line.strip()]

    def name(self, i):
        """Item ``i`` named for messages and reports: its image file."""
        return self.image_path(i)

    def load(self, i):
        """``(RGB uint8 image, labels)`` of item ``i`` (:meth:`labels`); ``ValueError`` / ``OSError`` naming the file
        when either cannot be read or the mask's size is not the image's."""
        image, labels = load_image(self.image_path(i)), self.labels(i)
        if labels.shape != image.shape[:2]:
            raise ValueError(f"{self.mask_path(i)}: mask of {labels.shape[1]}x{labels.shape[0]} pixels for an image "
                             f"of {image.shape[1]}x{image.shape[0]}")
        return image, labels

    def labels(self, i):
        """Mask ``i`` as an (H, W) int64 array of class indices, ``IGNORE`` where it does not count; ``ValueError``
        naming the file when it cannot be read or is not a single-channel mask."""
        path = self.mask_path(i)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"mask file not found: {path!r}")
        try:
            with Image.open(path) as mask:
                if mask.mode not in ("P", "L", "I", "I;16"):
                    raise ValueError(f"{path}: a {mask.mode} image, not a mask of class indices (P or L)")
                values = np.array(mask, np.int64)
        except (OSError, SyntaxError) as err:
            raise ValueError(f"{path}: not a readable PNG mask ({err})") from err
        labels = values + self.offset
        labels[values == self.not_counted] = IGNORE
        return labels


class SegmentationScores:
    """Pixel counts of (label, prediction) pairs over many images: pixel accuracy, per-class IoU, mean IoU."""

    def __init__(self, num_classes):
        self.num_classes = num_classes
        self.confusion = np.zeros((num_classes, num_classes), np.int64)  # rows: label, columns: prediction

    def update(self, labels, predictions, where=""):
        """Adds one image: ``labels`` with ``IGNORE`` where not counted, ``predictions`` class indices, same shape.
        A label outside the classes raises ``ValueError`` naming ``where`` (a dataset with other classes)."""
        if labels.shape != predictions.shape:
            raise ValueError(f"{where}: mask of {labels.shape[1]}x{labels.shape[0]} pixels for an image of "
                             f"{predictions.shape[1]}x{predictions.shape[0]}")
        counted = labels != IGNORE
        bad = counted & ((labels < 0) | (labels >= self.num_classes))
        if bad.any():
            raise ValueError(f"{where}: class {int(labels[bad][0])} in the mask, the model has {self.num_classes} "
                             f"classes (0-{self.num_classes - 1})")
        pairs = labels[counted] * self.num_classes + predictions[counted]
        self.confusion += np.bincount(pairs, minlength=self.num_classes ** 2).reshape(self.confusion.shape)

    def result(self):
        """``{"pixel_accuracy", "mean_iou", "mean_iou_all_classes", "classes_in_mean", "per_class": [{"pixels",
        "predicted", "iou"}]}``; the IoU of a class neither labelled nor predicted is None."""
        inter = np.diag(self.confusion)
        labelled, predicted = self.confusion.sum(1), self.confusion.sum(0)
        union = labelled + predicted - inter
        iou = np.where(union > 0, inter / np.maximum(union, 1), np.nan)
        total = int(labelled.sum())
        return {"pixel_accuracy": float(inter.sum() / total) if total else None,
                "mean_iou": float(np.nanmean(iou)) if (union > 0).any() else None,
                "mean_iou_all_classes": float(np.nan_to_num(iou).mean()),
                "classes_in_mean": int((union > 0).sum()),
                "per_class": [{"pixels": int(n), "predicted": int(p), "iou": None if np.isnan(v) else float(v)}
                              for n, p, v in zip(labelled, predicted, iou)]}


def evaluate_segmentation(segmenter, dataset, dist=None, progress=True):
    """Pixel accuracy and IoU of ``segmenter`` (a :class:`~resnest_gluon.dense.inference.Segmenter`) on ``dataset``
    (a :class:`SegmentationFolder`, segmentation records, or anything with ``len``, ``load(i)`` -> (image, labels)
    and ``name(i)``).

    With ``dist`` (a :class:`~resnest_gluon.distributed.Distributed` of several ranks) rank r segments images r,
    r + world, ... and the pixel counts are summed over the ranks: every rank gets the numbers of one process.
    An image or mask that cannot be read, or a mask whose size is not its image's, is skipped and listed; a class
    index the model does not have stops with ``ValueError`` naming the mask. Returns :meth:`SegmentationScores.
    result` plus ``class_names``, ``images``, ``skipped`` ([{"image", "reason"}], in dataset order) and
    ``images_per_sec`` (summed over ranks, each from its second image).
    """
    rank, world = (dist.rank, dist.world) if dist is not None else (0, 1)
    scores = SegmentationScores(len(segmenter.names))
    skipped, done, started = [], 0, None
    for i in tqdm(range(rank, len(dataset), world), desc="evaluating", unit="img", disable=not progress,
                  leave=False):
        try:
            image, labels = dataset.load(i)
        except (OSError, ValueError) as err:  # CorruptRecordError is a ValueError
            skipped.append((i, {"image": dataset.name(i), "reason": str(err)}))
            continue
        where = dataset.mask_path(i) if hasattr(dataset, "mask_path") else dataset.name(i)  # what holds the labels
        scores.update(labels, segmenter.segment(image), where=where)
        done += 1
        if done == 1:
            started = time.perf_counter()  # from the second image: the first builds the network's memory
    seconds = time.perf_counter() - started if started else 0
    speed = (done - 1) / seconds if done > 1 and seconds > 0 else 0.0
    if world > 1:  # counts are integers far below 2**53: exact in float64
        total = dist.allreduce_sum(scores.confusion.ravel().tolist() + [done, speed], name="segmentation_eval")
        scores.confusion = np.array(total[:-2], np.int64).reshape(scores.confusion.shape)
        done, speed = int(total[-2]), total[-1]
        skipped = [item for per_rank in dist.allgather_object(skipped) for item in per_rank]
    result = scores.result()
    for entry, name in zip(result["per_class"], segmenter.names):
        entry["class"] = name
    return {**result, "class_names": list(segmenter.names), "images": done,
            "skipped": [item for _, item in sorted(skipped, key=lambda pair: pair[0])],
            "images_per_sec": speed or None}
