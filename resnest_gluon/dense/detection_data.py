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

from recordio_tools.detection import parse_objects

from ..data.records import CorruptRecordError, RecordImageDataset, decode_record

__all__ = ["DetectionRecordDataset", "objects_in_pixels"]


def objects_in_pixels(labels, height, width, where=""):
    """``(N, 6)`` float32 ``x1, y1, x2, y2, class, difficult`` from a record's label vector (normalised corners,
    class first) for an image of ``height`` x ``width``; ``CorruptRecordError`` naming ``where`` when the vector is
    not a detection label."""
    objects, problem = parse_objects(np.atleast_1d(labels).tolist())
    if problem:
        raise CorruptRecordError(f"{where}: {problem}")
    out = np.zeros((len(objects), 6), np.float32)
    if len(objects):
        out[:, 0:4] = objects[:, 1:5] * [width, height, width, height]
        out[:, 4] = objects[:, 0]
        if objects.shape[1] > 5:
            out[:, 5] = objects[:, 5]
    return out


class DetectionRecordDataset(RecordImageDataset):
    """``(RGB uint8 HWC image, (N, 6) objects in pixels)`` for each record of an indexed detection .rec."""

    def __getitem__(self, i):
        payload, where = self.payload(i)
        img, labels = decode_record(payload, where)
        return img, objects_in_pixels(labels, img.shape[0], img.shape[1], where)
