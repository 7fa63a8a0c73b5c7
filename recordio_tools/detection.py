"""Pack object-detection datasets (Pascal VOC or COCO) into ``PREFIX.rec`` + ``PREFIX.idx`` in im2rec's detection
layout, readable by ``mx.image.ImageDetIter`` and GluonCV's ``RecordFileDetection``.

Label layout of every record (a flat float32 vector in the image header, ``flag`` = its length)::

    [2, 6, (class_id, x1, y1, x2, y2, difficult) per object]

header width 2, object width 6; the corners are divided by the image's width/height (``RecordFileDetection``
multiplies them by the decoded record's size, so boxes follow ``--resize``); ``difficult`` is VOC's
``<difficult>`` or COCO's ``iscrowd``. Pixel corners follow GluonCV's own readers: VOC's 1-based corners minus 1
(``VOCDetection``), COCO's ``[x, y, w, h]`` as ``[x, y, x + w - 1, y + h - 1]`` (``COCODetection``), so
``RecordFileDetection`` gives back the boxes GluonCV's VOC/COCO readers give.

Bad annotations never shift anything else: a box partly outside the image is clipped to it (GluonCV's
``bbox_clip_xyxy``, reported as ``box_clipped``); a box entirely outside (``box_outside``) or of zero/negative area
(``degenerate_box``), an unknown class name (``unknown_class``) or an object with missing/non-numeric fields
(``malformed_object``) is dropped and reported; an unreadable annotation file (``bad_annotation``), a missing or
undecodable image, and (by default) an image left without objects (``no_objects``) are skipped and reported.

``masks=True`` (``--masks``) also stores one binary mask per kept object after the image, mask i for box i, the
header label unchanged (layout: :mod:`resnest_gluon.data.detection_masks`; sources: :mod:`.instance_masks`). VOC then
packs the ids of ``ImageSets/Segmentation/SPLIT.txt`` (``--split``; else every ``SegmentationObject/*.png``), the
images VOC gives instance masks. Objects without a usable mask are dropped and reported (``no_mask``,
``bad_polygon``, ``bad_rle``, ``mask_size_mismatch``, ``mask_empty``: no pixel left, also after ``--resize``);
instance values of a VOC mask that no ``<object>`` has are reported (``mask_unmatched``); images whose mask file is
missing, unreadable, not single-channel or of another size are skipped (``mask_missing``, ``mask_unreadable``,
``mask_not_single_channel``, ``size_mismatch``). Masks follow the image's EXIF rotation and ``--resize``
(nearest-neighbour, pixel centres aligned: ``cv2.INTER_NEAREST_EXACT``), so they stay aligned with it.
"""
import contextlib
import json
import logging
import os
import time
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import asdict, dataclass, field

import cv2
import mxnet as mx
import numpy as np
from tqdm import tqdm

from resnest_gluon.data.detection_masks import (MASKS_VERSION, encode_instance_masks,
                                                encode_masked_detection_record)

from . import images, instance_masks, listing, packing, segmentation
from .atomic import atomic_files
from .report import PackReport

log = logging.getLogger(__name__)

HEADER_WIDTH = 2
OBJECT_WIDTH = 6  # class_id, x1, y1, x2, y2, difficult


@dataclass
class DetEntry:
    index: int
    path: str  # image, relative to root (or absolute)
    annotation: str  # file that describes it (VOC .xml, COCO json), for the report
    objects: list = field(default_factory=list)  # (class_id, x1, y1, x2, y2, difficult, what[, mask]) in pixels
    keep_empty: bool = False
    masks: bool = False  # store instance masks; each object's 8th field: VOC instance value, COCO segmentation
    mask_file: str = None  # VOC: the SegmentationObject PNG
    mask_objects: int = 0  # VOC: <object> elements of the annotation (instance values 1..mask_objects)


class DetectionReport(PackReport):
    def __init__(self, listed, options=None):
        super().__init__(listed, options)
        self.box_problems = []  # dicts: file, image, object, reason, detail, dropped
        self.boxes = 0
        self.classes = []
        self.masks = None  # instance masks written (None: packed without --masks)

    def add_box_problem(self, file, image, obj, reason, detail, dropped=True):
        self.box_problems.append({"file": file, "image": image, "object": obj, "reason": reason, "detail": detail,
                                  "dropped": dropped})

    def as_dict(self):
        d = super().as_dict()
        d.update({"boxes": self.boxes, "classes": self.classes, "box_problem_count": len(self.box_problems),
                  "box_problem_reasons": dict(sorted(Counter(p["reason"] for p in self.box_problems).items())),
                  "box_problems": self.box_problems,
                  "label_layout": {"header_width": HEADER_WIDTH, "object_width": OBJECT_WIDTH,
                                   "object": ["class_id", "x1/w", "y1/h", "x2/w", "y2/h", "difficult"]}})
        if self.masks is not None:
            d.update({"masks": self.masks,
                      "mask_layout": {"module": "resnest_gluon.data.detection_masks", "version": MASKS_VERSION,
                                      "where": "after the image bytes; header id2 = the image's byte length",
                                      "masks": "one 1-bit PNG per object, cropped to the mask, mask i for box i"}})
        return d

    def summary(self):
        lines = super().summary()
        lines.insert(1, "%d boxes, %d classes%s" % (self.boxes, len(self.classes), "" if self.masks is None
                                                      else ", %d instance masks" % self.masks))
        if self.box_problems:
            lines.append("box problems %d: %s" % (len(self.box_problems), ", ".join(
                "%s=%d" % kv for kv in sorted(Counter(p["reason"] for p in self.box_problems).items()))))
            for p in self.box_problems:
                if p["object"] is None and p["image"]:  # about the image's mask, no one object
                    where = p["image"]
                else:
                    where = "%s object %s" % (p["image"], p["object"]) if p["image"] else "object %s" % p["object"]
                verb = "dropped" if p["dropped"] else "clipped" if p["reason"] == "box_clipped" else "noted"
                lines.append("  %s %s (%s): %s" % (verb, p["file"], where, p["detail"]))
        return lines


# ---------------------------------------------------------------------------------------------------- sources
def _number(node, tag):
    child = node.find(tag)
    if child is None or child.text is None:
        raise ValueError("no <%s>" % tag)
    return float(child.text)


def _voc_ids(source, split, masks=False):
    ann_dir = os.path.join(source, "Annotations")
    if not os.path.isdir(ann_dir):
        raise FileNotFoundError("%s: no Annotations/ folder (not a Pascal VOC folder)" % source)
    if masks and not split:
        mask_dir = os.path.join(source, "SegmentationObject")
        if not os.path.isdir(mask_dir):
            raise FileNotFoundError("%s: no SegmentationObject/ folder (VOC's instance masks, which --masks packs)"
                                    % source)
        return sorted(n[:-4] for n in os.listdir(mask_dir) if n.endswith(".png"))
    if split:
        path = os.path.join(source, "ImageSets", "Segmentation" if masks else "Main", split + ".txt")
        if masks and not os.path.isfile(path):
            raise FileNotFoundError("%s: no ImageSets/Segmentation/%s.txt (with --masks, --split names a list of "
                                    "the images VOC gives instance masks)" % (source, split))
        with open(path, encoding="utf-8") as f:
            return [line.split()[0] for line in f if line.strip()]
    return sorted(n[:-4] for n in os.listdir(ann_dir) if n.endswith(".xml"))


def read_voc(source, split=None, masks=False):
    """``(images, problems)``: images = [(annotation path, image path rel. to source, [(name, x1, y1, x2, y2,
    difficult, what)])] with 0-based corners (VOC's minus 1); problems = [(file, image, object, reason, detail,
    skip_image)]. ``masks``: the ids of ``ImageSets/Segmentation/SPLIT.txt`` (else of every
    ``SegmentationObject/*.png``), each object with its instance value (what + 1) appended, each image with
    ``(its SegmentationObject PNG rel. to source, the number of <object> elements)`` appended."""
    out, problems = [], []
    for image_id in _voc_ids(source, split, masks):
        xml = os.path.join(source, "Annotations", image_id + ".xml")
        rel_xml = os.path.relpath(xml, source)
        try:
            root = ET.parse(xml).getroot()
        except FileNotFoundError:
            problems.append((rel_xml, image_id, None, "bad_annotation", "no such annotation file", True))
            continue
        except ET.ParseError as e:
            problems.append((rel_xml, image_id, None, "bad_annotation", "malformed XML: %s" % e, True))
            continue
        except OSError as e:
            problems.append((rel_xml, image_id, None, "bad_annotation", "unreadable: %s" % e, True))
            continue
        name = root.findtext("filename") or image_id + ".jpg"
        image = os.path.join("JPEGImages", name.strip())
        objects, elements = [], list(root.iter("object"))
        for n, obj in enumerate(elements):
            try:
                cls = (obj.findtext("name") or "").strip()
                if not cls:
                    raise ValueError("no <name>")
                box = obj.find("bndbox")
                if box is None:
                    raise ValueError("no <bndbox>")
                x1, y1, x2, y2 = (_number(box, t) - 1 for t in ("xmin", "ymin", "xmax", "ymax"))
                difficult = int(float(obj.findtext("difficult") or 0))
            except ValueError as e:
                problems.append((rel_xml, image, n, "malformed_object", "object %d: %s" % (n, e), False))
                continue
            objects.append((cls, x1, y1, x2, y2, difficult, n) + ((n + 1,) if masks else ()))
        mask = ((os.path.join("SegmentationObject", image_id + ".png"), len(elements)),) if masks else ()
        out.append((rel_xml, image, objects) + mask)
    return out, problems


def read_coco(json_path, masks=False):
    """``(images, problems, category names in id order)`` as :func:`read_voc`; corners as GluonCV's COCODetection.
    ``masks``: each object with its ``segmentation`` (None when absent) appended."""
    with open(json_path, encoding="utf-8") as f:
        data = json.load(f)
    cats = sorted(data.get("categories", []), key=lambda c: c["id"])
    names = {c["id"]: c["name"] for c in cats}
    rel = os.path.basename(json_path)
    by_image, order, problems = {}, [], []
    for im in data.get("images", []):
        if not isinstance(im, dict) or not isinstance(im.get("file_name"), str) or im.get("id") is None:
            problems.append((rel, None, None, "bad_annotation", "image entry without id/file_name: %r" % (im,),
                             True))
            continue
        by_image[im["id"]] = (im["file_name"], [])
        order.append(im["id"])
    order.sort(key=lambda i: (0, i, "") if isinstance(i, int) else (1, 0, str(i)))  # COCO ids are ints
    for ann in data.get("annotations", []):
        if not isinstance(ann, dict):
            problems.append((rel, None, None, "bad_annotation", "annotation is not an object: %r" % (ann,), False))
            continue
        what = "annotation id %s" % ann.get("id")
        image = by_image.get(ann.get("image_id"))
        if image is None:
            problems.append((rel, None, ann.get("id"), "bad_annotation",
                             "%s: image_id %r is not in images" % (what, ann.get("image_id")), False))
            continue
        try:
            x, y, w, h = (float(v) for v in ann["bbox"])
            if ann.get("category_id") not in names:
                problems.append((rel, image[0], ann.get("id"), "unknown_class",
                                 "%s: category_id %r is not in categories" % (what, ann.get("category_id")), False))
                continue
        except (KeyError, TypeError, ValueError) as e:
            problems.append((rel, image[0], ann.get("id"), "malformed_object", "%s: bad bbox (%s)" % (what, e), False))
            continue
        if w <= 0 or h <= 0:  # GluonCV's xywh -> xyxy would make these 1-pixel boxes; they are degenerate
            problems.append((rel, image[0], ann.get("id"), "degenerate_box",
                             "%s: bbox %s has zero/negative size" % (what, ann["bbox"]), False))
            continue
        image[1].append((names[ann["category_id"]], x, y, x + max(0.0, w - 1), y + max(0.0, h - 1),
                         int(ann.get("iscrowd", 0)), ann.get("id")) + ((ann.get("segmentation"),) if masks else ()))
    return [(rel, by_image[i][0], by_image[i][1]) for i in order], problems, [names[c["id"]] for c in cats]


# ---------------------------------------------------------------------------------------------------- worker
def _boxes(entry, width, height):
    """Validated, clipped, normalised objects and the problems found: ``(rows, problems, kept)``, ``kept`` = the
    index in ``entry.objects`` of each row's object."""
    rows, problems, kept = [], [], []
    for n, (cls, x1, y1, x2, y2, difficult, what) in enumerate(o[:7] for o in entry.objects):
        box = "[%g, %g, %g, %g]" % (x1, y1, x2, y2)
        if x2 <= x1 or y2 <= y1:
            problems.append((what, "degenerate_box", "box %s has zero/negative area" % box, True))
            continue
        if x1 > width - 1 or y1 > height - 1 or x2 < 0 or y2 < 0:
            problems.append((what, "box_outside", "box %s is outside the %dx%d image" % (box, width, height), True))
            continue
        c = (min(max(x1, 0.0), width - 1.0), min(max(y1, 0.0), height - 1.0),
             min(max(x2, 0.0), width - 1.0), min(max(y2, 0.0), height - 1.0))
        if c != (x1, y1, x2, y2):
            if c[2] <= c[0] or c[3] <= c[1]:
                problems.append((what, "box_outside", "box %s has no area inside the %dx%d image"
                                 % (box, width, height), True))
                continue
            problems.append((what, "box_clipped", "box %s clipped to the %dx%d image: [%g, %g, %g, %g]"
                             % ((box, width, height) + c), False))
        rows.append([cls, c[0] / width, c[1] / height, c[2] / width, c[3] / height, difficult])
        kept.append(n)
    return rows, problems, kept


def _annotation_size(data, rgb, notes, info):
    """``(width, height)`` the annotations' pixels refer to: the decoded (EXIF-rotated) image's, or its full size
    when ``--max-pixels`` had it decoded smaller (the normalised corners then fit the smaller image too)."""
    if "downscaled" not in notes:
        return rgb.shape[1], rgb.shape[0]
    width, height = info["size"]
    return (height, width) if segmentation.exif_transposes(data, notes) else (width, height)


def _record_size(rgb, notes, info):
    """``(width, height)`` of the image as the record will hold it (``packing.encode_image``'s decision)."""
    height, width = rgb.shape[:2]
    options = packing._OPTIONS
    if options.pass_through and images.is_passthrough_jpeg(info, notes) or not options.resize:
        return width, height
    return images.resized_shape(width, height, options.resize)


def _instance_masks(entry, rows, kept, data, notes, size, record_size):
    """``(rows, masks, problems)``: the rows whose object has a mask and those masks at ``record_size``, in row
    order; objects without a usable mask are dropped and reported. ``size``: the annotations' ``(width, height)``.
    Raises ImageRejected when the image's mask file is unusable (VOC)."""
    width, height = size
    problems, found = [], []
    if entry.mask_file:
        values = instance_masks.voc_instance_values(entry.mask_file, data, notes, size)
        mask_name = os.path.relpath(entry.mask_file, os.path.dirname(os.path.dirname(entry.mask_file)))
        for row, n in zip(rows, kept):
            what, value = entry.objects[n][6], entry.objects[n][7]
            mask = values == value
            if mask.any():
                found.append((row, what, mask))
            else:
                problems.append((what, "no_mask", "object %s: no pixel of instance value %d in %s"
                                 % (what, value, mask_name), True))
        extra = sorted(set(np.unique(values).tolist()) - {0, 255} - set(range(1, entry.mask_objects + 1)))
        if extra:
            problems.append((None, "mask_unmatched", "%s: instance value(s) %s but the annotation has %d <object>s "
                             "(VOC: value k = the k-th object); those pixels are in no object's mask"
                             % (mask_name, ", ".join(str(v) for v in extra), entry.mask_objects), False))
    else:
        for row, n in zip(rows, kept):
            what = entry.objects[n][6]
            try:
                found.append((row, what, instance_masks.coco_mask(entry.objects[n][7], width, height)))
            except instance_masks.MaskProblem as e:
                problems.append((what, e.reason, "annotation id %s: %s" % (what, e.detail), True))
    out_rows, masks = [], []
    for row, what, mask in found:
        mask = mask.astype(np.uint8)
        if tuple(record_size) != (width, height):
            mask = cv2.resize(mask, tuple(record_size), interpolation=cv2.INTER_NEAREST_EXACT)
            if not mask.any():
                problems.append((what, "mask_empty", "object %s: no mask pixel left at the packed size %dx%d"
                                 % ((what,) + tuple(record_size)), True))
                continue
        out_rows.append(row)
        masks.append(mask)
    return out_rows, masks, problems


def encode_detection(entry):
    """``("ok", index, record, notes, passed, box problems, n boxes)`` or ``("skip", index, reason, detail,
    box problems)``; never raises for bad input."""
    problems = []
    try:
        data, rgb, notes, info = packing.read_and_decode(entry)
        width, height = _annotation_size(data, rgb, notes, info)
        rows, problems, kept = _boxes(entry, width, height)
        masks = None
        if entry.masks:
            record_size = _record_size(rgb, notes, info)
            rows, masks, mask_problems = _instance_masks(entry, rows, kept, data, notes, (width, height),
                                                         record_size)
            problems += mask_problems
        if not rows and not entry.keep_empty:
            return "skip", entry.index, "no_objects", "no valid object left (--keep-empty keeps it)", problems
        label = np.array([HEADER_WIDTH, OBJECT_WIDTH] + [v for r in rows for v in r], np.float32)
        header = mx.recordio.IRHeader(0, label, entry.index, 0)
        record, passed = packing.encode_image(data, header, rgb, notes, info, packing._OPTIONS)
        if masks is not None:
            _, image_bytes = mx.recordio.unpack(record)
            record = encode_masked_detection_record(entry.index, label, image_bytes,
                                                    encode_instance_masks(masks, *record_size))
        return "ok", entry.index, record, notes, passed, problems, len(rows)
    except images.ImageRejected as e:
        return "skip", entry.index, e.reason, e.detail, problems
    except Exception as e:  # one bad file must not stop the pack
        return "skip", entry.index, "error", "%s: %s" % (type(e).__name__, e), problems


# ---------------------------------------------------------------------------------------------------- pack
def _entries(raw, classes, fixed_classes, keep_empty, report, masks=False, source=None):
    index_of = {n: i for i, n in enumerate(classes)}
    entries = []
    for ann, image, objects, *mask in raw:
        kept = []
        for cls, *rest in objects:
            if cls not in index_of:
                report.add_box_problem(ann, image, rest[5], "unknown_class",
                                       "class %r is not in %s" % (cls, fixed_classes or "the class list"))
                continue
            kept.append((index_of[cls], *rest))
        mask_file, mask_objects = (os.path.join(source, mask[0][0]), mask[0][1]) if mask and mask[0] else (None, 0)
        entries.append(DetEntry(len(entries), image, ann, kept, keep_empty, masks, mask_file, mask_objects))
    return entries


def pack_detection(source, prefix, fmt, root=None, split=None, classes_file=None, keep_empty=False,
                   options=packing.PackOptions(), num_workers=1, progress=True, masks=False):
    """Packs a VOC folder (``fmt="voc"``) or a COCO instances JSON (``fmt="coco"``, images under ``root``) into
    ``PREFIX.rec``/``.idx``/``_classes.txt``/``.report.json`` (all replaced together, or none); returns the report.
    ``masks``: also store each kept object's instance mask (module docstring)."""
    options.validate()
    if fmt == "voc":
        if not os.path.isdir(source):
            raise FileNotFoundError("%s: no such VOC folder" % source)
        raw, problems = read_voc(source, split, masks)
        found = sorted({o[0] for item in raw for o in item[2]})
        root = source if root is None else root
    elif fmt == "coco":
        if not os.path.isfile(source):
            raise FileNotFoundError("%s: no such COCO json" % source)
        if masks:
            try:
                import pycocotools.mask  # noqa: F401  (rasterises COCO's polygons)
            except ImportError as e:
                raise ValueError("--masks with --format coco needs pycocotools (pip install pycocotools): %s"
                                 % e) from None
        raw, problems, found = read_coco(source, masks)
        root = root if root is not None else os.path.dirname(os.path.abspath(source))
    else:
        raise ValueError("--format must be voc or coco, got %r" % fmt)
    classes = listing.read_classes(classes_file) if classes_file else found
    if not classes:
        raise packing.PackError("%s: no class names (no objects found, and no --classes)" % source)
    report = DetectionReport(len(raw), dict(asdict(options), num_workers=num_workers, source=source, root=root,
                                            format=fmt, split=split, classes_file=classes_file,
                                            keep_empty=keep_empty, masks=masks))
    report.classes = list(classes)
    report.masks = 0 if masks else None
    skipped_files = []
    for file, image, obj, reason, detail, skip_image in problems:
        if skip_image:
            skipped_files.append((file, reason, detail))
        else:
            report.add_box_problem(file, image, obj, reason, detail)
    entries = _entries(raw, classes, classes_file, keep_empty, report, masks, source)
    report.listed += len(skipped_files)
    by_index = {e.index: e for e in entries}
    paths = [prefix + ".rec", prefix + ".idx", listing.classes_path(prefix), prefix + ".report.json"]
    start = time.time()
    with atomic_files(*paths) as (tmp_rec, tmp_idx, tmp_classes, tmp_report):
        for file, reason, detail in skipped_files:
            report.add_skipped(None, file, reason, detail)
        writer = mx.recordio.MXIndexedRecordIO(tmp_idx, tmp_rec, "w")
        try:
            bar = tqdm(total=len(entries), unit="img", desc="pack " + os.path.basename(prefix),
                       disable=not progress, smoothing=0.1)
            results = packing._results(entries, root, options, num_workers, encode_detection)
            with bar, contextlib.closing(results):
                for result in results:
                    entry = by_index[result[1]]
                    box_problems = result[5] if result[0] == "ok" else result[4]
                    for what, reason, detail, dropped in box_problems:
                        report.add_box_problem(entry.annotation, entry.path, what, reason, detail, dropped)
                    if result[0] == "ok":
                        writer.write_idx(result[1], result[2])
                        report.add_packed(result[3], result[4])
                        report.boxes += result[6]
                        if masks:
                            report.masks += result[6]
                    else:
                        report.add_skipped(result[1], entry.path, result[2], "%s (annotation %s)"
                                           % (result[3], entry.annotation))
                    bar.update(1)
        finally:
            writer.close()
        report.seconds = time.time() - start
        if report.packed == 0:
            raise packing.PackError("nothing packed from %s (%d images, all skipped: %s); is --root %r right?"
                                    % (source, len(entries), report.skip_counts(), root))
        with open(tmp_classes, "w", encoding="utf-8") as f:
            f.writelines(name + "\n" for name in classes)
        report.dump(tmp_report)
    log.info("packed %d images, %d boxes%s in %.1f s", report.packed, report.boxes,
             " and their masks" if masks else "", report.seconds)
    return report
