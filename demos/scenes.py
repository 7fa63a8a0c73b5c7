"""Seeded object-detection scenes for the detection demo, written as a Pascal VOC folder.

Why procedural: as with the classification demo (:mod:`demos.shapes`, whose shapes, colours, textures and clutter
these scenes reuse), the demo must run offline and reach an mAP that means something. Each scene holds 1-5 shapes
(default classes circle, cross, square, star, triangle: outlines that stay distinct when small). The class is the
outline only: position, size (radius 8-30 % of the side, log-uniform so small and large objects are equally common),
rotation, mirror and colours are drawn apart from the class, so colour carries no label information
(``tests/test_demo_detection_data.py`` checks the mean colour inside boxes).

Boxes are what a careful annotator draws: the tight box of an object's *visible* pixels (coverage > 0.5 once the
shapes drawn after it cover it, inside the image). An object with under 45 % of its area visible (hidden or outside
the image) is VOC's ``difficult``, which VOC07 mAP neither rewards nor penalises; one the border cuts is
``truncated``. A placement that would leave any object under 15 % visible or under 4 px across is drawn again, so
every object in a scene is annotated. Each shape contrasts with the background and with the shapes it touches.

    python -m demos.scenes out/scenes --train 600 --val 150 --size 160 --seed 0

writes ``JPEGImages/<id>.jpg``, ``Annotations/<id>.xml``, ``ImageSets/Main/{train,val}.txt``, ``classes.txt`` and,
last, ``summary.json`` (a folder without it is incomplete); pack it with ``python -m recordio_tools pack-detection
out/scenes PREFIX --format voc --split train --classes out/scenes/classes.txt``. The same seed gives byte-identical
files; a rerun overwrites them. ``--masks`` also writes each scene's instance masks as VOC does
(``SegmentationObject/<id>.png``, pixel value k = the k-th ``<object>``, 0 background: each object's visible pixels,
the ones its box is tight around) and ``ImageSets/Segmentation/{train,val}.txt``, for ``pack-detection --masks``;
the images and annotations are the same as without it.
"""
import argparse
import contextlib
import io
import math
import os
import sys
import time
import xml.etree.ElementTree as ET
from collections import namedtuple
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image

from demos.shapes import (CLASSES, background, contrasting_colour, finish, grainy, luma, random_colour,
                          shape_mask)
from resnest_gluon.atomic import atomic_path, write_json

__all__ = ["CLASSES_DEFAULT", "Shape", "SceneSummary", "layout", "draw_scene", "voc_annotation", "make_scenes",
           "main"]

CLASSES_DEFAULT = ("circle", "cross", "square", "star", "triangle")  # sorted: the label order of classes.txt
RADIUS = (0.08, 0.30)  # object radius as a fraction of the side, drawn log-uniformly
EDGE = 0.4  # centres stay this many radii inside the border: objects may be cut, never mostly lost
DIFFICULT_BELOW = 0.45  # visible fraction under which an object is <difficult>
HIDDEN_BELOW = 0.15  # visible fraction under which an object would not be annotated: such placements are redrawn
MIN_SIDE = 4  # px: a visible box narrower than this would not be annotated either
BACKGROUND_CONTRAST = 80  # luma difference between a shape and the background's base colour
NEIGHBOUR_CONTRAST = 40  # luma difference between shapes whose boxes touch
PLACEMENT_TRIES = 10  # placements tried per object before the scene does without it
COLOUR_TRIES = 256  # colours tried per placement that touches others
_REACH = 1.05  # farthest filled point of any demo shape from its centre, in radii (the cross's corners: 1.044)

Shape = namedtuple("Shape", "name centre radius angle mirror", defaults=(0.0, False))
Shape.__doc__ = "One object to draw: demos.shapes class ``name``, ``centre`` (x, y) and ``radius`` in pixels."


def _footprint(shape):
    """``(x0, y0, mask)``: the shape's whole anti-aliased mask on a square crop whose corner is pixel (x0, y0) of
    the image, parts outside the image included (they tell truncation and the full area)."""
    reach = _REACH * shape.radius + 2
    cx, cy = shape.centre
    x0, y0 = math.floor(cx - reach), math.floor(cy - reach)
    side = max(math.ceil(cx + reach) - x0, math.ceil(cy + reach) - y0)
    return x0, y0, shape_mask(shape.name, side, (cx - x0, cy - y0), shape.radius, shape.angle, shape.mirror)


def _overlap(a, b):
    """Index slices into rectangles ``a`` and ``b`` = (x0, y0, height, width) over the pixels they share, or None."""
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[0] + a[3], b[0] + b[3]), min(a[1] + a[2], b[1] + b[2])
    if x0 >= x1 or y0 >= y1:
        return None
    return tuple((slice(y0 - r[1], y1 - r[1]), slice(x0 - r[0], x1 - r[0])) for r in (a, b))


def _rect(footprint):
    x0, y0, mask = footprint
    return (x0, y0) + mask.shape


def _annotate(size, shapes, footprints):
    """``(objects, visible)``: per shape its annotation dict (None when it would not be annotated) and its visible
    coverage on its crop (its mask times one minus each later mask, as the painting composes them)."""
    visible = [m.copy() for _, _, m in footprints]
    for j, later in enumerate(footprints):
        for i in range(j):
            shared = _overlap(_rect(footprints[i]), _rect(later))
            if shared:
                visible[i][shared[0]] *= 1 - later[2][shared[1]]
    objects = []
    for shape, footprint, seen in zip(shapes, footprints, visible):
        x0, y0, mask = footprint
        inside = _overlap(_rect(footprint), (0, 0, size, size))
        shown = seen[inside[0]] > 0.5 if inside else np.zeros((0, 0), bool)
        if not shown.any():
            objects.append(None)
            continue
        full = mask > 0.5
        area, pixels = int(full.sum()), int(shown.sum())
        rows, cols = np.flatnonzero(shown.any(1)), np.flatnonzero(shown.any(0))
        left, top = x0 + inside[0][1].start, y0 + inside[0][0].start
        box = (int(left + cols[0]), int(top + rows[0]), int(left + cols[-1]), int(top + rows[-1]))
        fraction = pixels / area
        if fraction < HIDDEN_BELOW or min(box[2] - box[0], box[3] - box[1]) + 1 < MIN_SIDE:
            objects.append(None)
            continue
        objects.append({"class": shape.name, "box": box, "difficult": fraction < DIFFICULT_BELOW,
                        "truncated": int(full[inside[0]].sum()) < area, "visible_fraction": fraction})
    return objects, visible


def layout(size, shapes):
    """Annotations of ``shapes`` (:class:`Shape`, drawn in order, later over earlier) in a ``size`` px scene: per
    shape a dict as :func:`draw_scene` gives, or None where too little stays visible to annotate it."""
    return _annotate(size, shapes, [_footprint(s) for s in shapes])[0]


def _touch(a, b):
    """True when boxes ``a`` and ``b`` (0-based inclusive corners) overlap or are adjacent."""
    return a[0] <= b[2] + 1 and b[0] <= a[2] + 1 and a[1] <= b[3] + 1 and b[1] <= a[3] + 1


def _random_shape(rng, size, classes):
    name = classes[rng.integers(len(classes))]
    radius = size * math.exp(rng.uniform(math.log(RADIUS[0]), math.log(RADIUS[1])))
    centre = tuple(rng.uniform(EDGE * radius, size - EDGE * radius, 2))
    return Shape(name, centre, radius, rng.uniform(0, 2 * math.pi), bool(rng.random() < 0.5))


def _check(size, classes, min_objects, max_objects):
    if size < 64:
        raise ValueError(f"size must be at least 64 px, got {size}")
    unknown = sorted(set(classes) - set(CLASSES))
    if unknown or not classes or len(set(classes)) != len(classes):
        raise ValueError(f"classes must be distinct names of {', '.join(CLASSES)}; got {list(classes)}")
    if not 1 <= min_objects <= max_objects:
        raise ValueError(f"need 1 <= min_objects <= max_objects, got {min_objects} and {max_objects}")


def draw_scene(rng, size=160, classes=CLASSES_DEFAULT, max_objects=5, min_objects=1, return_masks=False):
    """``(image, objects)``: an RGB uint8 ``size x size`` scene and its annotated objects, in drawing order (later
    over earlier), each ``{"class", "box": (x1, y1, x2, y2) 0-based inclusive pixels, "difficult", "truncated",
    "visible_fraction", "colour"}``. Every nuisance factor comes from ``rng`` (a ``np.random.Generator``).

    ``min_objects``..``max_objects`` objects are tried; an object whose placements all fail (another would hide, or
    no colour contrasts with everything it touches) is left out, but the first one is always placed.
    ``return_masks=True`` adds a third value: the (N, size, size) float32 visible coverage of each object, whose
    pixels > 0.5 the box is tight around.
    """
    _check(size, classes, min_objects, max_objects)
    n = int(rng.integers(min_objects, max_objects + 1))
    bg = random_colour(rng)
    img = background(rng, size, bg)
    shapes, footprints, colours, objects, visible = [], [], [], [], []
    for _ in range(n):
        tries = 0
        while not shapes or tries < PLACEMENT_TRIES:  # without a first object the scene is no use
            tries += 1
            shape = _random_shape(rng, size, classes)
            footprint = _footprint(shape)
            found, seen = _annotate(size, shapes + [shape], footprints + [footprint])
            if None in found:
                continue
            near = [luma(c) for c, o in zip(colours, found) if _touch(o["box"], found[-1]["box"])]
            limits = [BACKGROUND_CONTRAST] + [NEIGHBOUR_CONTRAST] * len(near)
            colour = contrasting_colour(rng, [luma(bg)] + near, limits, tries=COLOUR_TRIES if near else None, batch=64)
            if colour is None:
                continue
            shapes.append(shape)
            footprints.append(footprint)
            colours.append(colour)
            objects, visible = found, seen
            break
    for footprint, colour in zip(footprints, colours):
        shared = _overlap((0, 0, size, size), _rect(footprint))
        alpha = footprint[2][shared[1]][..., None]
        img[shared[0]] = img[shared[0]] * (1 - alpha) + grainy(rng, colour, alpha.shape[:2] + (3,)) * alpha
    for o, colour in zip(objects, colours):
        o["colour"] = tuple(int(c) for c in colour)
    image = finish(rng, size, np.clip(img, 0, 255))  # grain on a saturated colour must not wrap around in uint8
    if not return_masks:
        return image, objects
    masks = np.zeros((len(objects), size, size), np.float32)
    for m, footprint, seen in zip(masks, footprints, visible):
        shared = _overlap((0, 0, size, size), _rect(footprint))
        m[shared[0]] = seen[shared[1]]
    return image, objects, masks


def voc_annotation(image_id, size, objects):
    """Pascal VOC XML text for one scene: 1-based inclusive corners (``read_voc`` and GluonCV subtract 1)."""
    root = ET.Element("annotation")
    ET.SubElement(root, "filename").text = image_id + ".jpg"
    dims = ET.SubElement(root, "size")
    for tag, value in (("width", size), ("height", size), ("depth", 3)):
        ET.SubElement(dims, tag).text = str(value)
    ET.SubElement(root, "segmented").text = "0"
    for o in objects:
        node = ET.SubElement(root, "object")
        ET.SubElement(node, "name").text = o["class"]
        ET.SubElement(node, "pose").text = "Unspecified"
        ET.SubElement(node, "truncated").text = str(int(o["truncated"]))
        ET.SubElement(node, "difficult").text = str(int(o["difficult"]))
        box = ET.SubElement(node, "bndbox")
        for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), o["box"]):
            ET.SubElement(box, tag).text = str(value + 1)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"


@dataclass
class SceneSummary:
    root: str
    classes: tuple
    size: int
    seed: int
    images: dict  # {"train": n, "val": n}
    objects: dict  # {"train": {class: n}, "val": {class: n}}
    difficult: dict  # the same layout: objects marked <difficult>
    truncated: dict  # the same layout: objects cut by the border
    seconds: float

    def total(self, what="objects", split=None):
        """Sum of ``images``/``objects``/``difficult``/``truncated`` over one split or both."""
        counts = getattr(self, what)
        splits = [split] if split else list(counts)
        return sum(counts[s] if what == "images" else sum(counts[s].values()) for s in splits)


def _write(path, data):
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def instance_png(masks):
    """A VOC ``SegmentationObject`` palette PNG (bytes) of (N, H, W) visible coverages: value k + 1 where object k
    covers more than half of the pixel (the pixels its box is tight around), 0 elsewhere."""
    values = np.zeros(masks.shape[1:], np.uint8)
    for k, m in enumerate(masks):
        values[m > 0.5] = k + 1
    im = Image.fromarray(values, "P")
    palette = np.zeros((256, 3), np.uint8)
    palette[1:] = np.random.default_rng(0).integers(64, 256, (255, 3))
    im.putpalette(palette.ravel().tolist())
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def make_scenes(root, train=600, val=150, size=160, classes=CLASSES_DEFAULT, max_objects=5, seed=0, quality=90,
                progress=None, min_objects=1, masks=False):
    """Writes a Pascal VOC folder of ``train`` + ``val`` scenes (ids ``train_NNNNNN``, ``val_NNNNNN``); returns a
    :class:`SceneSummary`.

    Each scene draws from its own generator seeded by (seed, split, number), so changing one count does not change
    the other scenes. Every file is written atomically; ``summary.json`` is removed first and written last, so a
    folder that has it is complete. ``progress(done, total)`` is called after each scene when given. ``masks``: also
    the instance masks, as VOC gives them (``SegmentationObject/``, ``ImageSets/Segmentation/``; see the module).
    """
    classes = tuple(sorted(classes))
    _check(size, classes, min_objects, max_objects)
    if train < 1 or val < 1:
        raise ValueError("need at least one training and one validation scene")
    tic = time.time()
    summary_path = os.path.join(root, "summary.json")
    with contextlib.suppress(FileNotFoundError):
        os.remove(summary_path)
    counts = {"images": {}, "objects": {}, "difficult": {}, "truncated": {}}
    done, total = 0, train + val
    for split_no, (split, n) in enumerate((("train", train), ("val", val))):
        ids = []
        for key in ("objects", "difficult", "truncated"):
            counts[key][split] = dict.fromkeys(classes, 0)
        for i in range(n):
            image_id = f"{split}_{i:06d}"
            image, objects, coverage = draw_scene(np.random.default_rng([seed, split_no, i]), size, classes,
                                                  max_objects, min_objects, return_masks=True)
            if masks:
                _write(os.path.join(root, "SegmentationObject", image_id + ".png"), instance_png(coverage))
            buf = io.BytesIO()
            Image.fromarray(image).save(buf, "JPEG", quality=quality)
            _write(os.path.join(root, "JPEGImages", image_id + ".jpg"), buf.getvalue())
            _write(os.path.join(root, "Annotations", image_id + ".xml"),
                   voc_annotation(image_id, size, objects).encode("utf-8"))
            for o in objects:
                counts["objects"][split][o["class"]] += 1
                counts["difficult"][split][o["class"]] += o["difficult"]
                counts["truncated"][split][o["class"]] += o["truncated"]
            ids.append(image_id)
            done += 1
            if progress:
                progress(done, total)
        counts["images"][split] = n
        _write(os.path.join(root, "ImageSets", "Main", split + ".txt"), "".join(i + "\n" for i in ids).encode())
        if masks:
            _write(os.path.join(root, "ImageSets", "Segmentation", split + ".txt"),
                   "".join(i + "\n" for i in ids).encode())
    _write(os.path.join(root, "classes.txt"), "".join(c + "\n" for c in classes).encode())
    summary = SceneSummary(root, classes, size, seed, seconds=time.time() - tic, **counts)
    record = {k: v for k, v in asdict(summary).items() if k not in ("root", "seconds")}  # the same bytes anywhere
    write_json(summary_path, dict(record, quality=quality, min_objects=min_objects, max_objects=max_objects))
    return summary


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("root", help="output folder (gets a Pascal VOC layout: JPEGImages/, Annotations/, ImageSets/)")
    p.add_argument("--train", type=int, default=600, help="training scenes")
    p.add_argument("--val", type=int, default=150, help="validation scenes")
    p.add_argument("--size", type=int, default=160, help="image side in pixels (>= 64)")
    p.add_argument("--classes", default=",".join(CLASSES_DEFAULT),
                   help=f"comma-separated shape classes, of {','.join(CLASSES)}")
    p.add_argument("--max-objects", type=int, default=5)
    p.add_argument("--min-objects", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quality", type=int, default=90, help="JPEG quality")
    p.add_argument("--masks", action="store_true",
                   help="also each object's instance mask (SegmentationObject/, for pack-detection --masks)")
    args = p.parse_args(argv)
    try:
        s = make_scenes(args.root, args.train, args.val, args.size, args.classes.split(","), args.max_objects,
                        args.seed, args.quality, min_objects=args.min_objects, masks=args.masks)
    except ValueError as err:
        sys.exit(f"error: {err}")
    print(f"{s.total('images')} scenes ({s.images['train']} train + {s.images['val']} val, {s.size} px) with "
          f"{s.total()} objects of {len(s.classes)} classes ({s.total('difficult')} difficult, "
          f"{s.total('truncated')} truncated) in {s.root} ({s.seconds:.1f} s)")
    return s


if __name__ == "__main__":
    main()
