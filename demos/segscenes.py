"""Seeded semantic-segmentation scenes of several families, written as a Pascal VOC segmentation folder.

Why several families: a segmentation recipe chosen on one kind of picture learns its quirks, and the recipe chosen
here is judged on a real VOC-layout dataset nobody here has. So the families differ in what carries the class:

- ``shapes`` (the segmentation demo's data): the detection demo's scenes (:func:`demos.scenes.draw_scene`): 1-5
  shapes (circle, cross, square, star, triangle), 8-30 % of the side, occluding each other, over textured,
  cluttered backgrounds. The class is the outline; colours are random.
- ``textures``: "stuff": the image is cut into 2-7 wavy Voronoi regions, each one class; a region's class is its
  texture (bricks, checks, dots, grid, stripes), at random orientation, scale and colours. Background (class 0) is
  texture-free (flat, gradient or blotches). Region outlines carry nothing.
- ``colours``: the class is the colour (hue range: red, yellow, green, blue, purple) of 1-5 objects of random
  outline (blobs, polygons, ellipses, any demo shape) with shading and grain, on natural-ish desaturated backgrounds
  under heavy clutter: desaturated or between-range-hued decoys of the same outlines and strokes (background).
  The opposite cue from ``shapes``.
- ``small``: 4-12 small shapes (radius 4-10 % of the side) of the ``shapes`` classes, at low contrast, blurred and
  noisy: fine detail at small crops.

Labels are what the geometry covers, not guesses from the pixels: each pixel's class is the one covering at least
``LABEL_AT`` (0.75) of it (anti-aliased coverage, objects drawn later hiding earlier ones); a pixel no class covers
that much (the anti-aliased border, about half a pixel wide) is 255, "not counted", as VOC marks its boundaries.
A placement that would leave a labelled object fewer than ``MIN_CORE`` labelled pixels is drawn again. Every class
is drawn with the same probability (objects or regions), independently of position, size and colour (except where
colour is the class).

    python -m demos.segscenes out/segscenes --family textures --train 600 --val 150 --size 128 --seed 0

writes ``JPEGImages/<id>.jpg``, ``SegmentationClass/<id>.png`` (palette PNG, VOC colour map, pixel value = class
index, 0 = background, 255 = not counted), ``ImageSets/Segmentation/{train,val}.txt``, ``classes.txt`` (line i =
class i) and, last, ``summary.json`` (per-class pixel counts; a folder without it is incomplete). Read it with
``resnest_gluon.dense.segmentation_eval.SegmentationFolder(root, split="val")``. The same seed gives
byte-identical files; a rerun overwrites them.
"""
import argparse
import colorsys
import contextlib
import functools
import io
import math
import os
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from demos import scenes as scene_data
from demos.shapes import _SHAPES, SUPERSAMPLE, background, clutter, finish, grainy, luma, random_colour
from resnest_gluon.atomic import atomic_path, write_json

__all__ = ["FAMILIES", "IGNORE", "LABEL_AT", "MIN_CORE", "SegSummary", "voc_palette", "label_map", "draw",
           "make_segmentation_scenes", "main"]

IGNORE = 255  # VOC's "not counted" value
LABEL_AT = 0.75  # a pixel belongs to a class covering at least this much of it; else (an edge) it is IGNORE
MIN_CORE = 6  # labelled pixels every labelled object keeps, or its placement is drawn again
PLACEMENT_TRIES = 10

SHAPE_CLASSES = scene_data.CLASSES_DEFAULT  # circle, cross, square, star, triangle
TEXTURE_CLASSES = ("bricks", "checks", "dots", "grid", "stripes")
# hue ranges (degrees, centre +- HUE_HALF_WIDTH) of the colour classes; the gaps between them stay unlabelled
HUES = {"red": 0.0, "yellow": 55.0, "green": 120.0, "blue": 220.0, "purple": 295.0}
HUE_HALF_WIDTH = 16.0
FAMILIES = {
    "shapes": ("background",) + SHAPE_CLASSES,
    "textures": ("background",) + TEXTURE_CLASSES,
    "colours": ("background",) + tuple(HUES),
    "small": ("background",) + SHAPE_CLASSES,
}


def voc_palette(count=256):
    """``(count, 3)`` uint8: the Pascal VOC colour map (the same as ``resnest_gluon.dense.drawing.palette``,
    without importing MXNet)."""
    i = np.arange(count)
    colours = np.zeros((count, 3), np.int64)
    for bit in range(8):
        for channel in range(3):
            colours[:, channel] |= ((i >> (3 * bit + channel)) & 1) << (7 - bit)
    return colours.astype(np.uint8)


_PALETTE = voc_palette().reshape(-1).tolist()


def label_map(num_classes, labels, visible):
    """``(H, W)`` uint8 class map from per-object visible coverage ``visible`` (each (H, W) in [0, 1]) of classes
    ``labels``; what no object covers is background (0). A pixel takes the class covering >= ``LABEL_AT`` of it,
    else ``IGNORE``."""
    size = visible[0].shape if len(visible) else None
    if size is None:
        raise ValueError("label_map needs at least one coverage map")
    cover = np.zeros((num_classes,) + size, np.float32)
    for label, seen in zip(labels, visible):
        cover[label] += seen
    cover[0] += np.clip(1 - cover.sum(0), 0, 1)  # covered by nothing drawn: background
    best = cover.argmax(0).astype(np.uint8)
    best[cover.max(0) < LABEL_AT - 1e-6] = IGNORE
    return best


# ---------------------------------------------------------------------------------------------- placing objects

def _footprint(polys, centre, radius, angle, aspect=1.0, mirror=False):
    """``(x0, y0, mask)``: anti-aliased coverage of ``polys`` ([(unit polygon, 255 fill / 0 cut)], as
    ``demos.shapes``) scaled by ``radius`` (x stretched by ``aspect``, y shrunk by it), rotated, on a square crop
    whose corner is image pixel (x0, y0)."""
    c, s = math.cos(angle), math.sin(angle)
    rot = np.array([[c, -s], [s, c]])
    scale = np.array([aspect * (-1.0 if mirror else 1.0), 1.0 / aspect]) * radius
    pts = [(np.asarray(p, np.float64) * scale) @ rot.T for p, _ in polys]
    reach = max(float(np.abs(p).max()) for p in pts) + 2
    cx, cy = centre
    x0, y0 = math.floor(cx - reach), math.floor(cy - reach)
    side = max(math.ceil(cx + reach) - x0, math.ceil(cy + reach) - y0)
    big = Image.new("L", (side * SUPERSAMPLE, side * SUPERSAMPLE), 0)
    draw = ImageDraw.Draw(big)
    for p, (_, value) in zip(pts, polys):
        draw.polygon([tuple(q) for q in (p + [cx - x0, cy - y0]) * SUPERSAMPLE], fill=value)
    mask = np.asarray(big.resize((side, side), Image.BOX), np.float32) / 255.0
    return x0, y0, mask


def _paste(size, footprint):
    """The footprint's coverage on a ``size x size`` image (what falls outside is dropped)."""
    full = np.zeros((size, size), np.float32)
    shared = scene_data._overlap((0, 0, size, size), scene_data._rect(footprint))
    if shared:
        full[shared[0]] = footprint[2][shared[1]]
    return full


def _bbox(cover, pad=1):
    rows, cols = np.flatnonzero(cover.any(1)), np.flatnonzero(cover.any(0))
    if not len(rows):
        return None
    return max(rows[0] - pad, 0), rows[-1] + pad + 1, max(cols[0] - pad, 0), cols[-1] + pad + 1


def _place(rng, size, slots, propose, min_visible, colour_for=None, tries=PLACEMENT_TRIES):
    """Places an object of each label of ``slots`` in turn, later over earlier, where one fits in ``tries``
    placements. ``propose(rng, label) -> footprint``; label 0 is a decoy (background: it hides, it is not
    protected). A placement is drawn again when it would leave a labelled
    object (itself included) under ``MIN_CORE`` labelled pixels or under ``min_visible`` of its area in the image.
    ``colour_for(rng, touching, colours)`` (touching: indices of placed objects the new one touches; colours: theirs
    so far) gives the new object's colour, or None to draw the placement again. Returns ``(labels, covers, visible, colours)``."""
    labels, covers, visible, colours = [], [], [], []
    for label in slots:
        label = int(label)
        for _ in range(tries):
            footprint = propose(rng, label)
            cover = _paste(size, footprint)
            area = float(cover.sum())
            if area < 1 or (label and (cover >= LABEL_AT).sum() < MIN_CORE):
                continue
            hidden = cover > 0
            seen = [v * (1 - cover) for v in visible]
            if any(lab and ((s >= LABEL_AT).sum() < MIN_CORE or s.sum() < min_visible * c.sum())
                   for lab, s, c in zip(labels, seen, covers)):
                continue
            colour = None
            if colour_for is not None:
                box = _bbox(hidden)
                near = np.zeros_like(hidden)
                near[box[0]:box[1], box[2]:box[3]] = True
                touching = [i for i, v in enumerate(visible) if (v[near] > 0).any()]
                colour = colour_for(rng, touching, colours)
                if colour is None:
                    continue
            visible = seen + [cover]
            labels.append(label)
            covers.append(cover)
            colours.append(colour)
            break
    return labels, covers, visible, colours


def _log_uniform(rng, low, high):
    return math.exp(rng.uniform(math.log(low), math.log(high)))


# ---------------------------------------------------------------------------------------------- random outlines

def _blob(rng, n=48):
    t = np.linspace(0, 2 * math.pi, n, endpoint=False)
    r = np.ones(n)
    for k in range(2, 6):
        r += rng.uniform(0, 0.35 / k) * np.cos(k * t + rng.uniform(0, 2 * math.pi))
    r /= r.max()
    return np.stack([r * np.cos(t), r * np.sin(t)], 1)


def _polygon(rng):
    n = int(rng.integers(4, 9))
    t = np.sort(rng.uniform(0, 2 * math.pi, n))
    r = rng.uniform(0.55, 1.0, n)
    return np.stack([r * np.cos(t), r * np.sin(t)], 1)


_SHAPE_NAMES = tuple(sorted(_SHAPES))


def _random_outline(rng):
    """Polygons of a random outline (blob, polygon, ellipse or any demo shape) and an aspect ratio."""
    kind = rng.integers(4)
    aspect = math.exp(rng.uniform(-0.4, 0.4))
    if kind == 0:
        return [(_blob(rng), 255)], aspect
    if kind == 1:
        return [(_polygon(rng), 255)], aspect
    if kind == 2:
        return _SHAPES["circle"], aspect
    return _SHAPES[_SHAPE_NAMES[rng.integers(len(_SHAPE_NAMES))]], 1.0


def _paint(img, cover, fill):
    """Paints ``fill(rows, cols)`` (an (h, w, 3) or broadcastable patch for those slices) where ``cover`` is."""
    box = _bbox(cover > 0, pad=0)
    if box is None:
        return
    rows, cols = slice(box[0], box[1]), slice(box[2], box[3])
    a = cover[rows, cols, None]
    img[rows, cols] = img[rows, cols] * (1 - a) + fill(rows, cols) * a


# ---------------------------------------------------------------------------------------------- families

def _draw_shapes(rng, size):
    image, objects, masks = scene_data.draw_scene(rng, size, SHAPE_CLASSES, max_objects=5, min_objects=1,
                                                  return_masks=True)
    labels = [1 + SHAPE_CLASSES.index(o["class"]) for o in objects]
    return image, label_map(len(FAMILIES["shapes"]), labels, list(masks)), labels


def _smooth_field(rng, size, cells, channels=1):
    """Smooth random values in [0, 1]: ``cells`` x ``cells`` random numbers resized bicubically."""
    out = []
    for _ in range(channels):
        coarse = Image.fromarray(rng.random((cells, cells), np.float32), "F")
        out.append(np.asarray(coarse.resize((size, size), Image.BICUBIC), np.float32))
    return np.stack(out) if channels > 1 else out[0]


def _flat_background(rng, size):
    """Texture-free: flat, a gradient, or soft blotches between two random colours."""
    a, b = random_colour(rng), random_colour(rng)
    kind = rng.integers(3)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    if kind == 0:
        t = np.zeros((size, size), np.float32)
    elif kind == 1:
        angle = rng.uniform(0, 2 * math.pi)
        t = math.cos(angle) * xx + math.sin(angle) * yy
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    else:
        t = np.clip(_smooth_field(rng, size, int(rng.integers(3, 6))), 0, 1)
    return a * (1 - t[..., None]) + b * t[..., None]


def _texture(name, rng, x, y, size):
    """A texture ``name`` in [0, 1] over pixel coordinates ``x``, ``y``: random period (4-12 % of the side),
    orientation and phase."""
    period = rng.uniform(0.04, 0.12) * size
    angle = rng.uniform(0, math.pi)
    c, s = math.cos(angle), math.sin(angle)
    u, v = (c * x + s * y) / period, (-s * x + c * y) / period
    u, v = u + rng.uniform(0, 1), v + rng.uniform(0, 1)
    if name == "stripes":
        return 0.5 + 0.5 * np.sin(2 * math.pi * u)
    if name == "checks":
        return ((np.floor(u) + np.floor(v)) % 2).astype(np.float32)
    if name == "dots":
        fu, fv = u - np.floor(u) - 0.5, v - np.floor(v) - 0.5
        return (np.hypot(fu, fv) < rng.uniform(0.2, 0.33)).astype(np.float32)
    if name == "grid":
        width = rng.uniform(0.12, 0.22)
        fu, fv = u - np.floor(u), v - np.floor(v)
        return ((fu < width) | (fv < width)).astype(np.float32)
    if name == "bricks":
        row = np.floor(v)
        fv = v - row
        fu = (u * 0.5 + 0.5 * (row % 2)) % 1.0  # bricks twice as long as high, every other row shifted
        return ((fv < 0.15) | (fu < 0.08)).astype(np.float32)
    raise ValueError(name)


REGION_SUPERSAMPLE = 2  # region borders are wavy, not straight: a coarser anti-aliasing looks the same


@functools.lru_cache(maxsize=8)
def _grid(size, step=1.0):
    """(y, x) pixel-centre coordinates of a ``size x size`` grid, ``step`` apart (read-only: shared)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) * np.float32(step)
    yy.flags.writeable = xx.flags.writeable = False
    return yy, xx


def _draw_textures(rng, size):
    classes = FAMILIES["textures"]
    n = int(rng.integers(2, 8))
    k = REGION_SUPERSAMPLE
    big = size * k
    seeds = rng.uniform(-0.1 * size, 1.1 * size, (n, 2))
    # wavy borders: the Voronoi cells of coordinates displaced by a smooth random field
    warp = (_smooth_field(rng, big, 4, 2) - 0.5) * 2 * rng.uniform(0.04, 0.12) * size
    yy, xx = _grid(big, 1.0 / k)
    wx, wy = xx + warp[0], yy + warp[1]
    cell = np.stack([(wx - sx) ** 2 + (wy - sy) ** 2 for sx, sy in seeds]).argmin(0)
    pixel = (np.arange(big) // k)[:, None] * size + (np.arange(big) // k)[None, :]
    cover = np.bincount((cell * (size * size) + pixel).ravel(), minlength=n * size * size)
    cover = cover.reshape(n, size, size).astype(np.float32) / (k * k)
    labels = [int(v) for v in rng.integers(0, len(classes), n)]
    y, x = _grid(size)
    small_warp = warp[:, ::k, ::k] * rng.uniform(0, 0.5)  # textures bend a little too
    img = np.zeros((size, size, 3), np.float32)
    for label, c in zip(labels, cover):
        if label == 0:
            fill = _flat_background(rng, size)
        else:
            t = _texture(classes[label], rng, x + small_warp[0], y + small_warp[1], size)
            a = random_colour(rng)
            b = random_colour(rng)
            while abs(luma(a) - luma(b)) < 60:
                b = random_colour(rng)
            fill = a * (1 - t[..., None]) + b * t[..., None]
        _paint(img, c, lambda rows, cols: fill[rows, cols])
    image = finish(rng, size, np.clip(img, 0, 255))
    present = [lab for lab, c in zip(labels, cover) if lab and (c >= LABEL_AT).any()]
    return image, label_map(len(classes), labels, list(cover)), present


def _hsv(h_degrees, s, v):
    return np.array(colorsys.hsv_to_rgb((h_degrees / 360.0) % 1.0, s, v), np.float32) * 255


def _class_colour(rng, label):
    hue = list(HUES.values())[label - 1] + rng.uniform(-HUE_HALF_WIDTH, HUE_HALF_WIDTH)
    return _hsv(hue, rng.uniform(0.55, 1.0), rng.uniform(0.45, 1.0))


def _decoy_colour(rng):
    """Background colours: mostly desaturated; sometimes saturated, of a hue between the classes' ranges."""
    if rng.random() < 0.75:
        return _hsv(rng.uniform(0, 360), rng.uniform(0, 0.22), rng.uniform(0.1, 0.95))
    centres = sorted(HUES.values())
    gaps = [(a, b) for a, b in zip(centres, centres[1:] + [centres[0] + 360])]
    a, b = gaps[rng.integers(len(gaps))]
    margin = HUE_HALF_WIDTH + 8  # well clear of either neighbouring class
    return _hsv(rng.uniform(a + margin, b - margin), rng.uniform(0.5, 1.0), rng.uniform(0.45, 1.0))


def _natural_background(rng, size):
    """Blotches at several scales between two desaturated colours, with a faint fine grain."""
    a, b = (_hsv(rng.uniform(0, 360), rng.uniform(0, 0.2), rng.uniform(0.15, 0.9)) for _ in range(2))
    t = sum(w * _smooth_field(rng, size, cells) for w, cells in ((0.55, 3), (0.3, 7), (0.15, 16)))
    t = np.clip(t, 0, 1)
    return a * (1 - t[..., None]) + b * t[..., None]


def _draw_colours(rng, size):
    classes = FAMILIES["colours"]
    img = _natural_background(rng, size)
    n_objects, n_decoys = int(rng.integers(1, 6)), int(rng.integers(3, 11))
    order = rng.permutation([1] * n_objects + [0] * n_decoys)  # decoys under and over the objects

    def propose(rng, label):  # outline and size are drawn apart from the label
        polys, aspect = _random_outline(rng)
        radius = size * _log_uniform(rng, 0.06, 0.3)
        centre = rng.uniform(0.4 * radius, size - 0.4 * radius, 2)
        return _footprint(polys, centre, radius, rng.uniform(0, 2 * math.pi), aspect, rng.random() < 0.5)

    slots = [int(rng.integers(1, len(classes))) if is_object else 0 for is_object in order]
    labels, covers, visible, _ = _place(rng, size, slots, propose, 0.35)
    y, x = _grid(size)
    for label, cover in zip(labels, covers):
        colour = _class_colour(rng, label) if label else _decoy_colour(rng)
        angle, strength = rng.uniform(0, 2 * math.pi), rng.uniform(0, 0.5) / size
        pattern = TEXTURE_CLASSES[rng.integers(len(TEXTURE_CLASSES))] if rng.random() < 0.3 else None

        def fill(rows, cols):  # shading and, sometimes, a darker pattern of the same hue: neither is the class
            yy, xx = y[rows, cols] - size / 2, x[rows, cols] - size / 2
            shade = 1 + strength * (math.cos(angle) * xx + math.sin(angle) * yy)
            if pattern:
                shade = shade * (1 - 0.3 * _texture(pattern, rng, xx, yy, size))
            return grainy(rng, colour * shade[..., None], shade.shape + (3,))

        _paint(img, cover, fill)
    img = np.clip(img, 0, 255)
    strokes = Image.fromarray(img.astype(np.uint8))
    draw = ImageDraw.Draw(strokes)
    for _ in range(rng.integers(3, 9)):  # heavy clutter: strokes in background colours
        x0, y0 = rng.uniform(0, size, 2)
        length, a = rng.uniform(0.1, 0.4) * size, rng.uniform(0, 2 * math.pi)
        draw.line([(x0, y0), (x0 + length * math.cos(a), y0 + length * math.sin(a))],
                  fill=tuple(int(v) for v in _decoy_colour(rng)), width=int(rng.integers(1, 4)))
    img = np.asarray(strokes, np.float32) + rng.standard_normal((size, size, 3), np.float32) * rng.uniform(1, 5)
    out = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    if rng.random() < 0.25:
        out = out.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.0)))
    return np.asarray(out), label_map(len(classes), labels, visible), [lab for lab in labels if lab]


SMALL_RADIUS = (0.04, 0.10)  # fraction of the side (at least 4 px)
SMALL_CONTRAST = (40, 75)  # luma difference from the background's base colour
SMALL_NEIGHBOUR_CONTRAST = 30


def _draw_small(rng, size):
    classes = FAMILIES["small"]
    bg = random_colour(rng)
    img = background(rng, size, bg)
    img = bg + 0.5 * (img - bg)  # a quieter background: the contrast is low already

    def propose(rng, label):
        radius = max(4.0, size * rng.uniform(*SMALL_RADIUS))
        centre = rng.uniform(0.4 * radius, size - 0.4 * radius, 2)
        return _footprint(_SHAPES[classes[label]], centre, radius, rng.uniform(0, 2 * math.pi),
                                 mirror=rng.random() < 0.5)

    def colour_for(rng, touching, colours):
        limits = np.array([SMALL_NEIGHBOUR_CONTRAST] * len(touching))
        near = np.array([luma(colours[i]) for i in touching])
        for _ in range(8):
            c = random_colour(rng, 64)
            d = np.abs(luma(c) - luma(bg))
            ok = (d >= SMALL_CONTRAST[0]) & (d <= SMALL_CONTRAST[1])
            if len(near):
                ok &= (np.abs(luma(c)[:, None] - near) >= limits).all(1)
            if ok.any():
                return c[ok.argmax()]
        return None

    slots = rng.integers(1, len(classes), int(rng.integers(4, 13)))
    labels, covers, visible, colours = _place(rng, size, slots, propose, 0.5, colour_for)
    for cover, colour in zip(covers, colours):
        _paint(img, cover, lambda rows, cols: grainy(rng, colour, img[rows, cols].shape))
    img = clutter(rng, size, np.clip(img, 0, 255))
    out = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(
        rng.uniform(0.4, 1.1)))
    img = np.asarray(out, np.float32) + rng.standard_normal((size, size, 3), np.float32) * rng.uniform(5, 14)
    return np.clip(img, 0, 255).astype(np.uint8), label_map(len(classes), labels, visible), labels


_DRAW = {"shapes": _draw_shapes, "textures": _draw_textures, "colours": _draw_colours, "small": _draw_small}


def draw(family, rng, size=128):
    """``(image, labels, present)``: an RGB uint8 ``size x size`` scene of ``family``, its (H, W) uint8 class map
    (0 background, ``IGNORE`` on edges) and the class indices of the objects (regions, for ``textures``) drawn, one
    per object. Every nuisance factor comes from ``rng`` (a ``np.random.Generator``)."""
    _check(family, size)
    return _DRAW[family](rng, size)


def _check(family, size):
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; choose from {', '.join(FAMILIES)}")
    if size < 64:
        raise ValueError(f"size must be at least 64 px, got {size}")


# ---------------------------------------------------------------------------------------------- the folder

@dataclass
class SegSummary:
    root: str
    family: str
    classes: tuple  # index = pixel value
    size: int
    seed: int
    images: dict  # {"train": n, "val": n}
    pixels: dict  # {"train": {class: n, ..., "ignore": n}, "val": {...}}
    objects: dict  # {"train": {class: n}, "val": {...}}: objects (regions, for textures) drawn, background not
    images_with: dict  # {"train": {class: n}, ...}: images with at least one labelled pixel of the class
    seconds: float

    def total(self, what="images", split=None):
        counts = getattr(self, what)
        splits = [split] if split else list(counts)
        return sum(counts[s] if what == "images" else sum(counts[s].values()) for s in splits)


def _write(path, data):
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def mask_png(labels):
    """PNG bytes of an (H, W) uint8 class map: a palette ("P") image with VOC's colour map."""
    picture = Image.frombytes("P", (labels.shape[1], labels.shape[0]), np.ascontiguousarray(labels, np.uint8))
    picture.putpalette(_PALETTE)
    buf = io.BytesIO()
    picture.save(buf, "PNG")
    return buf.getvalue()


def make_segmentation_scenes(root, family="shapes", train=600, val=150, size=128, seed=0, quality=90,
                             progress=None):
    """Writes a Pascal VOC segmentation folder of ``train`` + ``val`` scenes of ``family`` (ids ``train_NNNNNN``,
    ``val_NNNNNN``); returns a :class:`SegSummary`.

    Each scene draws from its own generator seeded by (seed, split, number), so changing one count does not change
    the other scenes. Every file is written atomically; ``summary.json`` is removed first and written last, so a
    folder that has it is complete. ``progress(done, total)`` is called after each scene when given.
    """
    _check(family, size)
    if train < 1 or val < 1:
        raise ValueError("need at least one training and one validation scene")
    classes = FAMILIES[family]
    tic = time.time()
    summary_path = os.path.join(root, "summary.json")
    with contextlib.suppress(FileNotFoundError):
        os.remove(summary_path)
    counts = {"images": {}, "pixels": {}, "objects": {}, "images_with": {}}
    done, total = 0, train + val
    for split_no, (split, n) in enumerate((("train", train), ("val", val))):
        ids = []
        pixels = np.zeros(256, np.int64)
        objects = np.zeros(len(classes), np.int64)
        images_with = np.zeros(len(classes), np.int64)
        for i in range(n):
            image_id = f"{split}_{i:06d}"
            image, labels, present = _DRAW[family](np.random.default_rng([seed, split_no, i]), size)
            buf = io.BytesIO()
            Image.fromarray(image).save(buf, "JPEG", quality=quality)
            _write(os.path.join(root, "JPEGImages", image_id + ".jpg"), buf.getvalue())
            _write(os.path.join(root, "SegmentationClass", image_id + ".png"), mask_png(labels))
            here = np.bincount(labels.ravel(), minlength=256)
            pixels += here
            images_with += here[:len(classes)] > 0
            objects += np.bincount(present, minlength=len(classes)).astype(np.int64)
            ids.append(image_id)
            done += 1
            if progress:
                progress(done, total)
        counts["images"][split] = n
        counts["pixels"][split] = dict(zip(classes, pixels[:len(classes)].tolist()), ignore=int(pixels[IGNORE]))
        counts["objects"][split] = dict(zip(classes[1:], objects[1:].tolist()))
        counts["images_with"][split] = dict(zip(classes, images_with.tolist()))
        _write(os.path.join(root, "ImageSets", "Segmentation", split + ".txt"),
               "".join(i + "\n" for i in ids).encode())
    _write(os.path.join(root, "classes.txt"), "".join(c + "\n" for c in classes).encode())
    summary = SegSummary(root, family, classes, size, seed, seconds=time.time() - tic, **counts)
    record = {k: v for k, v in asdict(summary).items() if k not in ("root", "seconds")}  # the same bytes anywhere
    write_json(summary_path, dict(record, quality=quality, label_at=LABEL_AT, ignore=IGNORE))
    return summary


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("root", help="output folder (gets a Pascal VOC segmentation layout)")
    p.add_argument("--family", default="shapes", help=f"one of {', '.join(FAMILIES)}")
    p.add_argument("--train", type=int, default=600, help="training scenes")
    p.add_argument("--val", type=int, default=150, help="validation scenes")
    p.add_argument("--size", type=int, default=128, help="image side in pixels (>= 64)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quality", type=int, default=90, help="JPEG quality")
    args = p.parse_args(argv)
    try:
        s = make_segmentation_scenes(args.root, args.family, args.train, args.val, args.size, args.seed,
                                     args.quality)
    except ValueError as err:
        sys.exit(f"error: {err}")
    pixels = {c: sum(s.pixels[sp][c] for sp in s.pixels) for c in s.classes + ("ignore",)}
    everything = sum(pixels.values())
    shares = ", ".join(f"{c} {100 * n / everything:.1f}%" for c, n in pixels.items())
    print(f"{s.total('images')} {s.family} scenes ({s.images['train']} train + {s.images['val']} val, {s.size} px) "
          f"in {s.root} ({s.seconds:.1f} s); pixels: {shares}")
    return s


if __name__ == "__main__":
    main()
