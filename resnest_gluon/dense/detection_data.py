"""Detection records as training and evaluation read them: images with their boxes in pixels.

``recordio_tools pack-detection`` writes im2rec's detection layout (``[2, 6, (class, x1/w, y1/h, x2/w, y2/h,
difficult)...]``, see :mod:`recordio_tools.detection`); :class:`DetectionRecordDataset` gives each record back as
GluonCV's detection datasets do (``VOCDetection``, ``RecordFileDetection``): an RGB uint8 HWC image and an
``(N, 6)`` float32 array of ``x1, y1, x2, y2, class, difficult`` in the decoded image's pixels, so GluonCV's
transforms (``FasterRCNNDefaultTrainTransform``) take it as it is. Unlike ``RecordFileDetection`` a damaged record
raises :class:`~resnest_gluon.data.records.CorruptRecordError` naming the file, the record and what is wrong, so the
loaders can skip and report it.
"""
import numpy as np

from ..data.records import (IR_HEADER, CorruptRecordError, RecordImageDataset, decode_record, default_idx_path,
                            objects_in_pixels, parse_objects, read_frame, read_idx_entries)
from ..data.batches import ShardedBatches

__all__ = ["DetectionRecordDataset", "DetectionTrainLoader", "header_objects", "check_class_ids", "objects_in_pixels"]


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
                img, objects = super().__getitem__(index)
                break
            except CorruptRecordError:
                bad = index if bad < 0 else bad
        else:
            raise CorruptRecordError(f"{self.rec_path}: no record decodes")
        random.seed(sample_seed)  # GluonCV's transforms draw from Python's and numpy's global generators
        np.random.seed(sample_seed)
        import mxnet as mx

        return (*self.transform(mx.nd.array(img, dtype="uint8"), objects), bad)

    def problem(self, index):
        """``(key, byte offset, reason)`` of the bad record ``index`` (decoded again, in this process)."""
        key = self.keys[index]
        try:
            DetectionRecordDataset.__getitem__(self, index)
            reason = "decodes now (a read error?)"
        except CorruptRecordError as err:
            reason = str(err).split(": ", 1)[-1]
        return key, int(self._record.idx[key]), reason


class DetectionTrainLoader(ShardedBatches):
    """Faster R-CNN training batches from a detection .rec: GluonCV's ``FasterRCNNDefaultTrainTransform`` (random
    short side in ``short``, long side at most ``max_size``, horizontal flip, RPN targets for ``net``'s anchors) and
    ``FasterRCNNTrainBatchify`` (images and targets padded to the batch's largest), over this rank's shard
    (:class:`~resnest_gluon.data.sharding.ShardSampler`: the same number of full batches on every rank).

    Records without objects are left out (GluonCV's RPN targets need a box; ``num_empty``), found from the headers
    at start. ``set_epoch(E, skip=k)`` then a ``for`` loop yields epoch E's batches from batch k on, the same as an
    uninterrupted epoch's; each batch is ``(data, label, rpn_cls_targets, rpn_box_targets, rpn_box_masks)`` with
    ``label`` (B, N, 6): x1, y1, x2, y2, class, difficult, padded with -1."""

    def __init__(self, rec_path, net, idx_path=None, batch_size=1, short=(640, 800), max_size=1333, rank=0, world=1,
                 seed=0, num_workers=0, flip_p=0.5):
        from gluoncv.data.batchify import FasterRCNNTrainBatchify
        from gluoncv.data.transforms.presets.rcnn import FasterRCNNDefaultTrainTransform

        idx_path = idx_path or default_idx_path(rec_path)
        counts = [-1 if o is None else len(o) for o in header_objects(rec_path, idx_path)]
        usable = [i for i, n in enumerate(counts) if n > 0]
        self.num_empty, self.source_records = sum(n == 0 for n in counts), len(counts)
        if not usable:
            raise ValueError(f"{rec_path}: none of its {len(counts)} records has an object to train on")
        config = net.data_config
        transform = FasterRCNNDefaultTrainTransform(
            tuple(short) if isinstance(short, (tuple, list)) else short, max_size, net, mean=config.mean,
            std=config.std, flip_p=flip_p, ashape=net.ashape, multi_stage=True)
        self.dataset = _SeededDetections(rec_path, idx_path, usable, transform)
        self._start(len(usable), batch_size, rank, world, seed, _KeepLastField(FasterRCNNTrainBatchify(net, 1)),
                    num_workers)

    def _fields(self, fields):
        return [f[0] if isinstance(f, (list, tuple)) else f for f in fields]


class _KeepLastField:
    """GluonCV's batchify on all but each item's last field (the replaced-record index), passed on as a list
    (a class, not a closure: worker processes receive it pickled)."""

    def __init__(self, batchify):
        self.batchify = batchify

    def __call__(self, items):
        return (*self.batchify([item[:-1] for item in items]), [item[-1] for item in items])
