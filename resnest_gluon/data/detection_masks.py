"""Instance masks in detection records (``recordio_tools pack-detection --masks`` writes them): one binary mask per
object, for Mask R-CNN, in the record of an ordinary detection image.

Record layout (``mx.recordio.pack``)::

    IRHeader(flag=2 + 6N, label=[2, 6, (class_id, x1/w, y1/h, x2/w, y2/h, difficult) per object], id=index,
             id2=len(image_bytes))
    payload = image_bytes + mask_bytes

The header label is im2rec's detection layout, exactly as in records packed without masks, and ``image_bytes`` is
the same encoded image (JPEG or PNG): readers that know nothing of masks (GluonCV's ``RecordFileDetection``,
``mx.image.ImageDetIter``, :class:`~resnest_gluon.dense.detection_data.DetectionRecordDataset`) give the same boxes
and the same pixels as from the unmasked pack, because image decoders stop at the image's end marker and ignore the
bytes after it. ``id2`` = the image's byte length says where the masks start, as in segmentation records
(:mod:`.segmentation_records`); detection records without masks have ``id2`` = 0 (im2rec's and our packers' value;
nothing else reads ``id2`` of a detection record).

``mask_bytes`` (little-endian)::

    b"IMSK", uint32 version (1), uint32 N, uint32 W, uint32 H          the image's width and height
    N x (uint32 x, uint32 y, uint32 w, uint32 h, uint32 n)              object i's crop: left, top, size, PNG bytes
    N PNGs, n bytes each                                                object i's crop: a 1-bit grayscale PNG

Object i's mask (1 inside the object) is its PNG pasted at ``(x, y)`` on a zero ``H`` x ``W`` canvas; mask i belongs
to box i of the header, so dropping or clipping boxes at packing keeps them aligned, and N is the header's object
count. The crop is the mask's own bounding rectangle, not the box: VOC's instance masks and its boxes are annotated
separately and disagree by a pixel or more, so cropping to the box would lose mask pixels.

Why this encoding (one cropped 1-bit PNG per object):

* lossless, and overlapping instances (COCO allows them) are independent masks, which one index map cannot hold;
* compact: about 250 bytes for a typical COCO object, against ~200 for pycocotools' compressed RLE and a few
  hundred KB for the image, so the masks add about 1-3 % to a record;
* damage shows: every PNG chunk carries a CRC-32 and its pixels an Adler-32, so ``check`` finds a flipped byte in the
  masks, which RecordIO alone cannot (RLE strings have no checksum, and pycocotools' C decoder trusts their counts:
  damaged counts write past its buffer);
* the reader needs only OpenCV (no pycocotools at training time) and the masks open in any image tool.

:func:`decode_instance_masks` gives ``(N, H, W)`` uint8 masks; :class:`MaskedDetectionRecordDataset` gives
``(image, objects in pixels, masks)``. A damaged mask raises :class:`~.records.CorruptRecordError` naming the record.
"""
import struct

import cv2
import mxnet as mx
import numpy as np

from .records import (CorruptRecordError, RecordImageDataset, is_detection_label, objects_in_pixels,
                      undecodable_reason, unpack_record)
from .segmentation_records import read_class_names

__all__ = ["MASKS_MAGIC", "MASKS_VERSION", "encode_instance_masks", "encode_masked_detection_record",
           "has_instance_masks", "split_masked_detection_record", "instance_mask_crops", "decode_instance_masks",
           "decode_masked_detection_record", "MaskedDetectionRecordDataset"]

MASKS_MAGIC = b"IMSK"
MASKS_VERSION = 1
_HEAD = struct.Struct("<4sIIII")  # magic, version, N, W, H
_CROP = struct.Struct("<IIIII")  # x, y, w, h, PNG bytes
_PNG = b"\x89PNG\r\n\x1a\n"
PNG_COMPRESSION = 9  # masks are small: the best compression costs ~2 ms an object


def encode_instance_masks(masks, width=None, height=None):
    """``mask_bytes`` of the module's layout for ``masks``: an ``(N, H, W)`` array or a list of ``H`` x ``W`` arrays,
    nonzero = inside the object (``width``/``height`` give the size when N = 0). ``ValueError`` for an empty mask (an
    object without pixels has no mask; the packer drops it) or masks of different sizes."""
    masks = list(masks)
    if masks:
        height, width = masks[0].shape[:2]
    if width is None or height is None:
        raise ValueError("no masks: give the image's width and height")
    table, pngs = [], []
    for i, mask in enumerate(masks):
        if mask.shape != (height, width):
            raise ValueError(f"mask {i} is {mask.shape[1]}x{mask.shape[0]}, mask 0 {width}x{height}")
        ys, xs = np.nonzero(mask)
        if not len(ys):
            raise ValueError(f"mask {i} is empty")
        x, y = int(xs.min()), int(ys.min())
        crop = (mask[y: ys.max() + 1, x: xs.max() + 1] != 0).astype(np.uint8)  # 1-bit PNGs keep each byte's low bit
        ok, png = cv2.imencode(".png", crop, [cv2.IMWRITE_PNG_BILEVEL, 1, cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESSION])
        if not ok:
            raise ValueError(f"OpenCV could not encode mask {i}")
        table.append(_CROP.pack(x, y, crop.shape[1], crop.shape[0], len(png)))
        pngs.append(png.tobytes())
    return _HEAD.pack(MASKS_MAGIC, MASKS_VERSION, len(masks), int(width), int(height)) + b"".join(table + pngs)


def encode_masked_detection_record(index, label, image_bytes, mask_bytes):
    """One record (write it with ``MXIndexedRecordIO.write_idx(index, ...)``): header id ``index``, the detection
    ``label`` vector, ``id2`` the length of ``image_bytes``, then the image bytes and ``mask_bytes``."""
    header = mx.recordio.IRHeader(0, np.asarray(label, np.float32), int(index), len(image_bytes))
    return mx.recordio.pack(header, bytes(image_bytes) + bytes(mask_bytes))


def has_instance_masks(header, rest):
    """True when a record (its unpacked ``header`` and the bytes after it) carries instance masks: ``id2`` > 0 and
    the bytes there start with :data:`MASKS_MAGIC`."""
    return 0 < header.id2 <= len(rest) and rest[header.id2: header.id2 + 4] == MASKS_MAGIC


def split_masked_detection_record(record, where=""):
    """``(header, image bytes, mask bytes)`` of a detection record; mask bytes None when it carries no masks
    (``id2`` = 0). ``CorruptRecordError`` naming ``where`` when the header is not a detection label or ``id2`` lies
    beyond the record. Decodes nothing."""
    header, rest = unpack_record(record, where)
    label = header.label
    labels = [float(label)] if np.isscalar(label) else np.asarray(label).ravel().tolist()
    if header.flag <= 0 or not is_detection_label(labels):
        raise CorruptRecordError(f"{where}: not a detection record (header label {labels[:8]}"
                                 f"{' ...' if len(labels) > 8 else ''})")
    if header.id2 == 0:
        return header, rest, None
    if header.id2 > len(rest):
        raise CorruptRecordError(f"{where}: damaged masked detection record: its header says the image has "
                                 f"{header.id2} bytes, the record holds {len(rest)} after the header")
    return header, rest[:header.id2], rest[header.id2:]


def _damaged(where, what):
    return CorruptRecordError(f"{where}: damaged instance masks: {what}")


def instance_mask_crops(mask_bytes, num_objects=None, image_shape=None, where=""):
    """``(H, W, [(x, y, crop uint8 (h, w) of 0/1)...])``: every object's decoded crop, validated (layout, counts,
    crops inside the image, PNGs decodable, one channel, the size the table says, not empty) without building full
    masks. ``num_objects``: the header's object count; ``image_shape``: the decoded image's ``(H, W)``; either must
    match. ``CorruptRecordError`` naming ``where`` on any mismatch."""
    if mask_bytes is None:
        raise CorruptRecordError(f"{where}: no instance masks in this record (header id2 = 0)")
    if len(mask_bytes) < _HEAD.size or mask_bytes[:4] != MASKS_MAGIC:
        raise _damaged(where, f"they do not start with {MASKS_MAGIC!r} ({len(mask_bytes)} bytes starting "
                              f"{bytes(mask_bytes[:8]).hex(' ')})")
    _, version, count, width, height = _HEAD.unpack_from(mask_bytes)
    if version != MASKS_VERSION:
        raise _damaged(where, f"layout version {version}, this reader knows {MASKS_VERSION}")
    if num_objects is not None and count != num_objects:
        raise _damaged(where, f"{count} masks for the header's {num_objects} objects")
    if image_shape is not None and (height, width) != tuple(image_shape[:2]):
        raise _damaged(where, f"masks of {width}x{height} pixels for an image of {image_shape[1]}x{image_shape[0]}")
    end_table = _HEAD.size + count * _CROP.size
    if end_table > len(mask_bytes):
        raise _damaged(where, f"{count} masks need a {count * _CROP.size}-byte table, {len(mask_bytes)} bytes in all")
    table = [_CROP.unpack_from(mask_bytes, _HEAD.size + i * _CROP.size) for i in range(count)]
    if end_table + sum(t[4] for t in table) != len(mask_bytes):
        raise _damaged(where, f"the table's PNG sizes add up to {sum(t[4] for t in table)} bytes, "
                              f"{len(mask_bytes) - end_table} follow it")
    crops, offset = [], end_table
    for i, (x, y, w, h, n) in enumerate(table):
        png = bytes(mask_bytes[offset: offset + n])
        offset += n
        if not w or not h or x + w > width or y + h > height:
            raise _damaged(where, f"mask {i}: crop {w}x{h} at ({x}, {y}) is not inside the {width}x{height} image")
        crop = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED) if png.startswith(_PNG) else None
        if crop is None:
            raise _damaged(where, f"mask {i} is not a decodable PNG ({undecodable_reason(png)})")
        if crop.ndim != 2 or crop.dtype != np.uint8 or crop.shape != (h, w):
            raise _damaged(where, f"mask {i}: a {crop.shape[1]}x{crop.shape[0]} PNG of "
                                  f"{1 if crop.ndim == 2 else crop.shape[2]} {crop.dtype} channel(s), the table says "
                                  f"{w}x{h}, one channel")
        crop = (crop != 0).view(np.uint8)
        if not crop.any():
            raise _damaged(where, f"mask {i} is empty")
        crops.append((x, y, crop))
    return height, width, crops


def decode_instance_masks(mask_bytes, num_objects=None, image_shape=None, where=""):
    """``(N, H, W)`` uint8 masks (1 inside object i) from a record's ``mask_bytes``, mask i aligned with box i of
    the header; ``num_objects``/``image_shape`` as :func:`instance_mask_crops` (pass them: they catch masks that do
    not belong to the record). ``CorruptRecordError`` naming ``where`` when the masks are damaged."""
    height, width, crops = instance_mask_crops(mask_bytes, num_objects, image_shape, where)
    masks = np.zeros((len(crops), height, width), np.uint8)
    for i, (x, y, crop) in enumerate(crops):
        masks[i, y: y + crop.shape[0], x: x + crop.shape[1]] = crop
    return masks


def decode_masked_detection_record(record, where=""):
    """``(RGB uint8 HWC image, label vector, (N, H, W) uint8 masks)`` of a masked detection record, the masks at the
    decoded image's size and aligned with the label's boxes. ``CorruptRecordError`` naming ``where`` when the record
    carries no masks, or its image or masks cannot be decoded or do not match (count, size)."""
    header, image_bytes, mask_bytes = split_masked_detection_record(record, where)
    img = cv2.imdecode(np.frombuffer(image_bytes, np.uint8), cv2.IMREAD_COLOR) if image_bytes else None
    if img is None:
        raise CorruptRecordError(f"{where}: not a decodable image ({undecodable_reason(image_bytes)})")
    labels = np.asarray(header.label, np.float32)
    count = (len(labels) - int(labels[0])) // int(labels[1])
    masks = decode_instance_masks(mask_bytes, count, img.shape[:2], where)
    return np.ascontiguousarray(img[:, :, ::-1]), labels, masks  # OpenCV decodes BGR


class MaskedDetectionRecordDataset(RecordImageDataset):
    """``(RGB uint8 HWC image, (N, 6) float32 objects, (N, H, W) uint8 masks)`` for each record of an indexed .rec
    that ``pack-detection --masks`` wrote: objects as
    :class:`~resnest_gluon.dense.detection_data.DetectionRecordDataset` gives them (``x1, y1, x2, y2, class,
    difficult`` in the decoded image's pixels), mask i (1 inside the object) for object i. ``class_names``:
    ``PREFIX_classes.txt`` beside the .rec, or None. A damaged record raises
    :class:`~.records.CorruptRecordError` naming it.

    Safe with multiprocess DataLoaders (OpenCV decoding; MXIndexedRecordIO reopens its file in each worker).
    """

    def __init__(self, rec_path, idx_path=None):
        super().__init__(rec_path, idx_path)
        self.class_names = read_class_names(rec_path)

    def __getitem__(self, i):
        payload, where = self.payload(i)
        img, labels, masks = decode_masked_detection_record(payload, where)
        return img, objects_in_pixels(labels, img.shape[0], img.shape[1], where), masks

    def masks(self, i):
        """Record ``i``'s ``(N, H, W)`` masks without decoding its image (their size is stored with them)."""
        payload, where = self.payload(i)
        header, _, mask_bytes = split_masked_detection_record(payload, where)
        labels = np.asarray(header.label, np.float32)
        return decode_instance_masks(mask_bytes, (len(labels) - int(labels[0])) // int(labels[1]), None, where)
