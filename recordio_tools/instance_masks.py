"""Instance masks from the sources ``pack-detection --masks`` reads: Pascal VOC's ``SegmentationObject`` PNGs and
COCO's ``segmentation`` fields (polygons, and RLE in both of COCO's forms). The record layout they go into is
:mod:`resnest_gluon.data.detection_masks`'s.

* VOC ``SegmentationObject/<id>.png``: a palette image whose **index** is the object's number in the annotation
  (value k = the k-th ``<object>`` of the XML, counting from 1), 0 = background, 255 = boundary / not counted (in
  no object's mask). ``SegmentationClass`` is not needed: each object's class comes from the XML.
* COCO: a list of polygons ``[[x1, y1, x2, y2, ...], ...]`` (``iscrowd`` 0; rasterised with pycocotools, as
  ``COCO.annToMask`` does, at the image's size), or RLE ``{"size": [h, w], "counts": [...]}`` (uncompressed,
  ``iscrowd`` 1) or ``{"size": [h, w], "counts": "..."}`` (compressed string). RLE counts are checked before
  decoding (pycocotools' decoder trusts them and writes past its buffer on bad ones) and decoded here.

Problems are :class:`MaskProblem` (an object's mask: the packer drops the object and reports it) or
``images.ImageRejected`` (an image's mask file: the image is skipped and reported).
"""
import math
import numbers

import numpy as np

from . import images, segmentation

__all__ = ["MaskProblem", "VOC_HINT", "voc_instance_values", "coco_mask", "rle_string_counts"]

VOC_HINT = ("VOC's SegmentationObject PNGs are palette images whose index is the object's number in the annotation "
            "(1 = its first <object>), 0 background, 255 boundary")


class MaskProblem(Exception):
    """An object whose mask cannot be made; ``reason`` is a short stable key for the report."""

    def __init__(self, reason, detail):
        super().__init__("%s: %s" % (reason, detail))
        self.reason = reason
        self.detail = detail


def voc_instance_values(path, data, notes, size):
    """``(H, W)`` int64 instance values of a VOC ``SegmentationObject`` PNG, turned like the image by its EXIF
    orientation (its bytes ``data``, the decoder's ``notes``); ``size`` = the image's ``(width, height)``. Raises
    ImageRejected ``mask_missing``, ``mask_unreadable``, ``mask_not_single_channel`` or ``size_mismatch``."""
    im, path = segmentation.read_index_image(path, VOC_HINT)
    im = segmentation.oriented_like_image(im, data, notes)
    if im.size != tuple(size):
        raise images.ImageRejected("size_mismatch", "%s: instance mask of %dx%d pixels for an image of %dx%d"
                                   % ((path,) + tuple(im.size) + tuple(size)))
    return np.asarray(im).astype(np.int64)


def _is_number(v):
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def _polygons_mask(polygons, width, height):
    from pycocotools import mask as mask_utils  # on use: only COCO polygons need it

    for n, poly in enumerate(polygons):
        if not isinstance(poly, (list, tuple)) or not all(_is_number(v) for v in poly):
            raise MaskProblem("bad_polygon", "polygon %d is not a list of finite numbers: %.80r" % (n, poly))
        if len(poly) < 6 or len(poly) % 2:
            raise MaskProblem("bad_polygon", "polygon %d has %d coordinates (needs pairs, at least 3 points)"
                              % (n, len(poly)))
    rles = mask_utils.frPyObjects([[float(v) for v in poly] for poly in polygons], height, width)
    return mask_utils.decode(mask_utils.merge(rles))


def rle_string_counts(counts):
    """The run lengths of a COCO compressed RLE string (pycocotools' ``rleFrString``, in Python); MaskProblem
    ``bad_rle`` for characters outside its alphabet or a string cut inside a number."""
    raw = counts.encode("ascii", "replace") if isinstance(counts, str) else bytes(counts)
    out, p = [], 0
    while p < len(raw):
        x, k, more = 0, 0, True
        while more:
            if p >= len(raw):
                raise MaskProblem("bad_rle", "the counts string ends inside a number")
            c = raw[p] - 48
            if not 0 <= c < 64:
                raise MaskProblem("bad_rle", "character %r at %d is not in COCO's RLE alphabet" % (chr(raw[p]), p))
            x |= (c & 0x1F) << (5 * k)
            more = c & 0x20
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(out) > 2:
            x += out[-2]
        out.append(x)
    return out


def _rle_mask(segm, width, height):
    size = segm.get("size")
    if not (isinstance(size, (list, tuple)) and len(size) == 2 and all(isinstance(v, int) for v in size)):
        raise MaskProblem("bad_rle", "RLE size %r is not [height, width]" % (size,))
    if tuple(size) != (height, width):
        raise MaskProblem("mask_size_mismatch", "RLE of %dx%d pixels for an image of %dx%d"
                          % (size[1], size[0], width, height))
    counts = segm.get("counts")
    if isinstance(counts, (str, bytes)):
        counts = rle_string_counts(counts)
    elif not (isinstance(counts, (list, tuple)) and all(isinstance(v, int) and not isinstance(v, bool)
                                                          for v in counts)):
        raise MaskProblem("bad_rle", "RLE counts are neither a string nor a list of integers: %.80r" % (counts,))
    if any(v < 0 for v in counts) or sum(counts) != width * height:
        raise MaskProblem("bad_rle", "RLE counts (%d runs) add up to %d, not %dx%d = %d pixels%s"
                          % (len(counts), sum(counts), width, height, width * height,
                             ", some negative" if any(v < 0 for v in counts) else ""))
    flat = np.repeat(np.resize(np.array([0, 1], np.uint8), len(counts)), np.asarray(counts, np.int64))
    return np.ascontiguousarray(flat.reshape(width, height).T)  # COCO's RLE runs down the columns


def coco_mask(segm, width, height):
    """``(height, width)`` uint8 mask (1 inside) of a COCO ``segmentation``; MaskProblem ``no_mask`` (none or
    empty), ``bad_polygon``, ``bad_rle``, ``mask_size_mismatch`` (RLE of another size) or ``mask_empty`` (no pixel
    inside the image)."""
    if segm is None or (isinstance(segm, (list, tuple, dict)) and not segm):
        raise MaskProblem("no_mask", "no segmentation")
    if isinstance(segm, (list, tuple)):
        mask = _polygons_mask(segm, width, height)
    elif isinstance(segm, dict):
        mask = _rle_mask(segm, width, height)
    else:
        raise MaskProblem("bad_polygon", "segmentation is neither polygons nor RLE: %.80r" % (segm,))
    if not mask.any():
        raise MaskProblem("mask_empty", "the segmentation covers no pixel of the %dx%d image" % (width, height))
    return mask
