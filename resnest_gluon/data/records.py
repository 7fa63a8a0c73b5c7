"""Reading .rec/.idx files: record counts, one-record decoding, and an indexed dataset of decoded images.

Decoding uses OpenCV directly (``cv2.imdecode``), the same decoder ``mx.io.ImageRecordIter`` and
``mx.image.imdecode`` use here, so worker processes return plain numpy arrays and never touch MXNet's engine.
"""
import os

import cv2
import mxnet as mx
import numpy as np

__all__ = ["CorruptRecordError", "count_records", "default_idx_path", "decode_record", "RecordImageDataset",
           "iter_records", "max_label"]


class CorruptRecordError(ValueError):
    """A record whose payload is not a decodable image (or not a record at all)."""


def default_idx_path(rec_path):
    """``foo.rec`` -> ``foo.idx`` (im2rec's naming), or None when that file does not exist."""
    idx = os.path.splitext(rec_path)[0] + ".idx"
    return idx if os.path.isfile(idx) else None


def _check_file(path, what):
    if path is None or not os.path.isfile(path):
        raise FileNotFoundError(f"{what} not found: {path!r}")


def read_idx_keys(idx_path):
    """The record keys listed in an .idx file (one ``key\\toffset`` per line), in file order."""
    _check_file(idx_path, "record index (.idx)")
    keys = []
    with open(idx_path) as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    keys.append(int(line.split("\t")[0]))
                except ValueError:
                    raise ValueError(f"{idx_path}:{n}: not an .idx line ('key<TAB>offset'): {line!r}") from None
    return keys


def count_records(idx_path):
    """Number of records, counted from the .idx (no need to read the .rec)."""
    return len(read_idx_keys(idx_path))


def decode_record(payload, where=""):
    """``(RGB uint8 HWC image, label)`` from a packed record; ``CorruptRecordError`` naming ``where`` otherwise."""
    try:
        header, img_bytes = mx.recordio.unpack(payload)
    except Exception as err:  # a truncated header
        raise CorruptRecordError(f"{where}: not a valid record ({err})") from None
    img = cv2.imdecode(np.frombuffer(img_bytes, np.uint8), cv2.IMREAD_COLOR) if img_bytes else None
    if img is None:
        raise CorruptRecordError(f"{where}: payload of {len(img_bytes)} bytes is not a decodable image")
    label = header.label
    label = np.float32(label) if np.isscalar(label) else np.asarray(label, np.float32)
    return img[:, :, ::-1], label  # OpenCV decodes BGR


class RecordImageDataset(mx.gluon.data.Dataset):
    """Random access to decoded ``(RGB uint8 HWC, label)`` pairs of an indexed .rec (``len`` = records in .idx).

    Safe with multiprocess DataLoaders: MXIndexedRecordIO reopens its file in each worker process.
    """

    def __init__(self, rec_path, idx_path=None):
        idx_path = idx_path or default_idx_path(rec_path)
        _check_file(rec_path, "record file (.rec)")
        if idx_path is None:
            raise FileNotFoundError(f"{rec_path}: no .idx next to it and none given (idx_path=)")
        self.rec_path, self.idx_path = rec_path, idx_path
        self._record = mx.recordio.MXIndexedRecordIO(idx_path, rec_path, "r")
        self.keys = self._record.keys

    def __len__(self):
        return len(self.keys)

    def __getitem__(self, i):
        payload = self._record.read_idx(self.keys[i])
        return decode_record(payload, f"{self.rec_path} record #{i} (key {self.keys[i]})")


def iter_records(rec_path):
    """Sequential ``(position, payload)`` over a .rec without an index (MXRecordIO.read)."""
    _check_file(rec_path, "record file (.rec)")
    reader = mx.recordio.MXRecordIO(rec_path, "r")
    try:
        pos = 0
        while True:
            payload = reader.read()
            if payload is None:
                return
            yield pos, payload
            pos += 1
    finally:
        reader.close()


def max_label(rec_path):
    """The largest label in a .rec, from the record headers alone (no image decoding): for error messages."""
    return max(float(np.max(mx.recordio.unpack(payload)[0].label)) for _, payload in iter_records(rec_path))
