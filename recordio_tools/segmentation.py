"""Pack semantic-segmentation datasets (Pascal VOC or ADE20K) into ``PREFIX.rec`` + ``PREFIX.idx``: each record an
image and its class mask (``resnest_gluon.data.segmentation_records``), read by ``SegmentationRecordDataset``.

Label conventions (the trap of these datasets; the records store ONE of them whatever the source):

* Pascal VOC ``SegmentationClass/<id>.png``: palette ("P") images whose palette **index** is the class (0 =
  background, 1..20), 255 on object boundaries (not counted). Stored as they are. An RGB rendering of these masks
  (their colours, e.g. after a conversion that kept the look and lost the indices) holds no class indices and is
  skipped.
* ADE20K ``annotations/<split>/<name>.png``: single-channel, value = class + 1, 0 = unlabelled (not counted).
  Stored as value - 1, with 0 -> 255.
* Records: class index per pixel, ``MASK_IGNORE`` = 255 where a pixel does not count; so at most 255 classes.

Images are decoded, converted and (``--resize``) resized as ``pack`` does; the mask follows with nearest-neighbour
resizing, so it gains no new values. The mask is rotated like the image when the image carries an EXIF orientation.

Bad input never shifts anything: each pair is skipped and reported with a reason: the image's own reasons
(``missing``, ``not_an_image``, ``corrupt``, ``truncated``, ...; see ``images.py``), ``mask_missing``,
``mask_unreadable``, ``mask_not_single_channel``, ``size_mismatch`` (mask and image sizes differ) and
``unknown_class`` (a mask value the class names do not cover).
"""
import contextlib
import io
import logging
import os
import time
import warnings
from dataclasses import asdict, dataclass

import cv2
import mxnet as mx
import numpy as np
from PIL import Image
from tqdm import tqdm

from resnest_gluon.data.segmentation_records import MASK_IGNORE, encode_segmentation_record
from resnest_gluon.data.strict_images import load_strict

from . import images, listing, packing
from .atomic import atomic_files
from .report import PackReport

log = logging.getLogger(__name__)

VOC_CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
               "tvmonitor")
ADE20K_CLASSES_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ade20k_classes.txt")  # GluonCV's 150
MAX_CLASSES = MASK_IGNORE  # class indices 0..254; 255 marks pixels that do not count
_ADE_SPLITS = {"train": "training", "val": "validation", "training": "training", "validation": "validation"}

# format -> how a source mask value becomes a class: class = value + offset; ``not_counted`` is the value ignored
CONVENTIONS = {
    "voc": {"offset": 0, "not_counted": 255,
            "source": "mask value = class index (palette index of SegmentationClass PNGs), 255 = not counted"},
    "ade20k": {"offset": -1, "not_counted": 0,
               "source": "mask value = class index + 1, 0 = unlabelled (not counted)"},
}
RECORD_CONVENTION = "record mask: class index per pixel (single-channel 8-bit PNG), 255 = not counted"

_ORIENTATION = {2: Image.FLIP_LEFT_RIGHT, 3: Image.ROTATE_180, 4: Image.FLIP_TOP_BOTTOM, 5: Image.TRANSPOSE,
                6: Image.ROTATE_270, 7: Image.TRANSVERSE, 8: Image.ROTATE_90}  # as ImageOps.exif_transpose


@dataclass
class SegEntry:
    index: int
    path: str  # image, relative to the source folder
    mask: str  # mask, relative to the source folder
    fmt: str  # "voc" or "ade20k": the mask's convention
    num_classes: int


class SegmentationReport(PackReport):
    def __init__(self, listed, options=None):
        super().__init__(listed, options)
        self.classes = []
        self.fmt = None
        self.pixels = np.zeros(256, np.int64)  # stored mask values: class indices, 255 not counted

    def add_pixels(self, counts):
        self.pixels += counts

    def class_pixels(self):
        return {name: int(self.pixels[i]) for i, name in enumerate(self.classes)}

    def as_dict(self):
        d = super().as_dict()
        d.update({"format": self.fmt, "classes": self.classes, "class_pixels": self.class_pixels(),
                  "ignored_pixels": int(self.pixels[MASK_IGNORE]), "total_pixels": int(self.pixels.sum()),
                  "label_convention": {"source": CONVENTIONS[self.fmt]["source"] if self.fmt else None,
                                       "record": RECORD_CONVENTION, "ignore_value": MASK_IGNORE}})
        return d

    def summary(self):
        lines = super().summary()
        total = int(self.pixels.sum())
        present = [(n, int(self.pixels[i])) for i, n in enumerate(self.classes) if self.pixels[i]]
        lines.insert(1, "%d classes (%d present in the masks); %.1f%% of %d pixels not counted (255)"
                     % (len(self.classes), len(present), 100.0 * self.pixels[MASK_IGNORE] / max(total, 1), total))
        if self.fmt:
            lines.insert(2, "labels: source %s: %s; %s" % (self.fmt, CONVENTIONS[self.fmt]["source"],
                                                          RECORD_CONVENTION))
        return lines


# ---------------------------------------------------------------------------------------------------- sources
def read_voc(source, split="train"):
    """``[(image path, mask path)]`` relative to ``source``, in the order of ``ImageSets/Segmentation/SPLIT.txt``."""
    path = os.path.join(source, "ImageSets", "Segmentation", split + ".txt")
    if not os.path.isfile(path):
        raise FileNotFoundError("%s: no split list ImageSets/Segmentation/%s.txt (not a Pascal VOC folder, or "
                                "another --split)" % (source, split))
    with open(path, encoding="utf-8") as f:
        ids = [line.split()[0] for line in f if line.strip()]
    return [(os.path.join("JPEGImages", i + ".jpg"), os.path.join("SegmentationClass", i + ".png")) for i in ids]


def read_ade20k(source, split="train"):
    """``[(image path, mask path)]`` relative to ``source``: every ``images/<folder>/*.jpg`` and every mask of
    ``annotations/<folder>/`` (a mask without its image is listed too, and reported), sorted by name; ``split``
    train/val or the folder names training/validation."""
    folder = _ADE_SPLITS.get(split)
    if folder is None:
        raise ValueError("--split for ade20k must be train or val (or training/validation), got %r" % split)
    image_dir, mask_dir = os.path.join("images", folder), os.path.join("annotations", folder)
    if not os.path.isdir(os.path.join(source, image_dir)):
        raise FileNotFoundError("%s: no folder %s (not an ADEChallengeData2016 folder)" % (source, image_dir))
    stems = {os.path.splitext(n)[0] for n in os.listdir(os.path.join(source, image_dir))
             if n.lower().endswith(".jpg")}
    if os.path.isdir(os.path.join(source, mask_dir)):
        stems |= {os.path.splitext(n)[0] for n in os.listdir(os.path.join(source, mask_dir))
                  if n.lower().endswith(".png")}
    return [(os.path.join(image_dir, s + ".jpg"), os.path.join(mask_dir, s + ".png")) for s in sorted(stems)]


def default_classes(source, fmt):
    """``(names, where from)``: ``SOURCE/classes.txt`` when present, else VOC's 21 or ADE20K's 150 names."""
    own = os.path.join(source, "classes.txt")
    if os.path.isfile(own):
        return listing.read_classes(own), own
    if fmt == "voc":
        return list(VOC_CLASSES), "the 21 Pascal VOC classes"
    return listing.read_classes(ADE20K_CLASSES_FILE), "the 150 ADE20K classes (GluonCV's list)"


# ---------------------------------------------------------------------------------------------------- worker
def _read_mask(entry):
    """The source mask as a PIL image; raises ImageRejected (mask_missing, mask_unreadable,
    mask_not_single_channel)."""
    hint = ("VOC's SegmentationClass PNGs are palette images whose index is the class; an RGB rendering of them "
            "(their colours) cannot be packed, use the original palette PNGs" if entry.fmt == "voc" else
            "ADE20K's annotations are single-channel images of class + 1")
    return read_index_image(os.path.join(packing._ROOT, entry.mask), hint)


def read_index_image(path, hint):
    """``(PIL image, path)`` of a single-channel image of indices (a class or instance mask); raises ImageRejected
    ``mask_missing``, ``mask_unreadable`` or ``mask_not_single_channel`` (``hint`` says what was expected)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise images.ImageRejected("mask_missing", "no such mask file: %s" % path) from None
    except OSError as e:
        raise images.ImageRejected("mask_unreadable", "%s: %s" % (path, e)) from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            im = Image.open(io.BytesIO(data))
            load_strict(im)
    except Exception as e:
        raise images.ImageRejected("mask_unreadable", "%s: not a readable mask image (%s: %s)"
                                   % (path, type(e).__name__, e)) from None
    if im.mode not in ("P", "L", "I", "I;16", "I;16L", "I;16B", "1"):
        raise images.ImageRejected("mask_not_single_channel", "%s: a %s image with %d channels, not a mask of "
                                   "indices (%s)" % (path, im.mode, len(im.getbands()), hint))
    return im, path


def oriented_like_image(mask_im, data, notes):
    """``mask_im`` turned as the image (its bytes ``data``) was by its EXIF orientation (``"exif_rotated"`` in the
    decoder's ``notes``)."""
    if "exif_rotated" in notes:
        method = _ORIENTATION.get(_orientation(data))
        if method is not None:
            return mask_im.transpose(method)
    return mask_im


def exif_transposes(data, notes):
    """True when the image's EXIF orientation swaps its width and height."""
    return "exif_rotated" in notes and _orientation(data) in (5, 6, 7, 8)


def _orientation(data):
    with contextlib.suppress(Exception):
        return Image.open(io.BytesIO(data)).getexif().get(0x0112, 1)
    return 1


def _class_mask(values, entry, path):
    """Source mask values (int64) -> uint8 record mask (class index, 255 not counted); raises ImageRejected
    ``unknown_class`` for values the class names do not cover."""
    conv = CONVENTIONS[entry.fmt]
    counted = values != conv["not_counted"]
    classes = values + conv["offset"]
    bad = counted & ((classes < 0) | (classes >= entry.num_classes))
    if bad.any():
        found = np.unique(values[bad])
        shown = ", ".join(str(int(v)) for v in found[:8]) + (" ..." if len(found) > 8 else "")
        if entry.fmt == "ade20k":
            what = "mask value(s) %s, i.e. class(es) %s (ADE20K: mask value = class + 1, 0 = unlabelled)" % (
                shown, ", ".join(str(int(v) - 1) for v in found[:8]))
        else:
            what = "mask value(s) %s (VOC: mask value = class index, 255 = not counted)" % shown
        raise images.ImageRejected("unknown_class", "%s: %s in %d pixel(s), but the %d class names cover classes "
                                   "0-%d" % (path, what, int(bad.sum()), entry.num_classes, entry.num_classes - 1))
    return np.where(counted, classes, MASK_IGNORE).astype(np.uint8)


def _encode_image(rgb, options):
    png = options.encoding.lower() == ".png"
    params = ([cv2.IMWRITE_PNG_COMPRESSION, options.png_compression] if png else
              [cv2.IMWRITE_JPEG_QUALITY, options.quality])
    ok, buf = cv2.imencode(".png" if png else ".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise images.ImageRejected("error", "OpenCV could not encode the image")
    return buf.tobytes()


def encode_segmentation(entry):
    """``("ok", index, record, notes, pixel counts per stored mask value (256,))`` or ``("skip", index, reason,
    detail)``; never raises for bad input."""
    try:
        data, rgb, notes, info = packing.read_and_decode(entry)
        mask_im, mask_path = _read_mask(entry)
        width, height = info["size"]
        if "exif_rotated" in notes:  # the mask follows the image's EXIF orientation
            method = _ORIENTATION.get(_orientation(data))
            if method is not None:
                mask_im = mask_im.transpose(method)
                if method in (Image.TRANSPOSE, Image.ROTATE_270, Image.TRANSVERSE, Image.ROTATE_90):
                    width, height = height, width
        if mask_im.size != (width, height):
            raise images.ImageRejected("size_mismatch", "%s: mask of %dx%d pixels for an image of %dx%d (%s)"
                                       % ((mask_path,) + tuple(mask_im.size) + (width, height, entry.path)))
        mask = _class_mask(np.asarray(mask_im).astype(np.int64), entry, mask_path)
        if mask.shape != rgb.shape[:2]:  # decoded smaller (--max-pixels): the mask follows, nearest neighbour
            mask = cv2.resize(mask, (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_NEAREST)
        rgb = images.resize_shorter(rgb, packing._OPTIONS.resize)
        if mask.shape != rgb.shape[:2]:
            mask = cv2.resize(mask, (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_NEAREST)
        ok, mask_png = cv2.imencode(".png", mask, [cv2.IMWRITE_PNG_COMPRESSION, packing._OPTIONS.png_compression])
        if not ok:
            raise images.ImageRejected("error", "OpenCV could not encode the mask")
        record = encode_segmentation_record(entry.index, _encode_image(rgb, packing._OPTIONS), mask_png.tobytes())
        return "ok", entry.index, record, notes, np.bincount(mask.ravel(), minlength=256).astype(np.int64)
    except images.ImageRejected as e:
        return "skip", entry.index, e.reason, e.detail
    except Exception as e:  # one bad file must not stop the pack
        return "skip", entry.index, "error", "%s: %s" % (type(e).__name__, e)


# ---------------------------------------------------------------------------------------------------- pack
def pack_segmentation(source, prefix, fmt, split="train", classes_file=None, options=packing.PackOptions(),
                      num_workers=1, progress=True):
    """Packs a Pascal VOC folder (``fmt="voc"``: ``JPEGImages/``, ``SegmentationClass/``,
    ``ImageSets/Segmentation/SPLIT.txt``) or an ADEChallengeData2016 folder (``fmt="ade20k"``: ``images/`` and
    ``annotations/`` ``training|validation``) into ``PREFIX.rec``/``.idx``/``_classes.txt``/``.report.json`` (all
    replaced together, or none); returns the report. Masks are stored in one convention (module docstring): class
    index, 255 not counted (VOC as is; ADE20K value - 1, 0 -> 255). Class names: ``classes_file``, else
    ``SOURCE/classes.txt``, else the dataset's standard list."""
    options.validate()
    if options.pass_through:
        raise ValueError("pack-segmentation re-encodes every image (no --pass-through)")
    if fmt not in CONVENTIONS:
        raise ValueError("--format must be voc or ade20k, got %r" % fmt)
    if not os.path.isdir(source):
        raise FileNotFoundError("%s: no such %s folder" % (source, "Pascal VOC" if fmt == "voc" else "ADE20K"))
    pairs = read_voc(source, split) if fmt == "voc" else read_ade20k(source, split)
    if classes_file:
        classes, classes_from = listing.read_classes(classes_file), classes_file
    else:
        classes, classes_from = default_classes(source, fmt)
    if not classes:
        raise packing.PackError("%s: no class names" % classes_from)
    if len(classes) > MAX_CLASSES:
        raise packing.PackError("%s: %d classes; a record's mask holds class indices 0-%d and %d for pixels that do "
                                "not count, so at most %d classes" % (classes_from, len(classes), MAX_CLASSES - 1,
                                                                      MASK_IGNORE, MAX_CLASSES))
    entries = [SegEntry(i, image, mask, fmt, len(classes)) for i, (image, mask) in enumerate(pairs)]
    if not entries:
        raise packing.PackError("%s: no images for split %r (%s layout)" % (source, split, fmt))
    report = SegmentationReport(len(entries), dict(asdict(options), num_workers=num_workers, source=source,
                                                   format=fmt, split=split, classes_file=classes_from))
    report.classes, report.fmt = list(classes), fmt
    by_index = {e.index: e for e in entries}
    paths = [prefix + ".rec", prefix + ".idx", listing.classes_path(prefix), prefix + ".report.json"]
    start = time.time()
    with atomic_files(*paths) as (tmp_rec, tmp_idx, tmp_classes, tmp_report):
        writer = mx.recordio.MXIndexedRecordIO(tmp_idx, tmp_rec, "w")
        try:
            bar = tqdm(total=len(entries), unit="img", desc="pack " + os.path.basename(prefix),
                       disable=not progress, smoothing=0.1)
            results = packing._results(entries, source, options, num_workers, encode_segmentation)
            with bar, contextlib.closing(results):  # closing terminates the worker pool on any exception
                for result in results:
                    entry = by_index[result[1]]
                    if result[0] == "ok":
                        writer.write_idx(result[1], result[2])
                        report.add_packed(result[3], False)
                        report.add_pixels(result[4])
                    else:
                        report.add_skipped(result[1], entry.path, result[2], "%s (mask %s)"
                                           % (result[3], entry.mask))
                    bar.update(1)
        finally:
            writer.close()
        report.seconds = time.time() - start
        if report.packed == 0:
            raise packing.PackError("nothing packed from %s (%d images, all skipped: %s)"
                                    % (source, len(entries), report.skip_counts()))
        with open(tmp_classes, "w", encoding="utf-8") as f:
            f.writelines(name + "\n" for name in classes)
        report.dump(tmp_report)
    log.info("packed %d image/mask pairs in %.1f s", report.packed, report.seconds)
    return report


__all__ = ["VOC_CLASSES", "ADE20K_CLASSES_FILE", "CONVENTIONS", "SegmentationReport", "read_voc", "read_ade20k",
           "default_classes", "encode_segmentation", "pack_segmentation"]
