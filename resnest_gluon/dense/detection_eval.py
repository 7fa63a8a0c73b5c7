"""How good a detector is on a detection .rec: Pascal VOC's mAP (VOC07 11-point and area under the curve) and COCO's
mAP@[.5:.95], per class too, with the same numbers on any number of Horovod ranks.

    metrics = DetectionMetrics(["cat", "dog"])
    metrics.update(boxes, ids, scores, gt_boxes, gt_ids, gt_difficult)   # one image, boxes in its pixels
    metrics.result().voc07_map
    evaluation = evaluate_detection(net, DetectionRecordDataset("val.rec"), dist=Distributed())

VOC follows GluonCV's ``VOC07MApMetric`` / ``VOCMApMetric`` (and the VOC devkit): pixel-inclusive boxes (IoU with
"+1" sizes); by descending score each detection takes the ground truth of its class it overlaps most, a true
positive at IoU >= ``iou_thresh`` unless that one was taken already (then a false positive); difficult objects are
neither misses nor make a detection on them a false positive. Equal scores keep GluonCV's order, so the numbers
equal its metrics' on the same arrays. COCO is pycocotools' ``COCOeval`` on ground truth built in memory from the
accumulated images (GluonCV's ``COCODetectionMetric`` needs a COCO dataset object): difficult objects become
``iscrowd=1``, which COCO ignores as VOC ignores difficult ones; areas are the boxes' (COCO's own annotation files
give mask areas, so small / medium / large may differ slightly from official numbers); the best 100 detections of
each class in each image count (COCOeval's ``maxDets``; every detection is handed over, as GluonCV's validation
does). Boxes go to COCO as x, y, x2 - x1 + 1, y2 - y1 + 1, GluonCV's conversion.

A class without ground truth (no object, or difficult ones only) has no AP: NaN (None in JSON), left out of every
mean, as GluonCV and COCO do; :attr:`DetectionResult.classes_without_gt` names them so a reader sees why.

Mask R-CNN's masks (metric ``"mask"``): COCO's mask AP, pycocotools' ``COCOeval`` with ``iouType="segm"`` on the same
images, objects and detections as the box AP (difficult objects as crowds, areas the masks' pixel counts), when the
detections carry masks and the records instance masks (``pack-detection --masks``,
:class:`~resnest_gluon.data.detection_masks.MaskedDetectionRecordDataset`). Each detection's 28x28 mask is pasted
into its box at the image's own size and thresholded at 0.5 by GluonCV's ``fill`` (as its ``train_mask_rcnn.py``
validates and :class:`~.inference.Detector` draws), then run-length encoded. Only the best 100 detections of each
class in each image get a mask: COCOeval counts no others (``maxDets``), so the numbers are the same.
"""
import contextlib
import io
import logging
import math
import time
from dataclasses import dataclass

import mxnet as mx
import numpy as np
from tqdm import tqdm

from ..data.records import CorruptRecordError
from ..data.transforms import load_image
from ..data.workers import close_loader
from ..distributed import Distributed
from ..evaluation import LabelError
from .inference import class_names_of, prepare, run_detector

__all__ = ["METRICS", "DetectionMetrics", "DetectionResult", "DetectionEvaluation", "evaluate_detection",
           "has_masks", "paste_masks", "encode_masks", "best_per_class"]

METRICS = ("voc07", "voc", "coco", "mask")
_COCO_STATS = ("coco_map", "coco_map50", "coco_map75", "coco_map_small", "coco_map_medium", "coco_map_large")
_MASK_STATS = ("mask_map", "mask_map50", "mask_map75", "mask_map_small", "mask_map_medium", "mask_map_large")
COCO_MAX_DETS = 100  # COCOeval's maxDets: the detections of a class in an image that count
_log = logging.getLogger(__name__)


def _nan_to_none(value):
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def _mean_ap(aps):
    """The mean of the classes that have an AP (NaN when none has)."""
    aps = np.asarray(aps, np.float64)
    return float(np.nanmean(aps)) if (~np.isnan(aps)).any() else float("nan")


@dataclass
class DetectionResult:
    """Accuracy over ``images`` images. Per-class lists follow ``class_names``; a metric not asked for is None, an
    AP without ground truth NaN. ``num_gt``: the objects that count (not difficult), ``num_difficult`` the others.
    COCO's small / medium / large are NaN when no object has that size."""

    class_names: list
    images: int
    detections: int
    num_gt: list
    num_difficult: list
    iou_thresh: float
    metrics: tuple
    voc07_ap: list = None
    voc_ap: list = None
    coco_ap: list = None
    voc07_map: float = None
    voc_map: float = None
    coco_map: float = None
    coco_map50: float = None
    coco_map75: float = None
    coco_map_small: float = None
    coco_map_medium: float = None
    coco_map_large: float = None
    mask_ap: list = None  # COCO mask AP@[.5:.95] per class (Mask R-CNN on records with masks)
    mask_map: float = None
    mask_map50: float = None
    mask_map75: float = None
    mask_map_small: float = None
    mask_map_medium: float = None
    mask_map_large: float = None
    score_thresh: float = 0.5  # the operating point of the next two (detect.py's default threshold)
    precision_at_thresh: float = None  # VOC's verdicts on the detections scoring >= score_thresh, all classes
    recall_at_thresh: float = None

    @property
    def classes_without_gt(self):
        """The classes without an AP (no object that counts), left out of the means."""
        return [name for name, n in zip(self.class_names, self.num_gt) if n == 0]

    def to_dict(self):
        """JSON-ready: NaN as None, the per-class numbers as one entry per class."""
        per_class = []
        for k, name in enumerate(self.class_names):
            entry = {"class": name, "num_gt": int(self.num_gt[k]), "num_difficult": int(self.num_difficult[k])}
            for key in ("voc07_ap", "voc_ap", "coco_ap", "mask_ap"):
                values = getattr(self, key)
                entry[key] = None if values is None else _nan_to_none(float(values[k]))
            per_class.append(entry)
        return {"images": self.images, "detections": self.detections, "iou_thresh": self.iou_thresh,
                "metrics": list(self.metrics),
                **{key: _nan_to_none(getattr(self, key)) for key in ("voc07_map", "voc_map", *_COCO_STATS,
                                                                     *_MASK_STATS)},
                "score_thresh": self.score_thresh,
                **{key: _nan_to_none(getattr(self, key)) for key in ("precision_at_thresh", "recall_at_thresh")},
                "classes_without_gt": self.classes_without_gt, "per_class": per_class}


def _cocoeval():
    """pycocotools' ``COCO`` and ``COCOeval``, or an ImportError saying how to do without."""
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError as err:
        raise ImportError(f"COCO mAP needs pycocotools (pinned in requirements.txt: pip install -r requirements.txt); "
                          f"without it ask for the VOC metrics only ({err})") from None
    return COCO, COCOeval


class _Image:
    """One image's detections and ground truth, as :meth:`DetectionMetrics.update` keeps them."""

    __slots__ = ("boxes", "ids", "scores", "gt_boxes", "gt_ids", "gt_difficult", "masks", "gt_masks", "size")

    def __init__(self, boxes, ids, scores, gt_boxes, gt_ids, gt_difficult, masks=None, gt_masks=None, size=None):
        self.boxes, self.ids, self.scores = boxes, ids, scores
        self.gt_boxes, self.gt_ids, self.gt_difficult = gt_boxes, gt_ids, gt_difficult
        self.masks, self.gt_masks, self.size = masks, gt_masks, size


class DetectionMetrics:
    """Accumulates images (:meth:`update`), then computes VOC07, VOC and COCO mAP (:meth:`result`).

    ``metrics``: any of ``METRICS`` (``"coco"`` needs pycocotools, checked here). With a VOC metric the result also
    has the precision and recall of the detections scoring >= ``score_thresh`` (an operating point, e.g. the
    threshold detect.py draws at), from the same VOC verdicts, over all classes. Feed images in a fixed order (a
    dataset's): equal scores of different images are ranked by it, so the same order gives the same numbers. A
    class without ground truth gets an AP of NaN and is left out of the means (see the module's notes).
    ``"mask"``: COCO's mask AP, computed when every image came with masks (``update(..., masks=, gt_masks=)``),
    else left None.
    """

    def __init__(self, class_names, iou_thresh=0.5, metrics=METRICS, score_thresh=0.5):
        self.class_names = [str(c) for c in class_names]
        if not self.class_names:
            raise ValueError("DetectionMetrics needs at least one class name")
        unknown = sorted(set(metrics) - set(METRICS))
        if unknown or not metrics:
            raise ValueError(f"unknown metrics {unknown}; choose from {', '.join(METRICS)}")
        if not 0 < iou_thresh <= 1:
            raise ValueError(f"iou_thresh must be in (0, 1], got {iou_thresh}")
        self.metrics = tuple(m for m in METRICS if m in metrics)
        self.iou_thresh = float(iou_thresh)
        self.score_thresh = float(score_thresh)
        if "coco" in self.metrics or "mask" in self.metrics:
            _cocoeval()
        self.images = []

    def update(self, boxes, ids, scores, gt_boxes, gt_ids, gt_difficult=None, masks=None, gt_masks=None):
        """Adds one image: its detections (``(N, 4)`` x1, y1, x2, y2 in the image's pixels, class ids, scores;
        rows with id < 0 are padding and ignored) and its ground truth (``(M, 4)`` boxes, class ids (< 0 ignored),
        difficult flags, default none). Arrays or NDArrays; a class id beyond the classes is a ValueError.

        For the mask AP: ``masks``, one per detection row, each an ``(H, W)`` binary array at the image's size, its
        COCO RLE (:func:`encode_masks`), or None for a detection COCO would not count (beyond the best 100 of its
        class); ``gt_masks``, one per ground-truth row, arrays or RLEs of the same size."""
        ids, gt_ids = _flat(ids), _flat(gt_ids)
        keep, gt_keep = ids >= 0, gt_ids >= 0
        for what, values in (("detection", ids[keep]), ("ground truth", gt_ids[gt_keep])):
            bad = values[(values >= len(self.class_names)) | (values % 1 != 0)]
            if len(bad):
                raise ValueError(f"image {len(self.images)}: {what} class id {bad[0]:g} is not one of the "
                                 f"{len(self.class_names)} classes")
        difficult = np.zeros(len(gt_ids), bool) if gt_difficult is None else _flat(gt_difficult) != 0
        size = None
        if masks is not None or gt_masks is not None:
            if masks is None or gt_masks is None or len(masks) != len(ids) or len(gt_masks) != len(gt_ids):
                raise ValueError(f"image {len(self.images)}: give one mask per detection ({len(ids)}) and per "
                                 f"ground-truth object ({len(gt_ids)}), got "
                                 f"{None if masks is None else len(masks)} and "
                                 f"{None if gt_masks is None else len(gt_masks)}")
            masks, gt_masks = [_rle(m) for m in masks], [_rle(m) for m in gt_masks]
            sizes = {tuple(m["size"]) for m in masks + gt_masks if m is not None}
            if len(sizes) > 1:
                raise ValueError(f"image {len(self.images)}: masks of different sizes {sorted(sizes)}")
            size = sizes.pop() if sizes else (0, 0)
            masks = [m for m, k in zip(masks, keep) if k]
            gt_masks = [m for m, k in zip(gt_masks, gt_keep) if k]
        self.images.append(_Image(_boxes(boxes)[keep], ids[keep].astype(np.int64),
                                  _flat(scores).astype(np.float32)[keep], _boxes(gt_boxes)[gt_keep],
                                  gt_ids[gt_keep].astype(np.int64), difficult[gt_keep], masks, gt_masks, size))

    def result(self):
        """The :class:`DetectionResult` of the images so far."""
        num_classes = len(self.class_names)
        num_gt, num_difficult = np.zeros(num_classes, np.int64), np.zeros(num_classes, np.int64)
        for image in self.images:
            np.add.at(num_gt, image.gt_ids[~image.gt_difficult], 1)
            np.add.at(num_difficult, image.gt_ids[image.gt_difficult], 1)
        result = DetectionResult(self.class_names, len(self.images), sum(len(i.ids) for i in self.images),
                                 num_gt.tolist(), num_difficult.tolist(), self.iou_thresh, self.metrics,
                                 score_thresh=self.score_thresh)
        if "voc07" in self.metrics or "voc" in self.metrics:
            scores, matches = self._voc_matches()
            curves = [_precision_recall(s, m, n) for s, m, n in zip(scores, matches, num_gt)]
            verdicts = np.array([m for ms in matches for m in ms], np.int32)
            above = np.array([v for vs in scores for v in vs], np.float32) >= self.score_thresh
            hits, wrong = int(np.sum(above & (verdicts == 1))), int(np.sum(above & (verdicts == 0)))
            result.recall_at_thresh = hits / num_gt.sum() if num_gt.sum() else float("nan")
            result.precision_at_thresh = hits / (hits + wrong) if hits + wrong else float("nan")
            for name, ap_of in (("voc07", _voc07_ap), ("voc", _area_ap)):
                if name in self.metrics:
                    aps = [ap_of(*curve) if curve else float("nan") for curve in curves]
                    setattr(result, f"{name}_ap", aps)
                    setattr(result, f"{name}_map", _mean_ap(aps))
        if "coco" in self.metrics:
            result.coco_ap, stats = self._coco()
            for key, value in zip(_COCO_STATS, stats):
                setattr(result, key, value)
        if "mask" in self.metrics and self.has_masks:
            result.mask_ap, stats = self._coco("segm")
            for key, value in zip(_MASK_STATS, stats):
                setattr(result, key, value)
        return result

    @property
    def has_masks(self):
        """True when every image so far came with masks (the mask AP can be computed)."""
        return bool(self.images) and all(image.gt_masks is not None for image in self.images)

    def _voc_matches(self):
        """Per class: the scores of its detections and what each is (1 true positive, 0 false positive, -1 on a
        difficult object: ignored), image by image, best first within an image, as GluonCV records them."""
        scores = [[] for _ in self.class_names]
        matches = [[] for _ in self.class_names]
        for image in self.images:
            for c in np.unique(np.concatenate([image.ids, image.gt_ids])):
                mine = image.ids == c
                order = image.scores[mine].argsort()[::-1]  # GluonCV's (and the devkit's) order of equal scores
                scores[c].extend(image.scores[mine][order])
                gt = image.gt_ids == c
                matches[c].extend(_match(image.boxes[mine][order], image.gt_boxes[gt], image.gt_difficult[gt],
                                         self.iou_thresh))
        return scores, matches

    def _coco(self, iou_type="bbox"):
        """``(per-class AP@[.5:.95], the six summary numbers)`` from pycocotools' COCOeval, of the boxes
        (``iou_type="bbox"``) or the masks (``"segm"``: the same objects and detections, with their masks; areas the
        masks' pixel counts; detections without a mask left out: COCO would not count them)."""
        num_classes = len(self.class_names)
        if not self.images:
            return [float("nan")] * num_classes, [float("nan")] * len(_COCO_STATS)
        COCO, COCOeval = _cocoeval()
        segm = iou_type == "segm"
        if segm:
            from pycocotools import mask as mask_utils
        gt, dt = [], []
        for n, image in enumerate(self.images, 1):
            for k, (box, c, difficult) in enumerate(zip(image.gt_boxes, image.gt_ids, image.gt_difficult)):
                entry = {**_coco_box(box), "id": len(gt) + 1, "image_id": n, "category_id": int(c),
                         "iscrowd": int(difficult)}
                if segm:
                    entry.update(segmentation=image.gt_masks[k], area=float(mask_utils.area(image.gt_masks[k])))
                gt.append(entry)
            for k, (box, c, score) in enumerate(zip(image.boxes, image.ids, image.scores)):
                entry = {**_coco_box(box), "id": len(dt) + 1, "image_id": n, "category_id": int(c),
                         "score": float(score), "iscrowd": 0}
                if segm:
                    if image.masks[k] is None:
                        continue
                    entry.update(segmentation=image.masks[k], area=float(mask_utils.area(image.masks[k])))
                dt.append(entry)
        images = [{"id": n, **({"height": int(image.size[0]), "width": int(image.size[1])} if segm else {})}
                  for n, image in enumerate(self.images, 1)]
        categories = [{"id": k, "name": name} for k, name in enumerate(self.class_names)]
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
            truth, found = COCO(), COCO()
            for coco, annotations in ((truth, gt), (found, dt)):
                coco.dataset = {"images": images, "categories": categories, "annotations": annotations}
                coco.createIndex()
            evaluator = COCOeval(truth, found, iou_type)
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
        stats = [float("nan") if v < 0 else float(v) for v in evaluator.stats[:len(_COCO_STATS)]]
        precision = evaluator.eval["precision"]  # (IoU thresholds, recall points, classes, areas, max dets)
        per_class = []
        for k in range(num_classes):
            values = precision[:, :, k, 0, -1]  # all areas, maxDets 100
            per_class.append(float(values[values > -1].mean()) if (values > -1).any() else float("nan"))
        return per_class, stats


def _rle(mask):
    """A COCO RLE of one binary ``(H, W)`` mask (an RLE or None passes through)."""
    if mask is None or isinstance(mask, dict):
        return mask
    return encode_masks(np.asarray(mask)[None])[0]


def encode_masks(masks):
    """COCO RLEs (pycocotools' compressed ``{"size": [H, W], "counts": bytes}``) of ``(N, H, W)`` binary masks."""
    from pycocotools import mask as mask_utils

    masks = np.asfortranarray(np.asarray(masks, np.uint8).transpose(1, 2, 0) != 0, np.uint8)
    return mask_utils.encode(masks) if masks.shape[2] else []


def paste_masks(masks, boxes, size, chunk=64):
    """``(N, H, W)`` uint8 0/1 masks of Mask R-CNN's per-box mask probabilities ``masks`` ((N, 28, 28)) pasted into
    their ``boxes`` (x1, y1, x2, y2 in the image's pixels) on an image of ``size`` = (height, width), thresholded at
    0.5: GluonCV's ``fill`` (``chunk`` masks at a time)."""
    from gluoncv.data.transforms.mask import fill

    height, width = size
    masks, boxes = np.asarray(masks, np.float32), np.asarray(boxes, np.float32).reshape(-1, 4)
    if not len(masks):
        return np.zeros((0, height, width), np.uint8)
    return np.concatenate([fill(masks[i: i + chunk], boxes[i: i + chunk], (width, height))
                           for i in range(0, len(masks), chunk)])


def best_per_class(ids, scores, k=COCO_MAX_DETS):
    """Indices of the ``k`` best-scoring detections of each class (those COCOeval counts), in index order."""
    ids, scores = np.asarray(ids).reshape(-1), np.asarray(scores).reshape(-1)
    keep = []
    for c in np.unique(ids[ids >= 0]):
        mine = np.flatnonzero(ids == c)
        keep.extend(mine[np.argsort(-scores[mine], kind="stable")[:k]])
    return np.sort(np.asarray(keep, np.int64))


def mask_rles(masks, boxes, ids, scores, size):
    """One entry per detection: the RLE of its mask pasted at the image's ``size`` (:func:`paste_masks`) for the
    best :data:`COCO_MAX_DETS` of each class, None for the others."""
    out = [None] * len(ids)
    chosen = best_per_class(ids, scores)
    for start in range(0, len(chosen), 64):  # pasted and encoded a chunk at a time: full-size masks are large
        part = chosen[start: start + 64]
        for i, rle in zip(part, encode_masks(paste_masks(masks[part], boxes[part], size))):
            out[i] = rle
    return out


def has_masks(net):
    """True for a detector with a mask head (GluonCV's ``MaskRCNN``: ``mask_rcnn_fpn_*``)."""
    return hasattr(net, "mask") and hasattr(net, "mask_target")


def _flat(values):
    values = values.asnumpy() if isinstance(values, mx.nd.NDArray) else np.asarray(values)
    return values.reshape(-1)


def _boxes(values):
    values = values.asnumpy() if isinstance(values, mx.nd.NDArray) else np.asarray(values)
    return values.reshape(-1, 4)


def _voc_iou(a, b):
    """IoU of every box of ``a`` with every box of ``b``, boxes as pixel-inclusive corners (sizes x2 - x1 + 1)."""
    a, b = a.copy(), b.copy()
    a[:, 2:] += 1
    b[:, 2:] += 1
    top_left = np.maximum(a[:, None, :2], b[:, :2])
    bottom_right = np.minimum(a[:, None, 2:4], b[:, 2:4])
    inter = np.prod(bottom_right - top_left, axis=2) * (top_left < bottom_right).all(axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    return inter / (area_a[:, None] + area_b - inter)


def _match(boxes, gt_boxes, difficult, iou_thresh):
    """VOC's verdict on each detection of one class in one image (``boxes`` best first): 1, 0 or -1."""
    if not len(boxes):
        return []
    if not len(gt_boxes):
        return [0] * len(boxes)
    iou = _voc_iou(boxes, gt_boxes)
    best = iou.argmax(axis=1)
    best[iou.max(axis=1) < iou_thresh] = -1
    taken = np.zeros(len(gt_boxes), bool)
    verdicts = []
    for g in best:
        if g < 0:
            verdicts.append(0)
            continue
        verdicts.append(-1 if difficult[g] else 0 if taken[g] else 1)
        taken[g] = True
    return verdicts


def _precision_recall(scores, matches, num_gt):
    """``(recall, precision)`` down the detections of one class by descending score, or None without ground
    truth. Equal scores are ranked as GluonCV ranks them (numpy's default sort, reversed)."""
    if num_gt == 0:
        return None
    order = np.array(scores, np.float32).argsort()[::-1]
    matches = np.array(matches, np.int32)[order]
    tp, fp = np.cumsum(matches == 1), np.cumsum(matches == 0)
    with np.errstate(divide="ignore", invalid="ignore"):  # leading ignored detections: 0 / 0, taken as 0
        precision = tp / (fp + tp)
    return tp / num_gt, np.nan_to_num(precision)


def _voc07_ap(recall, precision):
    """VOC2007's 11-point AP: the mean over recall levels 0, 0.1, ..., 1 of the best precision at that recall or
    more (the levels as the devkit computes them, ``arange``'s rounding included; summed before dividing, so
    perfect detections give 1.0, not GluonCV's 1.0000000000000002)."""
    return sum(precision[recall >= t].max() if (recall >= t).any() else 0.0
               for t in np.arange(0.0, 1.1, 0.1)) / 11.0


def _area_ap(recall, precision):
    """The area under the precision envelope (VOC2010+): each recall step times the best precision from there."""
    recall = np.concatenate(([0.0], recall, [1.0]))
    envelope = np.maximum.accumulate(np.concatenate(([0.0], precision, [0.0]))[::-1])[::-1]
    steps = np.flatnonzero(recall[1:] != recall[:-1])
    return float(np.sum((recall[steps + 1] - recall[steps]) * envelope[steps + 1]))


def _coco_box(box):
    """COCO's ``bbox`` (x, y, w, h) and ``area`` of pixel-inclusive corners (GluonCV's conversion: w = x2 - x1 + 1)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    w, h = x2 - x1 + 1, y2 - y1 + 1
    return {"bbox": [x1, y1, w, h], "area": w * h}


@dataclass
class DetectionEvaluation:
    """What :func:`evaluate_detection` found: the accuracy, the damaged records skipped (``[(record index,
    message)]`` over all ranks, by index) and the throughput (images/s summed over ranks, each timed from its
    second image on: the first call builds the graph)."""

    result: DetectionResult
    skipped: list
    images_per_sec: float


class _Prepared(mx.gluon.data.Dataset):
    """Record ``i`` ready for the network, computed in DataLoader workers: ``(i, chw, scale, (height, width),
    objects, None, gt mask RLEs or None)``, or ``(i, None, None, None, None, message, None)`` for a damaged record.
    The RLEs when the dataset gives masks (a third field) and ``masks``."""

    def __init__(self, dataset, config, masks=False):
        self.dataset, self.config, self.masks = dataset, config, masks

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        try:
            img, objects, *gt_masks = self.dataset[i]
        except CorruptRecordError as err:
            return i, None, None, None, None, str(err), None
        img = load_image(img)
        x, scale = prepare(img, self.config)
        rles = encode_masks(gt_masks[0]) if self.masks and gt_masks else None
        return i, x, scale, img.shape[:2], np.asarray(objects, np.float32).reshape(-1, 6), None, rles


def _first(items):
    return items[0]


def _label_problem(objects, num_classes, dataset, index):
    """Why record ``index``'s classes do not fit the network, or None."""
    ids = objects[:, 4]
    bad = ids[(ids < 0) | (ids >= num_classes) | (ids % 1 != 0)]
    if not len(bad):
        return None
    where = dataset.where(index) if hasattr(dataset, "where") else f"record #{index}"
    return f"{where}: class id {bad[0]:g} is not one of the model's {num_classes} classes [0, {num_classes})"


def _run_shard(net, prepared, shard, ctx, num_classes, progress, num_workers):
    """Runs ``net`` on the records ``shard`` of ``prepared``: ``(entries [(index, boxes, ids, scores, objects,
    detection mask RLEs, ground-truth mask RLEs)] (the RLEs None without masks),
    skipped [(index, message)], the first label problem or None, (images timed, seconds))``. Stops at a label
    problem (the caller still gathers)."""
    loader = None
    if num_workers > 0 and shard:
        loader = mx.gluon.data.DataLoader(prepared, batch_size=1, sampler=shard, batchify_fn=_first,
                                          num_workers=num_workers)
    entries, skipped, problem, times = [], [], None, [time.time()]
    bar = tqdm(total=len(shard), desc="evaluating", unit="img", leave=False, disable=not progress)
    try:
        for index, x, scale, size, objects, damage, gt_rles in (
                loader if loader is not None else map(prepared.__getitem__, shard)):
            bar.update(1)
            if damage:
                skipped.append((index, damage))
                continue
            problem = _label_problem(objects, num_classes, prepared.dataset, index)
            if problem:
                break
            ids, scores, boxes, masks = run_detector(net, mx.nd.array(x[None], ctx=ctx), scale, size)
            rles = mask_rles(masks, boxes, ids, scores, size) if gt_rles is not None and masks is not None else None
            entries.append((index, boxes, ids, scores, objects, rles, gt_rles if rles is not None else None))
            times.append(time.time())
    finally:
        bar.close()
        if loader is not None:
            close_loader(loader)
    # the first image builds the graph: timed from the second when there is one
    timed = (len(times) - 2, times[-1] - times[1]) if len(times) > 2 else (len(times) - 1, times[-1] - times[0])
    return entries, skipped, problem, timed


def evaluate_detection(net, dataset, ctx=mx.cpu(), dist=None, data_config=None, class_names=None, metrics=METRICS,
                       iou_thresh=0.5, progress=True, num_workers=0, score_thresh=0.5):
    """Evaluates the detector ``net`` on ``dataset`` (a :class:`~.detection_data.DetectionRecordDataset` or any
    dataset of ``(RGB image, (N, 6) x1, y1, x2, y2, class, difficult in pixels)``); a :class:`DetectionEvaluation`.
    With a Mask R-CNN (:func:`has_masks`) on a dataset that also gives each image's ``(N, H, W)`` instance masks
    (:class:`~resnest_gluon.data.detection_masks.MaskedDetectionRecordDataset`) and ``"mask"`` among ``metrics``,
    the result has COCO's mask AP too (see the module).

    Each image is resized with the network's evaluation transform (``data_config``, default ``net.data_config``;
    GluonCV's ``FasterRCNNDefaultValTransform``) and run alone (:func:`~.inference.run_detector`: boxes clipped and
    scaled back to its pixels). ``net`` is called as it is, in inference mode and without changing it (hybridize
    it first for speed); ``class_names`` default to its own. Under Horovod (``dist``) rank r takes records r,
    r + world, ... (every record once, ranks may differ by one); the images' results are gathered in one
    collective call, the same on every rank, and every rank computes the metrics from them in record order, so
    the numbers are a single process's. Damaged records (:class:`~resnest_gluon.data.records.CorruptRecordError`)
    are skipped and listed; a class id the network does not have is a :class:`~resnest_gluon.evaluation.
    LabelError` naming the record, raised on every rank after the gathering (no rank is left waiting); any other
    failure of a rank is raised there, and on the others as a ``RuntimeError`` naming that rank.
    ``num_workers`` decode and resize in DataLoader processes; the progress bar shows on rank 0 only.
    ``score_thresh``: the operating point of the precision and recall reported beside the mAPs.
    """
    dist = dist or Distributed(use_horovod=False)
    config = data_config or net.data_config
    names = list(class_names) if class_names is not None else class_names_of(net)
    scorer = DetectionMetrics(names, iou_thresh, metrics, score_thresh)  # bad metrics/no pycocotools: before any image
    shard = list(range(dist.rank, len(dataset), dist.world))
    failure = message = None
    try:
        prepared = _Prepared(dataset, config, "mask" in scorer.metrics and has_masks(net))
        entries, skipped, problem, timed = _run_shard(net, prepared, shard, ctx, len(names),
                                                      progress and dist.rank == 0, num_workers)
    except Exception as err:  # this rank failed: it still joins the gathering, so that no rank waits for it
        if dist.world == 1:
            raise
        failure, message = err, f"{type(err).__name__}: {err}"
        entries, skipped, problem, timed = [], [], None, (0, 0.0)
    parts = dist.allgather_object((entries, skipped, problem, timed, message))
    if failure is not None:
        raise failure
    failed = [(rank, p[4]) for rank, p in enumerate(parts) if p[4]]
    if failed:
        raise RuntimeError(f"detection evaluation failed on rank {failed[0][0]}: {failed[0][1]}")
    problems = [p[2] for p in parts if p[2]]
    if problems:
        raise LabelError(problems[0])
    for index, boxes, ids, scores, objects, rles, gt_rles in sorted((e for p in parts for e in p[0]),
                                                                    key=lambda e: e[0]):
        scorer.update(boxes, ids, scores, objects[:, :4], objects[:, 4], objects[:, 5], rles, gt_rles)
    rate = sum(n / seconds for n, seconds in (p[3] for p in parts) if n and seconds > 0)
    if dist.rank == 0:
        _log.info("evaluated %d images in %d ranks: %.2f images/s", len(scorer.images), dist.world, rate)
    return DetectionEvaluation(scorer.result(), sorted(s for p in parts for s in p[1]), rate)
