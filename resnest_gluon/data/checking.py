"""Verify a ``.rec`` (and its ``.idx``): framing, headers, labels, image decoding and index offsets.

Every problem is reported with the record's position in the file, its header id (the list index) and its
byte offset, so a broken dataset can be repaired (or re-packed) instead of failing mid-epoch. The record
framing is read by MXNet itself; only the ``.idx`` text is parsed here, to give line-level errors instead of
the ``ValueError`` ``MXIndexedRecordIO`` would raise.

Segmentation records (``segmentation_records``: an image and its class mask, detected by their header label
``[-2, 255]``) have both decoded: an undecodable mask, a mask whose size is not its image's and mask values at or
above the class count (``--num-classes``, else ``PREFIX_classes.txt``'s) are problems; 255 marks pixels that do not
count, in every segmentation record whatever dataset it came from.

Masked detection records (``detection_masks``: a detection label, header ``id2`` = the image's byte length, instance
masks after the image; decided by the file's first record, as the label kind is) have their masks decoded too: masks
that do not decode, whose count is not the record's box count or whose size is not the image's, and a record without
masks in a file whose first record has them, are problems; ``inspect`` shows how many masks it decoded.

Limitation: RecordIO has no checksums. Flipped bytes inside a JPEG's entropy-coded data usually still decode
(into wrong pixels) and cannot be detected; corrupt framing, headers, JPEG markers and truncation can.
"""
import bisect
import functools
import io
import logging
import multiprocessing
import os
import random
import signal
import time
import warnings
from collections import Counter

import mxnet as mx
from PIL import Image
from tqdm import tqdm

from ..exits import plain_reason
from .detection_masks import instance_mask_crops, split_masked_detection_record
from .record_reader import RecordReader
from .records import (IR_HEADER, CorruptRecordError, is_detection_label, parse_objects, read_idx_entries,
                      unpack_record)
from .segmentation_records import (MASK_IGNORE, decode_segmentation_record, is_segmentation_label,
                                   split_segmentation_payload)
from .strict_images import load_strict


log = logging.getLogger(__name__)

_IR_SIZE = IR_HEADER.size  # IRHeader as packed by mx.recordio.pack


def _decode(item):
    """``(position, payload)`` -> ``(position, error or None, (w, h), mode, format)``; PIL is stricter than
    OpenCV about truncated JPEGs, which OpenCV silently fills with grey."""
    pos, payload = item
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            im = Image.open(io.BytesIO(payload))
            load_strict(im)
        return pos, None, im.size, im.mode, im.format
    except Exception as e:
        return pos, "cannot decode image (PIL: %s)" % (plain_reason(e) or type(e).__name__), None, None, None


def _decode_for_training(item):
    """:func:`_decode`, and OpenCV (MXNet's decoder: ``ImageRecordIter`` dies on what it rejects) must decode it too."""
    import cv2
    import numpy as np

    result = _decode(item)
    if result[1] is None and cv2.imdecode(np.frombuffer(item[1], np.uint8), cv2.IMREAD_COLOR) is None:
        return item[0], "cannot decode image: OpenCV (MXNet's decoder) rejects it", None, None, None
    return result


def _decode_segmentation(item):
    """``(position, record bytes)`` of a segmentation record -> :func:`_decode`'s result for its image (PIL, strict)
    plus the pixel count of every mask value (256,), or None when the image or the mask cannot be decoded. OpenCV
    decodes both (as ``SegmentationRecordDataset`` does): undecodable mask, wrong mask size, etc. are errors."""
    import numpy as np

    position, buf = item
    try:
        _, image_bytes, _ = split_segmentation_payload(buf)
        result = _decode((position, image_bytes))
        if result[1] is not None:
            return result + (None,)
        _, mask = decode_segmentation_record(buf)
    except CorruptRecordError as e:
        message = str(e)[2:] if str(e).startswith(": ") else str(e)
        return position, "cannot decode segmentation record: %s" % message, None, None, None, None
    return result + (np.bincount(mask.ravel(), minlength=256),)


def _decode_masked_detection(item):
    """``(position, record bytes)`` of a masked detection record -> :func:`_decode`'s result for its image (PIL,
    strict), None, and the number of instance masks; an error when the image or the masks cannot be decoded. OpenCV
    decodes the image and every mask (as ``MaskedDetectionRecordDataset`` does), checked against the header's box
    count and the image's size."""
    import cv2
    import numpy as np

    position, buf = item
    try:
        header, image_bytes, mask_bytes = split_masked_detection_record(buf)
        result = _decode((position, image_bytes))
        if result[1] is not None:
            return result + (None, None)
        img = cv2.imdecode(np.frombuffer(image_bytes, np.uint8), cv2.IMREAD_COLOR)
        if img is None:
            return position, "cannot decode image: OpenCV rejects it", None, None, None, None, None
        labels = np.asarray(header.label, np.float32)
        _, _, crops = instance_mask_crops(mask_bytes, (len(labels) - int(labels[0])) // int(labels[1]),
                                          img.shape[:2])
    except CorruptRecordError as e:
        message = str(e)[2:] if str(e).startswith(": ") else str(e)
        return position, "cannot decode masked detection record: %s" % message, None, None, None, None, None
    return result + (None, len(crops))


_DECODERS = {"segmentation": _decode_segmentation, "masks": _decode_masked_detection}


def _dispatch(decode, item):
    """Segmentation records (``(position, record, "segmentation")``) to :func:`_decode_segmentation`, masked
    detection records (``(position, record, "masks")``) to :func:`_decode_masked_detection`, others to ``decode``."""
    return _DECODERS[item[2]](item[:2]) if len(item) == 3 else decode(item)


def _label_values(header):
    label = header.label
    return [float(x) for x in label] if header.flag > 0 else [float(label)]


class _Scan:
    """State of one check: records found, problems, statistics."""

    def __init__(self, rec_path, num_classes, detection=None):
        self.rec_path = rec_path
        self.num_classes = num_classes
        self.detection = detection  # None: decided by the first record's label
        self.segmentation = False if detection is not None else None  # likewise (--[no-]detection: not segmentation)
        self.mask_pixels = [0] * 256  # pixels of every stored mask value (class index, 255 not counted)
        self.masks = 0
        self.instance_masks = None  # detection records carry instance masks: None undecided (first record decides)
        self.masked_records = 0  # ... with their masks decoded
        self.instance_mask_count = 0
        self.boxes_per_image = []
        self.classes = Counter()
        self.detection_classes = num_classes  # class ids in [0, K): --num-classes, else PREFIX_classes.txt's count
        self.records = []  # dicts: position, offset, id, labels
        self.by_offset = {}
        self.records_by_position = {}
        self.bad = []
        self.labels = Counter()
        self.sizes = []
        self.modes = Counter()
        self.formats = Counter()
        self.framing_ok = True

    def problem(self, error, position=None, record_id=None, offset=None, source="rec"):
        self.bad.append({"source": source, "position": position, "id": record_id, "offset": offset,
                         "error": error})

    def add_record(self, position, offset, buf):
        if len(buf) < _IR_SIZE:
            self.problem("record of %d bytes is too short for an image header" % len(buf), position, None, offset)
            return None
        try:
            header, payload = unpack_record(buf)
        except CorruptRecordError as e:  # still a record (its framing is whole): listed, not decoded
            record_id = IR_HEADER.unpack_from(buf)[2]
            header, payload = None, None
            self.problem(str(e).split(": ", 1)[1], position, record_id, offset)
        labels = _label_values(header) if header is not None else []
        rec = {"position": position, "offset": offset, "id": header.id if header else record_id, "labels": labels}
        self.records.append(rec)
        self.by_offset[offset] = rec
        self.records_by_position[position] = rec
        if labels and self.detection is None:
            self.detection = header.flag > 0 and is_detection_label(labels)
            self.segmentation = header.flag > 0 and is_segmentation_label(labels)
        if self.segmentation:
            if labels and not (header.flag > 0 and is_segmentation_label(labels)):
                self.problem("header label %s is not a segmentation label [-2, 255] (as the file's first record's)"
                             % labels, position, header.id, offset)
                return None
            return payload
        if self.detection:
            if labels:
                self._add_objects(labels, position, rec["id"], offset)
                masked = header.id2 != 0  # 0 in detection records without masks (im2rec's and ours)
                if self.instance_masks is None:
                    self.instance_masks = masked
                elif masked != self.instance_masks:
                    self.problem("record %s instance masks (header id2 = %d), the file's first record %s" % (
                        "has" if masked else "has no", header.id2, "has none" if masked else "has them"),
                        position, header.id, offset)
                rec["masks"] = masked
            return payload
        self.labels.update(labels)
        for v in labels:
            if self.num_classes is not None and (v != int(v) or not 0 <= v < self.num_classes):
                self.problem("label %g is not an integer in [0, %d)" % (v, self.num_classes),
                             position, header.id, offset)
        return payload

    def _add_objects(self, labels, position, record_id, offset):
        objects, problem = parse_objects(labels)
        if problem:
            self.problem(problem, position, record_id, offset)
            return
        self.boxes_per_image.append(len(objects))
        for n, (cls, x1, y1, x2, y2) in enumerate(objects[:, :5].tolist()):
            self.classes[cls] += 1
            box = "object %d [%g, %g, %g, %g]" % (n, x1, y1, x2, y2)
            if not all(0.0 <= v <= 1.0 for v in (x1, y1, x2, y2)):
                self.problem("%s: corner outside [0, 1]" % box, position, record_id, offset)
            if x2 <= x1 or y2 <= y1:
                self.problem("%s: degenerate box (x2 <= x1 or y2 <= y1)" % box, position, record_id, offset)
            k = self.detection_classes
            if cls != int(cls) or cls < 0 or (k is not None and cls >= k):
                self.problem("%s: class id %g is not an integer in [0, %s)" % (box, cls, k),
                             position, record_id, offset)

    def add_decoded(self, result):
        position, error, size, mode, fmt = result[:5]
        rec = self.records_by_position[position]
        if error:
            self.problem(error, position, rec["id"], rec["offset"])
        else:
            self.sizes.append(size)
            self.modes[mode] += 1
            self.formats[fmt] += 1
            if len(result) > 6:
                self.masked_records += 1
                self.instance_mask_count += result[6]
            elif len(result) > 5:
                self._add_mask(result[5], rec)

    def _add_mask(self, counts, rec):
        self.masks += 1
        for value, n in enumerate(counts.tolist()):
            self.mask_pixels[value] += n
        k = self.detection_classes
        if k is None:
            return
        bad = [(v, n) for v, n in enumerate(counts.tolist()) if n and k <= v < MASK_IGNORE]
        if bad:
            self.problem("mask class value(s) %s outside the %d classes [0, %d) (%d pixels; 255 = not counted)"
                         % (", ".join(str(v) for v, _ in bad), k, k, sum(n for _, n in bad)),
                         rec["position"], rec["id"], rec["offset"])


def _sequential(scan, reader, file_size, decode_all, progress, idx_offsets=()):
    """Reads every record in file order; yields ``(position, payload)`` for decoding when ``decode_all``. Where a
    record's framing is broken, reads on at the next of ``idx_offsets`` (the .idx's), else stops there."""
    bar = tqdm(total=file_size, unit="B", unit_scale=True, desc="scan", disable=not progress)
    starts = set(idx_offsets)
    with bar:
        position = 0
        while True:
            offset = reader.tell()
            try:
                buf = reader.read()
            except mx.base.MXNetError as e:
                msg = "MXNet: " + plain_reason(e)
                after = bisect.bisect_right(idx_offsets, offset)
                resume = idx_offsets[after] if after < len(idx_offsets) else None
                at_start = offset in starts  # else inside a record whose length was wrong (reported on its own)
                scan.problem("unreadable record framing (%s); %s" % (
                    msg, "the rest of the file cannot be read in order" if resume is None
                    else "read on at the next .idx offset %d" % resume), position if at_start else None, None,
                    offset)
                scan.framing_ok = False
                if resume is None:
                    return
                reader.seek(resume)
                bar.update(resume - offset)
                position += at_start
                continue
            bar.update(reader.tell() - offset if buf is not None else 0)
            if buf is None:
                return
            payload = scan.add_record(position, offset, buf)
            if payload is not None and decode_all:
                yield _item(scan, position, buf, payload)
            position += 1


def _item(scan, position, buf, payload):
    """What to decode of record ``position``: ``(position, record, kind)`` for records with masks, else
    ``(position, image bytes)``."""
    if scan.segmentation:
        return position, buf, "segmentation"
    if scan.records_by_position[position].get("masks"):
        return position, buf, "masks"
    return position, payload


def _sampled(scan, reader, positions):
    for position in positions:
        reader.seek(scan.records_by_position[position]["offset"])
        if scan.records_by_position[position]["labels"]:  # a damaged header was reported by the sequential read
            buf = reader.read()
            if not scan.segmentation:
                yield _item(scan, position, buf, mx.recordio.unpack(buf)[1])
            elif is_segmentation_label(scan.records_by_position[position]["labels"]):
                yield position, buf, "segmentation"


def _default_signals():
    """In a pool worker: SIGTERM kills (a forked worker inherits its parent's handlers, e.g. training's preemption
    handler, which only sets a flag: the pool's terminate() would then wait forever), Ctrl-C is the parent's."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _decode_all(scan, items, num_workers, decode=_decode):
    if num_workers <= 1:
        for item in items:
            scan.add_decoded(decode(item))
        return
    with multiprocessing.get_context("fork").Pool(num_workers, initializer=_default_signals) as pool:
        for result in pool.imap(decode, items, chunksize=8):
            scan.add_decoded(result)


def _read_idx(idx_path, scan):
    """Parses ``key<TAB>offset`` lines; malformed lines become problems naming the line."""
    return read_idx_entries(idx_path, on_bad_line=lambda message: scan.problem(message, source="idx"))


def _check_idx(scan, idx_path, file_size):
    """Each .idx offset must start a record whose header id is the key; every record must be indexed."""
    entries = _read_idx(idx_path, scan)
    keys = Counter(key for _, key, _ in entries)
    indexed = set()
    with RecordReader(scan.rec_path) as reader:
        for lineno, key, offset in entries:
            where = "%s line %d (key %d -> offset %d)" % (idx_path, lineno, key, offset)
            if keys[key] > 1:
                scan.problem("%s: key %d appears %d times" % (where, key, keys[key]), None, key, offset, "idx")
            rec = scan.by_offset.get(offset)
            if rec is None:
                if offset >= file_size:
                    scan.problem("%s: offset beyond the end of the .rec (%d bytes)" % (where, file_size),
                                 None, key, offset, "idx")
                    continue
                try:  # not reached sequentially (e.g. after a framing error): read it directly
                    reader.seek(offset)
                    buf = reader.read()
                    header = IR_HEADER.unpack_from(buf) if buf and len(buf) >= _IR_SIZE else None
                except mx.base.MXNetError:
                    header = None
                if header is None:
                    scan.problem("%s: no valid record at this offset (not a record start, or the record is cut off)"
                                 % where, None, key, offset, "idx")
                    continue
                record_id, position = header[2], None
            else:
                record_id, position = rec["id"], rec["position"]
                indexed.add(offset)
            if record_id != key:
                scan.problem("%s: record there has header id %d, not %d" % (where, record_id, key),
                             position, record_id, offset, "idx")
    for rec in scan.records:
        if rec["offset"] not in indexed:
            scan.problem("record not listed in %s" % idx_path, rec["position"], rec["id"], rec["offset"], "idx")


def check(prefix, sample=None, num_classes=None, seed=0, num_workers=1, progress=True, idx_path=None,
          for_training=False, detection=None):
    """Checks ``PREFIX.rec`` (+ ``PREFIX.idx`` if present, or ``idx_path``; ``prefix`` may also be the .rec's path);
    ``sample``: decode only N random records (``None`` decodes all, 0 none). ``for_training``: OpenCV must decode
    each image too (about twice the time). ``detection``: the labels are im2rec detection labels (None: decided from
    the first record; class names and their count come from ``PREFIX_classes.txt`` when present). Returns the
    summary dict; ``summary["ok"]`` is False on any problem."""
    decode = functools.partial(_dispatch, _decode_for_training if for_training else _decode)
    if prefix.endswith(".rec"):
        prefix = prefix[:-len(".rec")]
    rec_path, idx_path = prefix + ".rec", idx_path or prefix + ".idx"
    if not os.path.isfile(rec_path):
        raise FileNotFoundError("%s: no such file" % rec_path)
    has_idx = os.path.isfile(idx_path)
    file_size = os.path.getsize(rec_path)
    class_names = None
    if os.path.isfile(prefix + "_classes.txt"):  # what recordio_tools writes beside the .rec
        with open(prefix + "_classes.txt", encoding="utf-8") as f:
            class_names = [line.rstrip("\n") for line in f if line.strip()]
    scan = _Scan(rec_path, num_classes, detection)
    scan.detection_classes = num_classes if num_classes is not None else (len(class_names) if class_names else None)
    start = time.time()
    idx_offsets = sorted({o for _, _, o in read_idx_entries(idx_path, on_bad_line=lambda m: None)}) if has_idx else []
    with RecordReader(rec_path) as reader:
        _decode_all(scan, _sequential(scan, reader, file_size, sample is None, progress, idx_offsets), num_workers,
                    decode)
        n = len(scan.records)
        if sample:
            positions = sorted(random.Random(seed).sample(sorted(scan.records_by_position), min(sample, n)))
            _decode_all(scan, _sampled(scan, reader, positions), num_workers, decode)
    ids = Counter(rec["id"] for rec in scan.records)
    for rec in scan.records:
        if ids[rec["id"]] > 1:
            scan.problem("header id %d is used by %d records" % (rec["id"], ids[rec["id"]]),
                         rec["position"], rec["id"], rec["offset"])
    if has_idx:
        _check_idx(scan, idx_path, file_size)
    seconds = time.time() - start
    log.info("checked %d records (%.1f MB) in %.1f s: %.1f records/s", n, file_size / 1e6, seconds,
             n / max(seconds, 1e-9))
    return _summary(scan, prefix, idx_path if has_idx else None, file_size, seconds, class_names)


def _detection_summary(scan, class_names):
    if not scan.detection:
        return None
    per = scan.boxes_per_image
    names = class_names or []

    def name(c):
        return names[int(c)] if c == int(c) and 0 <= c < len(names) else "%g" % c

    return {"images": len(per), "boxes": sum(per), "empty_images": sum(1 for n in per if n == 0),
            "boxes_per_image": [min(per), round(sum(per) / len(per), 3), max(per)] if per else None,
            "class_histogram": {name(c): scan.classes[c] for c in sorted(scan.classes)},
            "class_names": class_names,
            "instance_masks": {"decoded": scan.instance_mask_count, "records_decoded": scan.masked_records,
                               "layout": "resnest_gluon.data.detection_masks"} if scan.instance_masks else None}


def _segmentation_summary(scan, class_names):
    if not scan.segmentation:
        return None
    names = class_names or []
    counted = sum(scan.mask_pixels) - scan.mask_pixels[MASK_IGNORE]
    present = [v for v in range(MASK_IGNORE) if scan.mask_pixels[v]]  # values outside the classes: shown by number
    k = scan.detection_classes

    def name(v):
        return names[v] if v < len(names) else str(v)

    return {"masks": scan.masks, "pixels": sum(scan.mask_pixels), "ignored_pixels": scan.mask_pixels[MASK_IGNORE],
            "classes_present": len([v for v in present if k is None or v < k]), "num_classes": k,
            "class_pixels": {name(v): scan.mask_pixels[v] for v in present},
            "class_share": {name(v): round(scan.mask_pixels[v] / counted, 6) for v in present},
            "class_names": class_names,
            "label_convention": "mask value = class index, 255 = not counted"}


def _summary(scan, prefix, idx_path, file_size, seconds, class_names=None):
    widths = [w for w, _ in scan.sizes]
    heights = [h for _, h in scan.sizes]
    labels = sorted(scan.labels)
    bad = sorted(scan.bad, key=lambda b: (b["offset"] is None, b["offset"] or 0, b["source"] != "rec"))
    return {
        "rec": prefix + ".rec",
        "idx": idx_path,
        "file_bytes": file_size,
        "records": len(scan.records),
        "framing_ok": scan.framing_ok,
        "decoded": len(scan.sizes) + sum(1 for b in bad if b["error"].startswith("cannot decode")),
        "ok": not bad,
        "bad_count": len(bad),
        "bad": bad,
        "num_labels": len(labels),
        "label_min": labels[0] if labels else None,
        "label_max": labels[-1] if labels else None,
        "label_histogram": {"%g" % k: scan.labels[k] for k in labels},
        "image_width": [min(widths), max(widths)] if widths else None,
        "image_height": [min(heights), max(heights)] if heights else None,
        "modes": dict(scan.modes),
        "formats": dict(scan.formats),
        "detection": _detection_summary(scan, class_names),
        "segmentation": _segmentation_summary(scan, class_names),
        "seconds": round(seconds, 3),
    }


def describe_problem(b):
    """One line per problem: ``record #position (id N) at offset O: error``."""
    parts = []
    if b["position"] is not None:
        parts.append("record #%d" % b["position"])
    if b["id"] is not None:
        parts.append("(id %d)" % b["id"])
    if b["offset"] is not None:
        parts.append("at offset %d" % b["offset"])
    head = " ".join(parts) or b["source"]
    return "BAD %s: %s" % (head, b["error"])


def summary_lines(summary, histogram_limit=20):
    s = summary
    lines = ["%s: %d records, %.1f MB, index: %s" % (s["rec"], s["records"], s["file_bytes"] / 1e6,
                                                    s["idx"] or "none (sequential read)"),
             "labels: %d distinct, range %s..%s" % (s["num_labels"], s["label_min"], s["label_max"]),
             "decoded %d images; sizes w %s h %s; modes %s; formats %s"
             % (s["decoded"], s["image_width"], s["image_height"], s["modes"], s["formats"])]
    hist = list(s["label_histogram"].items())
    shown = hist if histogram_limit is None else hist[:histogram_limit]
    lines.append("label histogram: " + ", ".join("%s:%d" % kv for kv in shown)
                 + (" ... (%d more)" % (len(hist) - len(shown)) if len(hist) > len(shown) else ""))
    d = s.get("detection")
    if d:
        lines[1] = "detection labels: %d boxes in %d images (%d without objects); boxes per image min/mean/max %s" % (
            d["boxes"], d["images"], d["empty_images"], d["boxes_per_image"])

        hist = list(d["class_histogram"].items())
        shown = hist if histogram_limit is None else hist[:histogram_limit]
        lines[3] = "class histogram: " + ", ".join("%s:%d" % kv for kv in shown) + (
            " ... (%d more)" % (len(hist) - len(shown)) if len(hist) > len(shown) else "")
        if d.get("instance_masks"):
            lines.insert(2, "instance masks: %d decoded in %d records (one per box)" % (
                d["instance_masks"]["decoded"], d["instance_masks"]["records_decoded"]))
    g = s.get("segmentation")
    if g:
        ignored = 100.0 * g["ignored_pixels"] / max(g["pixels"], 1)
        lines[1] = "segmentation masks: %d decoded, %d classes present%s; %.1f%% of pixels not counted (255)" % (
            g["masks"], g["classes_present"], "" if g["num_classes"] is None else " of %d" % g["num_classes"],
            ignored)
        hist = sorted(g["class_share"].items(), key=lambda kv: -kv[1])
        shown = hist if histogram_limit is None else hist[:histogram_limit]
        lines[3] = "class pixel shares: " + ", ".join("%s:%.1f%%" % (k, 100 * v) for k, v in shown) + (
            " ... (%d more)" % (len(hist) - len(shown)) if len(hist) > len(shown) else "")
    lines.extend(describe_problem(b) for b in s["bad"])
    lines.append("OK" if s["ok"] else "FAILED: %d problem(s)" % s["bad_count"])
    return lines
