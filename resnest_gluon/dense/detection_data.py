"""Detection records as training and evaluation read them: images with their boxes in pixels.

``recordio_tools pack-detection`` writes im2rec's detection layout (``[2, 6, (class, x1/w, y1/h, x2/w, y2/h,
difficult)...]``, see :mod:`recordio_tools.detection`); :class:`DetectionRecordDataset` gives each record back as
GluonCV's detection datasets do (``VOCDetection``, ``RecordFileDetection``): an RGB uint8 HWC image and an
``(N, 6)`` float32 array of ``x1, y1, x2, y2, class, difficult`` in the decoded image's pixels, so GluonCV's
transforms (``FasterRCNNDefaultTrainTransform``) take it as it is. Unlike ``RecordFileDetection`` a damaged record
raises :class:`~resnest_gluon.data.records.CorruptRecordError` naming the file, the record and what is wrong, so the
loaders can skip and report it.
"""
import mxnet as mx
import numpy as np

from ..data.detection_masks import MaskedDetectionRecordDataset
from ..data.records import (IR_HEADER, CorruptRecordError, RecordImageDataset, decode_record, default_idx_path,
                            objects_in_pixels, parse_objects, read_frame, read_idx_entries)
from ..data.batches import ShardedBatches

__all__ = ["DetectionRecordDataset", "DetectionTrainLoader", "MaskedTrainTransform", "header_objects",
           "check_class_ids", "check_instance_masks", "records_without_masks", "evaluation_dataset", "objects_in_pixels"]


class DetectionRecordDataset(RecordImageDataset):
    """``(RGB uint8 HWC image, (N, 6) objects in pixels)`` for each record of an indexed detection .rec."""

    def __getitem__(self, i):
        payload, where = self.payload(i)
        img, labels = decode_record(payload, where)
        return img, objects_in_pixels(labels, img.shape[0], img.shape[1], where)


def header_objects(rec_path, idx_path=None):
    """The objects of every record of a detection .rec (.idx order) as ``(N, object width)`` arrays (class id
    first, normalised corners), read from the record headers alone (two small reads per record, no image
    decoding); None where the header is not a readable detection label."""
    import os
    import struct

    idx_path = idx_path or default_idx_path(rec_path)
    found = []
    with open(rec_path, "rb") as f:
        fd = f.fileno()
        for _, _, offset in read_idx_entries(idx_path):
            frame = read_frame(fd, offset, IR_HEADER.size)
            flag = IR_HEADER.unpack_from(frame[3])[0] if frame and len(frame[3]) >= IR_HEADER.size else 0
            head = os.pread(fd, 4 * flag, offset + 8 + IR_HEADER.size) if flag >= 2 else b""
            objects = None
            if flag >= 2 and len(head) == 4 * flag:
                objects, problem = parse_objects(list(struct.unpack(f"<{flag}f", head)))
                objects = None if problem else objects
            found.append(objects)
    return found


def check_class_ids(rec_path, idx_path, class_names, flag="--rec-train"):
    """``ValueError`` naming the first record whose class ids fall outside ``class_names`` (from the headers)."""
    for index, objects in enumerate(header_objects(rec_path, idx_path)):
        if objects is not None and len(objects) and not 0 <= objects[:, 0].min() <= objects[:, 0].max() < len(
                class_names):
            raise ValueError(f"{flag} {rec_path} record #{index}: class id {int(objects[:, 0].max())} but "
                             f"{len(class_names)} class names; pass the classes file the records were packed with "
                             f"(--classes)")


def records_without_masks(rec_path, idx_path=None):
    """Indices (.idx order) of the records of a detection .rec that carry no instance masks (header ``id2`` = 0, as
    ``pack-detection`` without ``--masks`` and im2rec write them), from the headers alone (one small read each);
    records whose header cannot be read are not listed (the readers name them)."""
    idx_path = idx_path or default_idx_path(rec_path)
    found = []
    with open(rec_path, "rb") as f:
        fd = f.fileno()
        for index, (_, _, offset) in enumerate(read_idx_entries(idx_path)):
            frame = read_frame(fd, offset, IR_HEADER.size)
            if frame and len(frame[3]) >= IR_HEADER.size and IR_HEADER.unpack_from(frame[3])[3] == 0:
                found.append(index)
    return found


def evaluation_dataset(rec_path, idx_path=None, masks=False):
    """The records of a detection .rec to evaluate on: with their instance masks
    (:class:`~resnest_gluon.data.detection_masks.MaskedDetectionRecordDataset`, for Mask R-CNN's mask AP) when
    ``masks`` and every record carries masks, else :class:`DetectionRecordDataset` (boxes only)."""
    if masks and not records_without_masks(rec_path, idx_path):
        return MaskedDetectionRecordDataset(rec_path, idx_path)
    return DetectionRecordDataset(rec_path, idx_path)


def check_instance_masks(rec_path, idx_path=None, flag="--rec-train", model="mask_rcnn_fpn"):
    """``ValueError`` naming ``rec_path`` and ``pack-detection --masks`` when records of it carry no instance masks
    (all of them: packed without ``--masks``; some: the first one)."""
    missing = records_without_masks(rec_path, idx_path)
    if not missing:
        return
    from ..data.records import count_records

    total = count_records(idx_path or default_idx_path(rec_path))
    if len(missing) == total:
        raise ValueError(f"{flag} {rec_path}: its records carry no instance masks, which {model} trains on; pack "
                         f"them with masks: python -m recordio_tools pack-detection SOURCE PREFIX --masks ...")
    raise ValueError(f"{flag} {rec_path}: {len(missing)} of its {total} records carry no instance masks (the first: "
                     f"record #{missing[0]}); {model} needs every record packed with "
                     f"python -m recordio_tools pack-detection ... --masks")


class MaskedTrainTransform:
    """GluonCV's Mask R-CNN training transform (``MaskRCNNDefaultTrainTransform``: random short side within
    ``max_size``, horizontal flip, RPN targets) on binary instance masks instead of COCO polygons.

    The image and boxes are resized and flipped with GluonCV's functions, drawing the random short side and the flip
    in its order; each mask is resized bilinearly to the image's new size and thresholded at 0.5 (GluonCV draws its
    polygons at the new size). The RPN targets are GluonCV's ``FasterRCNNDefaultTrainTransform`` (the one
    ``MaskRCNNDefaultTrainTransform`` computes them as) run on the image as resized, at its own size and without a
    flip. ``(src HWC uint8 NDArray, (N, 6) objects, (N, H, W) uint8 masks)`` -> ``(image, objects, rpn cls
    targets, rpn box targets, rpn box masks, (N, h, w) float32 masks)``, what ``MaskRCNNTrainBatchify`` takes."""

    def __init__(self, short, max_size, net, mean, std, flip_p=0.5, ashape=128, multi_stage=True):
        from gluoncv.data.transforms.presets.rcnn import FasterRCNNDefaultTrainTransform

        self._short, self._max_size, self._flip_p = short, max_size, flip_p
        self._targets = FasterRCNNDefaultTrainTransform(max_size, max_size, net, mean=mean, std=std, flip_p=0.0,
                                                        ashape=ashape, multi_stage=multi_stage)

    def __call__(self, src, label, masks):
        import random

        import cv2
        from gluoncv.data.transforms import bbox as tbbox
        from gluoncv.data.transforms import image as timage

        h, w = src.shape[:2]
        short = random.randint(*self._short) if isinstance(self._short, (tuple, list)) else self._short
        img = timage.resize_short_within(src, short, self._max_size, interp=1)
        new_h, new_w = img.shape[:2]
        bbox = tbbox.resize(label, (w, h), (new_w, new_h))
        masks = np.stack([cv2.resize(m.astype(np.float32), (new_w, new_h), interpolation=cv2.INTER_LINEAR) >= 0.5
                          for m in masks]) if len(masks) else np.zeros((0, new_h, new_w), bool)
        img, flips = timage.random_flip(img, px=self._flip_p)
        bbox = tbbox.flip(bbox, (new_w, new_h), flip_x=flips[0])
        if flips[0]:
            masks = masks[:, :, ::-1]
        self._targets._short = min(new_h, new_w)  # resize_short_within at the image's own size: unchanged
        return (*self._targets(img, bbox), mx.nd.array(np.ascontiguousarray(masks), dtype="float32"))


class _SeededDetections(DetectionRecordDataset):
    """Training items keyed by ``(position, sample_seed)`` over the records with objects (``usable``, record
    indices): the transform's random choices (scale, flip) are seeded per sample, so an epoch's batches do not
    depend on worker processes or on the steps run before (resume). An undecodable record is replaced by the next
    usable one and reported with the batch (``bad``: its record index, else -1), as the classification loader does."""

    def __init__(self, rec_path, idx_path, usable, transform):
        super().__init__(rec_path, idx_path)
        self.usable, self.transform = list(usable), transform

    def __getitem__(self, key):
        import random

        position, sample_seed = key
        bad = -1
        for step in range(len(self.usable)):
            index = self.usable[(position + step) % len(self.usable)]
            try:
                img, *targets = self._read(index)
                break
            except CorruptRecordError:
                bad = index if bad < 0 else bad
        else:
            raise CorruptRecordError(f"{self.rec_path}: no record decodes")
        random.seed(sample_seed)  # GluonCV's transforms draw from Python's and numpy's global generators
        np.random.seed(sample_seed)
        return (*self.transform(mx.nd.array(img, dtype="uint8"), *targets), bad)

    def _read(self, index):
        return DetectionRecordDataset.__getitem__(self, index)

    def problem(self, index):
        """``(key, byte offset, reason)`` of the bad record ``index`` (decoded again, in this process)."""
        key = self.keys[index]
        try:
            self._read(index)
            reason = "decodes now (a read error?)"
        except CorruptRecordError as err:
            reason = str(err).split(": ", 1)[-1]
        return key, int(self._record.idx[key]), reason


class _SeededMaskedDetections(_SeededDetections):
    """:class:`_SeededDetections` of masked records: ``(image, objects, masks)`` to the transform; a record whose
    masks are damaged is replaced and named as an undecodable image is."""

    def _read(self, index):
        return MaskedDetectionRecordDataset.__getitem__(self, index)


class DetectionTrainLoader(ShardedBatches):
    """Faster R-CNN training batches from a detection .rec: GluonCV's ``FasterRCNNDefaultTrainTransform`` (random
    short side in ``short``, long side at most ``max_size``, horizontal flip, RPN targets for ``net``'s anchors) and
    ``FasterRCNNTrainBatchify`` (images and targets padded to the batch's largest), over this rank's shard
    (:class:`~resnest_gluon.data.sharding.ShardSampler`: the same number of full batches on every rank).

    Records without objects are left out (GluonCV's RPN targets need a box; ``num_empty``), found from the headers
    at start. ``set_epoch(E, skip=k)`` then a ``for`` loop yields epoch E's batches from batch k on, the same as an
    uninterrupted epoch's; each batch is ``(data, label, rpn_cls_targets, rpn_box_targets, rpn_box_masks)`` with
    ``label`` (B, N, 6): x1, y1, x2, y2, class, difficult, padded with -1.

    ``masks=True`` (Mask R-CNN, records of ``pack-detection --masks``): :class:`MaskedTrainTransform` and GluonCV's
    ``MaskRCNNTrainBatchify``; each batch is ``(data, label, gt_masks, rpn_cls_targets, rpn_box_targets,
    rpn_box_masks)``, ``gt_masks`` (B, N, H, W) float32 at the batch's padded size (zeros past each image's)."""

    def __init__(self, rec_path, net, idx_path=None, batch_size=1, short=(640, 800), max_size=1333, rank=0, world=1,
                 seed=0, num_workers=0, flip_p=0.5, masks=False):
        from gluoncv.data.batchify import FasterRCNNTrainBatchify, MaskRCNNTrainBatchify
        from gluoncv.data.transforms.presets.rcnn import FasterRCNNDefaultTrainTransform

        idx_path = idx_path or default_idx_path(rec_path)
        counts = [-1 if o is None else len(o) for o in header_objects(rec_path, idx_path)]
        usable = [i for i, n in enumerate(counts) if n > 0]
        self.num_empty, self.source_records = sum(n == 0 for n in counts), len(counts)
        if not usable:
            raise ValueError(f"{rec_path}: none of its {len(counts)} records has an object to train on")
        config = net.data_config
        short = tuple(short) if isinstance(short, (tuple, list)) else short
        if masks:
            transform = MaskedTrainTransform(short, max_size, net, config.mean, config.std, flip_p, net.ashape)
            self.dataset = _SeededMaskedDetections(rec_path, idx_path, usable, transform)
            batchify = MaskRCNNTrainBatchify(net, 1)
        else:
            transform = FasterRCNNDefaultTrainTransform(short, max_size, net, mean=config.mean, std=config.std,
                                                        flip_p=flip_p, ashape=net.ashape, multi_stage=True)
            self.dataset = _SeededDetections(rec_path, idx_path, usable, transform)
            batchify = FasterRCNNTrainBatchify(net, 1)
        self._start(len(usable), batch_size, rank, world, seed, _KeepLastField(batchify), num_workers)

    def _fields(self, fields):
        return [f[0] if isinstance(f, (list, tuple)) else f for f in fields]


class _KeepLastField:
    """GluonCV's batchify on all but each item's last field (the replaced-record index), passed on as a list
    (a class, not a closure: worker processes receive it pickled)."""

    def __init__(self, batchify):
        self.batchify = batchify

    def __call__(self, items):
        return (*self.batchify([item[:-1] for item in items]), [item[-1] for item in items])
