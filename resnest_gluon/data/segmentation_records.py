"""Semantic-segmentation records: an image and its class mask in one RecordIO record (``recordio_tools
pack-segmentation`` writes them).

Record layout (``mx.recordio.pack``)::

    IRHeader(flag=2, label=[SEGMENTATION_MARK, MASK_IGNORE], id=index, id2=len(image_bytes))
    payload = image_bytes + mask_png_bytes

``image_bytes`` is the encoded image (JPEG, or PNG), ``mask_png_bytes`` a lossless single-channel 8-bit PNG of the
class index of every pixel, ``MASK_IGNORE`` (255) where a pixel does not count. Every record uses this ONE label
convention, whatever the source dataset: Pascal VOC's masks are stored as they are (class index, 255 on object
boundaries), ADE20K's (class index + 1, 0 unlabelled) as value - 1 with 0 -> 255. Hence at most 255 classes.

MXNet's ``ImageRecordIter`` cannot read these records (it would decode the image and ignore the mask); read them
with :class:`SegmentationRecordDataset`. Decoding uses OpenCV (as :func:`~.records.decode_record`), so DataLoader
worker processes never touch MXNet's engine.
"""
import os

import cv2
import mxnet as mx
import numpy as np

from .records import CorruptRecordError, RecordImageDataset, undecodable_reason, unpack_record

__all__ = ["SEGMENTATION_MARK", "MASK_IGNORE", "IGNORE", "SEGMENTATION_LABEL", "encode_segmentation_record",
           "is_segmentation_label", "split_segmentation_payload", "decode_segmentation_record",
           "SegmentationRecordDataset", "read_class_names"]

SEGMENTATION_MARK = -2.0  # first header label: no class label, no detection layout (its header width would be >= 2)
MASK_IGNORE = 255  # mask value of pixels that do not count (VOC's boundaries, ADE20K's unlabelled pixels)
SEGMENTATION_LABEL = (SEGMENTATION_MARK, float(MASK_IGNORE))
# The label of a pixel that does not count in SegmentationRecordDataset.load: the IGNORE = -1 convention of
# resnest_gluon.dense.segmentation_eval, defined again here because resnest_gluon.data must not import dense.
IGNORE = -1

_PNG = b"\x89PNG\r\n\x1a\n"


def encode_segmentation_record(index, image_bytes, mask_png_bytes):
    """The payload of one record (write it with ``MXIndexedRecordIO.write_idx(index, ...)``): header id ``index``,
    ``id2`` the length of ``image_bytes``, then the image bytes and the mask PNG's bytes."""
    header = mx.recordio.IRHeader(2, np.array(SEGMENTATION_LABEL, np.float32), int(index), len(image_bytes))
    return mx.recordio.pack(header, bytes(image_bytes) + bytes(mask_png_bytes))


def is_segmentation_label(labels):
    """True when a header's label vector is a segmentation record's ``[SEGMENTATION_MARK, MASK_IGNORE]``."""
    try:
        values = [float(v) for v in labels]
    except TypeError:  # a scalar label: a classification record
        return False
    return tuple(values) == SEGMENTATION_LABEL


def split_segmentation_payload(payload, where=""):
    """``(header, image bytes, mask bytes)`` of a record, or ``CorruptRecordError`` naming ``where`` when it is not a
    segmentation record or its ``id2`` (the image's length) lies beyond the payload. Decodes nothing."""
    header, rest = unpack_record(payload, where)
    label = header.label
    labels = [float(label)] if np.isscalar(label) else np.asarray(label).ravel().tolist()
    if header.flag <= 0 or not is_segmentation_label(labels):
        raise CorruptRecordError(f"{where}: not a segmentation record (header label {labels}, expected "
                                 f"[{SEGMENTATION_MARK:g}, {MASK_IGNORE}])")
    if header.id2 > len(rest):
        raise CorruptRecordError(f"{where}: damaged segmentation record: its header says the image has "
                                 f"{header.id2} bytes, the record holds {len(rest)} after the header")
    return header, rest[:header.id2], rest[header.id2:]


def decode_segmentation_record(payload, where=""):
    """``(RGB uint8 HWC image, uint8 HW mask)`` of a segmentation record; the mask holds class indices and
    ``MASK_IGNORE`` (255) where a pixel does not count. ``CorruptRecordError`` naming ``where`` when the record is not
    a segmentation record, the image or the mask cannot be decoded, the mask is not one 8-bit channel or its size is
    not the image's."""
    _, image_bytes, mask_bytes = split_segmentation_payload(payload, where)
    img = cv2.imdecode(np.frombuffer(image_bytes, np.uint8), cv2.IMREAD_COLOR) if image_bytes else None
    if img is None:
        raise CorruptRecordError(f"{where}: not a decodable image ({undecodable_reason(image_bytes)})")
    if not mask_bytes:
        raise CorruptRecordError(f"{where}: no mask after the image ({len(image_bytes)} image bytes)")
    if not mask_bytes.startswith(_PNG):
        raise CorruptRecordError(f"{where}: the mask is not a PNG ({undecodable_reason(mask_bytes)})")
    mask = cv2.imdecode(np.frombuffer(mask_bytes, np.uint8), cv2.IMREAD_UNCHANGED)
    if mask is None:
        raise CorruptRecordError(f"{where}: mask not decodable ({undecodable_reason(mask_bytes)})")
    if mask.ndim != 2 or mask.dtype != np.uint8:
        channels = 1 if mask.ndim == 2 else mask.shape[2]
        raise CorruptRecordError(f"{where}: the mask has {channels} channel(s) of {mask.dtype}, not one uint8 "
                                 f"channel of class indices")
    if mask.shape != img.shape[:2]:
        raise CorruptRecordError(f"{where}: mask of {mask.shape[1]}x{mask.shape[0]} pixels for an image of "
                                 f"{img.shape[1]}x{img.shape[0]}")
    return np.ascontiguousarray(img[:, :, ::-1]), mask  # OpenCV decodes BGR


def read_class_names(rec_path):
    """The names in ``PREFIX_classes.txt`` beside ``PREFIX.rec`` (line i = class i), or None without that file."""
    path = os.path.splitext(rec_path)[0] + "_classes.txt"
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\r\n") for line in f if line.strip()]


class SegmentationRecordDataset(RecordImageDataset):
    """Random access to the ``(RGB uint8 HWC image, uint8 HW mask)`` pairs of a segmentation .rec (mask: class
    index per pixel, 255 where a pixel does not count, for records of any source dataset); :meth:`load` gives the
    labels as int64 with ``IGNORE`` (-1) there. ``class_names``: ``PREFIX_classes.txt`` beside the .rec, or None.

    Safe with multiprocess DataLoaders (OpenCV decoding; MXIndexedRecordIO reopens its file in each worker).
    """

    def __init__(self, rec_path, idx_path=None):
        super().__init__(rec_path, idx_path)
        self.class_names = read_class_names(rec_path)

    def __getitem__(self, i):
        return decode_segmentation_record(*self.payload(i))

    def load(self, i):
        """``(RGB uint8 HWC image, int64 (H, W) labels)``, labels = class index, ``IGNORE`` (-1) where not counted."""
        image, mask = self[i]
        labels = mask.astype(np.int64)
        labels[mask == MASK_IGNORE] = IGNORE
        return image, labels

    def labels(self, i):
        """The labels of :meth:`load` without decoding the image (class statistics); ``CorruptRecordError`` naming
        the record when its mask cannot be read."""
        payload, where = self.payload(i)
        _, _, mask_bytes = split_segmentation_payload(payload, where)
        mask = cv2.imdecode(np.frombuffer(mask_bytes, np.uint8), cv2.IMREAD_UNCHANGED) \
            if mask_bytes.startswith(_PNG) else None
        if mask is None or mask.ndim != 2 or mask.dtype != np.uint8:
            raise CorruptRecordError(f"{where}: no readable mask of class indices")
        labels = mask.astype(np.int64)
        labels[mask == MASK_IGNORE] = IGNORE
        return labels

    def name(self, i):
        """Record ``i`` named for messages (:meth:`~.records.RecordImageDataset.where`)."""
        return self.where(i)
