"""Small .rec/.idx files for the data tests, written with MXNet's own RecordIO packer.

Record ``i`` carries label ``i`` (so every sample can be traced back to its record) and an RGB image whose
mean colour is :func:`record_colour` ``(i)`` plus a smooth pattern, so resizing and cropping actually matter.
"""
import os
import struct

import mxnet as mx
import numpy as np


def record_colour(i):
    """The base RGB colour of record ``i`` (distinct for the first few hundred records)."""
    return np.array([(40 + 37 * i) % 200 + 28, (90 + 91 * i) % 200 + 28, (10 + 53 * i) % 200 + 28], np.uint8)


def make_image(i, height, width, seed=0):
    """An RGB uint8 image: record ``i``'s colour plus a smooth +-25 pattern (upsampled noise), deterministic."""
    rng = np.random.RandomState(seed * 100003 + i)
    coarse = rng.uniform(-25, 25, (max(2, height // 8), max(2, width // 8), 3)).astype(np.float32)
    import cv2

    pattern = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_LINEAR)
    img = record_colour(i).astype(np.float32) + pattern
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def random_size(rng, lo=40, hi=120):
    """A size with a varied aspect ratio (between 1:2 and 2:1) within [lo, hi]."""
    h = int(rng.randint(lo, hi + 1))
    ratio = rng.uniform(0.5, 2.0)
    w = int(np.clip(round(h * ratio), lo, hi))
    return h, w


def damaged_jpeg(img):
    """A JPEG of RGB ``img`` whose middle half is overwritten (as by a bad disk block): its start (SOI and tables) is
    intact, OpenCV reports "Corrupt JPEG data" and returns no image."""
    import cv2

    jpg = cv2.imencode(".jpg", img[:, :, ::-1])[1].tobytes()
    n = len(jpg)
    return jpg[:n // 4] + b"\xff" * (n // 2) + jpg[n // 4 + n // 2:]


def make_rec(prefix, n, sizes=None, seed=0, img_fmt=".png", quality=95, with_idx=True, corrupt=(), damaged=(),
             empty=()):
    """Writes ``prefix.rec`` (and ``prefix.idx`` unless ``with_idx=False``) holding ``n`` records.

    ``sizes``: list of (h, w) per record, or None for random sizes in 40..120 px. ``corrupt``: indices of records
    whose payload is replaced by bytes that are not an image (the header and label stay valid); ``damaged``: by a
    :func:`damaged_jpeg`; ``empty``: by nothing (a header alone).
    Returns ``(rec_path, idx_path or None, images)`` with the RGB images as written.
    """
    rng = np.random.RandomState(seed)
    rec_path, idx_path = prefix + ".rec", prefix + ".idx"
    os.makedirs(os.path.dirname(os.path.abspath(rec_path)), exist_ok=True)
    writer = (mx.recordio.MXIndexedRecordIO(idx_path, rec_path, "w") if with_idx
              else mx.recordio.MXRecordIO(rec_path, "w"))
    images = []
    for i in range(n):
        h, w = sizes[i] if sizes is not None else random_size(rng)
        img = make_image(i, h, w, seed)
        images.append(img)
        header = mx.recordio.IRHeader(0, float(i), i, 0)
        if i in corrupt:
            packed = mx.recordio.pack(header, b"not an image" * 8)
        elif i in damaged:
            packed = mx.recordio.pack(header, damaged_jpeg(img))
        elif i in empty:
            packed = mx.recordio.pack(header, b"")
        else:  # pack_img encodes with OpenCV, which expects BGR
            packed = mx.recordio.pack_img(header, img[:, :, ::-1], quality=quality, img_fmt=img_fmt)
        if with_idx:
            writer.write_idx(i, packed)
        else:
            writer.write(packed)
    writer.close()
    return rec_path, (idx_path if with_idx else None), images


def break_framing(rec_path, idx_path, indices, how="magic"):
    """Damages the RecordIO framing of the records at ``indices`` (file order) in place, as a bad disk block would:
    ``how="magic"`` zeroes their magic word, ``"length"`` makes their length field 64 bytes too long. The .idx
    stays right. Returns their byte offsets."""
    with open(idx_path) as f:
        offsets = sorted(int(line.split("\t")[1]) for line in f if line.strip())
    with open(rec_path, "r+b") as f:
        for i in indices:
            f.seek(offsets[i] + (0 if how == "magic" else 4))
            if how == "magic":
                f.write(b"\0\0\0\0")
            else:
                lrec = int.from_bytes(f.read(4), "little")
                f.seek(offsets[i] + 4)
                f.write((lrec + 64).to_bytes(4, "little"))
    return [offsets[i] for i in indices]


def break_header(rec_path, idx_path, indices, how="flag"):
    """Damages the image header of the records at ``indices`` (file order) in place, framing left whole:
    ``how="flag"`` makes it promise 2**30 extra labels, ``"label"`` makes its label NaN. Returns their offsets."""
    with open(idx_path) as f:
        offsets = sorted(int(line.split("\t")[1]) for line in f if line.strip())
    with open(rec_path, "r+b") as f:
        for i in indices:
            f.seek(offsets[i] + 8 + (0 if how == "flag" else 4))  # after the framing: flag (uint32), label (float32)
            f.write((1 << 30).to_bytes(4, "little") if how == "flag" else struct.pack("<f", float("nan")))
    return [offsets[i] for i in indices]
