"""Reading .rec/.idx files: record counts, one-record decoding, and an indexed dataset of decoded images.

Decoding uses OpenCV directly (``cv2.imdecode``), the same decoder ``mx.io.ImageRecordIter`` and
``mx.image.imdecode`` use here, so worker processes return plain numpy arrays and never touch MXNet's engine.
"""
import math
import os
import struct

import cv2
import mxnet as mx
import numpy as np

from ..exits import plain_reason

__all__ = ["CorruptRecordError", "count_records", "default_idx_path", "decode_record", "RecordImageDataset",
           "header_damage", "iter_records", "max_label", "RECORD_MAGIC", "IR_HEADER", "read_frame", "read_idx_entries",
           "undecodable_reason", "unpack_record", "is_detection_label", "parse_objects", "objects_in_pixels"]

# RecordIO framing (dmlc-core recordio.h): each part of a record is the magic word, a uint32 whose top 3 bits are
# the continuation flag (0 whole record, 1 first, 2 middle, 3 last part; a payload containing the magic word is
# split there) and low 29 bits the part's length, then the part padded to 4 bytes. A record's payload starts with
# the image header packed by ``mx.recordio.pack``: flag (number of extra float labels), label, id, id2.
RECORD_MAGIC = 0xCED7230A
_FRAME = struct.Struct("<II")
IR_HEADER = struct.Struct("IfQQ")


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
    return [key for _, key, _ in read_idx_entries(idx_path)]


def read_idx_entries(idx_path, on_bad_line=None):
    """``[(line number, key, offset), ...]`` of an .idx file, in file order. A malformed line is a ``ValueError``
    naming it, or, with ``on_bad_line``, passed to ``on_bad_line(message)`` and left out."""
    _check_file(idx_path, "record index (.idx)")
    entries = []
    with open(idx_path, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            cols = line.rstrip("\r\n").split("\t")
            try:
                key, offset = int(cols[0]), int(cols[1])
                if len(cols) != 2 or offset < 0:
                    raise ValueError
            except (ValueError, IndexError):
                message = f"{idx_path} line {n}: not an .idx line ('key<TAB>offset'): {line.strip()!r}"
                if on_bad_line is None:
                    raise ValueError(message) from None
                on_bad_line(message)
                continue
            entries.append((n, key, offset))
    return entries


def read_frame(fd, offset, extra=0):
    """``(continuation flag, part length, next part's offset, extra bytes)`` of the RecordIO part at ``offset`` of
    the open file ``fd``, reading only its 8-byte framing and the ``extra`` bytes after it (one ``pread``); None
    when those 8 bytes are not a part's framing. ``next part's offset`` may lie beyond the end of a cut file."""
    data = os.pread(fd, _FRAME.size + extra, offset)
    if len(data) < _FRAME.size:
        return None
    magic, lrec = _FRAME.unpack_from(data)
    if magic != RECORD_MAGIC:
        return None
    length = lrec & ((1 << 29) - 1)
    return lrec >> 29, length, offset + _FRAME.size + ((length + 3) & ~3), data[_FRAME.size:]


def count_records(idx_path):
    """Number of records, counted from the .idx (no need to read the .rec)."""
    return len(read_idx_keys(idx_path))


def header_damage(flag, labels, room):
    """Why an image header whose framing is intact cannot be what a packer wrote, or None: its flag promises more
    extra labels than the ``room`` bytes after it hold, or a label is not a finite number. A bad disk block does
    this; a wrong but whole label (outside ``--num-classes``) is the dataset's problem, not damage."""
    if 4 * flag > room:
        return f"damaged header: it says {flag} labels follow it, the record has room for {room // 4}"
    bad = [v for v in labels if not math.isfinite(v)]
    return f"damaged header: label {bad[0]!r} is not a number" if bad else None


def unpack_record(payload, where=""):
    """``mx.recordio.unpack(payload)`` (header, image bytes), or ``CorruptRecordError`` naming ``where`` when the
    header is cut short or damaged (:func:`header_damage`), instead of numpy's error or a NaN label."""
    if len(payload) < IR_HEADER.size:
        raise CorruptRecordError(f"{where}: record of {len(payload)} bytes is too short for an image header")
    flag, label = IR_HEADER.unpack_from(payload)[:2]
    room = len(payload) - IR_HEADER.size
    labels = np.frombuffer(payload, np.float32, flag, IR_HEADER.size).tolist() if 0 < 4 * flag <= room else [label]
    problem = header_damage(flag, labels, room)
    if problem:
        raise CorruptRecordError(f"{where}: {problem}")
    return mx.recordio.unpack(payload)


# The first bytes of the formats OpenCV decodes (what a record's image should start with).
_SIGNATURES = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"BM", "BMP"), (b"GIF8", "GIF"),
               (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"))


def undecodable_reason(data):
    """Why OpenCV (which gives no reason) returned no image for ``data``, from its size and first bytes: for
    messages naming the record."""
    if not data:
        return "OpenCV: empty payload, 0 bytes"
    kind = next((name for magic, name in _SIGNATURES if data.startswith(magic)), None)
    if kind is None and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        kind = "WebP"
    if kind:
        return f"OpenCV: damaged or truncated {kind} data, {len(data)} bytes"
    return f"OpenCV: no known image format, {len(data)} bytes starting {data[:8].hex(' ')}"


def decode_record(payload, where=""):
    """``(RGB uint8 HWC image, label)`` from a packed record; ``CorruptRecordError`` naming ``where`` otherwise."""
    header, img_bytes = unpack_record(payload, where)
    img = cv2.imdecode(np.frombuffer(img_bytes, np.uint8), cv2.IMREAD_COLOR) if img_bytes else None
    if img is None:
        raise CorruptRecordError(f"{where}: not a decodable image ({undecodable_reason(img_bytes)})")
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
        return decode_record(*self.payload(i))

    def where(self, i):
        """Record ``i`` named for messages: the file, its position and its key."""
        key = self.keys[i]
        offset = self._record.idx.get(key)
        return f"{self.rec_path} record #{i} (key {key}" + (f", offset {offset})" if offset is not None else ")")

    def payload(self, i):
        """``(record i's bytes, where)``, ``where`` naming the record (:meth:`where`) for error messages."""
        where = self.where(i)
        try:
            return self._record.read_idx(self.keys[i]), where
        except mx.base.MXNetError as err:  # its framing is broken; the reader still reads the others by offset
            raise CorruptRecordError(f"{where}: unreadable record framing (MXNet: {plain_reason(err)})") from None


def iter_records(rec_path):
    """Sequential ``(position, payload)`` over a .rec without an index (MXRecordIO.read)."""
    _check_file(rec_path, "record file (.rec)")
    reader = mx.recordio.MXRecordIO(rec_path, "r")
    try:
        pos = 0
        while True:
            try:
                payload = reader.read()
            except mx.base.MXNetError as err:  # no framing to find the next record by: the rest is unreadable
                what = ("not a RecordIO file, or damaged at its start" if pos == 0 else
                        f"record #{pos} is unreadable, the file is damaged there")
                raise ValueError(f"{rec_path}: {what} (MXNet: {plain_reason(err)}); python -m recordio_tools "
                                 f"check {rec_path} lists the damage") from None
            if payload is None:
                return
            yield pos, payload
            pos += 1
    finally:
        reader.close()


def max_label(rec_path):
    """The largest label in a .rec, from the record headers alone (no image decoding): for error messages."""
    labels = []
    for _, payload in iter_records(rec_path):
        try:
            labels.append(float(np.max(unpack_record(payload)[0].label)))
        except CorruptRecordError:
            continue  # a damaged header is not a label
    return max(labels, default=float("nan"))


def is_detection_label(labels):
    """True when a header's labels have im2rec's detection layout: [header width >= 2, object width >= 5, ...]
    with the objects filling the rest exactly."""
    if len(labels) < 2:
        return False
    hw, ow = labels[0], labels[1]
    return (hw == int(hw) and ow == int(ow) and 2 <= hw <= len(labels) and ow >= 5
            and (len(labels) - int(hw)) % int(ow) == 0)


def parse_objects(labels):
    """``(objects array (N, object width), problem or None)`` of a detection label vector."""
    if not is_detection_label(labels):
        return None, "label of %d values is not a detection label [header width, object width, objects...]" \
            % len(labels)
    hw, ow = int(labels[0]), int(labels[1])
    return np.asarray(labels[hw:], np.float64).reshape(-1, ow), None


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
