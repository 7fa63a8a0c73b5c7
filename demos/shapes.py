"""A small, seeded shape-classification dataset for the end-to-end demo (:mod:`demos.classification`).

Why procedural: the demo must run offline and show an accuracy that means something. The class is the *shape*
(circle, ring, square, frame, triangle, star, cross, crescent, heart, arrow); everything else -- position, scale,
rotation, mirror, foreground and background colours, background texture, noise and clutter strokes -- is drawn
independently of the class, so colour statistics carry no label information (a nearest-class-mean classifier on
mean RGB stays near chance; see ``tests/test_demo.py``) and a network has to learn outlines.

    python -m demos.shapes out/shapes --train-per-class 300 --val-per-class 60 --seed 0

writes ``out/shapes/{train,val}/<class>/<class>_NNNN.jpg``. The same seed gives byte-identical files.
"""
import argparse
import io
import math
import os
import sys
import time
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

__all__ = ["CLASSES", "DatasetSummary", "draw_sample", "shape_mask", "random_colour", "luma", "contrasting_colour",
           "background", "grainy", "finish", "make_dataset", "main"]

CLASSES = ("arrow", "circle", "crescent", "cross", "frame", "heart", "ring", "square", "star", "triangle")
SUPERSAMPLE = 4  # masks are drawn this many times larger, then box-filtered down: anti-aliased edges
MIN_CONTRAST = 100  # luma difference between a shape and its background: plainly visible to a person


def _regular(n, r=1.0, phase=0.0):
    a = phase + 2 * math.pi * np.arange(n) / n
    return np.stack([r * np.cos(a), r * np.sin(a)], 1)


def _star(points=5, inner=0.45):
    outer = _regular(points, 1.0, -math.pi / 2)
    inner_pts = _regular(points, inner, -math.pi / 2 + math.pi / points)
    return np.stack([outer, inner_pts], 1).reshape(-1, 2)


def _heart(n=64):
    t = np.linspace(0, 2 * math.pi, n, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    pts = np.stack([x, y], 1)
    return pts / np.abs(pts).max()


_ARROW = np.array([[-1.0, -0.22], [0.15, -0.22], [0.15, -0.6], [1.0, 0.0], [0.15, 0.6], [0.15, 0.22],
                   [-1.0, 0.22]])
_CROSS = np.array([[-0.3, -1], [0.3, -1], [0.3, -0.3], [1, -0.3], [1, 0.3], [0.3, 0.3], [0.3, 1], [-0.3, 1],
                   [-0.3, 0.3], [-1, 0.3], [-1, -0.3], [-0.3, -0.3]])
# Each class: a list of (polygon in unit coordinates, value 255 = fill / 0 = cut out), drawn in order.
_SHAPES = {
    "arrow": [(_ARROW, 255)],
    "circle": [(_regular(64), 255)],
    "crescent": [(_regular(64), 255), (_regular(64, 0.85) + [0.45, -0.1], 0)],
    "cross": [(_CROSS, 255)],
    "frame": [(_regular(4, 1.0, math.pi / 4), 255), (_regular(4, 0.62, math.pi / 4), 0)],
    "heart": [(_heart(), 255)],
    "ring": [(_regular(64), 255), (_regular(64, 0.58), 0)],
    "square": [(_regular(4, 1.0, math.pi / 4), 255)],
    "star": [(_star(), 255)],
    "triangle": [(_regular(3, 1.0, -math.pi / 2), 255)],
}
assert tuple(sorted(_SHAPES)) == CLASSES  # make-list numbers classes by sorted folder name


def shape_mask(name, size, centre, radius, angle, mirror=False):
    """An anti-aliased ``size x size`` float mask in [0, 1] of shape ``name`` (radius and centre in pixels)."""
    big = size * SUPERSAMPLE
    mask = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(mask)
    c, s = math.cos(angle), math.sin(angle)
    rot = np.array([[c, -s], [s, c]])
    for poly, value in _SHAPES[name]:
        pts = poly * [-1.0, 1.0] if mirror else poly
        pts = (pts @ rot.T) * radius + centre
        draw.polygon([tuple(p) for p in pts * SUPERSAMPLE], fill=value)
    mask = mask.resize((size, size), Image.BOX)
    return np.asarray(mask, np.float32) / 255.0


def random_colour(rng, n=None):
    """A uniformly random RGB colour (float32; ``n`` of them as (n, 3)), drawn apart from the class so that it
    carries no label."""
    return rng.integers(0, 256, 3 if n is None else (n, 3)).astype(np.float32)


_LUMA = np.array([0.299, 0.587, 0.114])


def luma(rgb):
    """Brightness as a person sees it (ITU-R 601 weights): contrast is judged on it, not on hue. Colours in the
    last axis; a float for one colour."""
    return float(np.dot(rgb, _LUMA)) if np.ndim(rgb) == 1 else np.dot(rgb, _LUMA)


def contrasting_colour(rng, lumas, min_contrast=MIN_CONTRAST, tries=None, batch=1):
    """A random colour whose luma differs by at least ``min_contrast`` (one number, or one per luma) from each of
    ``lumas``, or None after ``tries`` draws (None: draw until one does). Rejection keeps the colour otherwise
    uniform, so it stays label-free. ``batch`` colours are drawn at a time: faster when few qualify."""
    lumas, limits = np.asarray(lumas, np.float64), np.broadcast_to(min_contrast, (len(lumas),))
    n = 0
    while tries is None or n < tries:
        colours = random_colour(rng, batch)
        ok = (np.abs(luma(colours)[:, None] - lumas) >= limits).all(1)
        if ok.any():
            return colours[ok.argmax()]
        n += batch
    return None


def background(rng, size, base):
    """Solid, gradient, faint stripes or blotches around the colour ``base``: texture the net must learn to ignore."""
    kind = rng.integers(4)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    other = np.clip(base + rng.uniform(-30, 30, 3), 0, 255)
    if kind == 0:
        t = np.zeros_like(xx)
    elif kind == 1:
        a = rng.uniform(0, 2 * math.pi)
        t = (np.cos(a) * xx + np.sin(a) * yy)
        t = (t - t.min()) / max(t.max() - t.min(), 1e-6)
    elif kind == 2:
        a, freq = rng.uniform(0, math.pi), rng.uniform(3, 9)
        t = 0.5 + 0.25 * np.sin(2 * math.pi * freq * (np.cos(a) * xx + np.sin(a) * yy))  # half contrast
    else:
        coarse = rng.random((5, 5), np.float32)
        t = np.asarray(Image.fromarray((coarse * 255).astype(np.uint8)).resize((size, size), Image.BICUBIC),
                       np.float32) / 255.0
    return base * (1 - t[..., None]) + other * t[..., None]


def clutter(rng, size, img):
    """Up to two thin random strokes and dots in random colours, much smaller than the shape."""
    layer = Image.fromarray(img.astype(np.uint8))
    draw = ImageDraw.Draw(layer)
    for _ in range(rng.integers(0, 3)):
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            x0, y0 = rng.uniform(0, size, 2)
            length, a = rng.uniform(0.1, 0.25) * size, rng.uniform(0, 2 * math.pi)
            draw.line([(x0, y0), (x0 + length * math.cos(a), y0 + length * math.sin(a))], fill=colour, width=1)
        else:
            x0, y0 = rng.uniform(0, size, 2)
            r = rng.uniform(0.5, 1.8)
            draw.ellipse([x0 - r, y0 - r, x0 + r, y0 + r], fill=colour)
    return np.asarray(layer, np.float32)


def grainy(rng, colour, shape):
    """A float32 ``shape`` (H, W, 3) patch of ``colour`` with per-pixel noise of random strength: some shapes are
    flat, some grainy."""
    return colour + rng.standard_normal(shape, np.float32) * rng.uniform(0, 5)


def finish(rng, size, img):
    """Clutter strokes, sensor noise and sometimes a slight blur over a painted float image; RGB uint8."""
    img = clutter(rng, size, img)
    img = img + rng.standard_normal(img.shape, np.float32) * rng.uniform(1, 5)
    out = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    if rng.random() < 0.25:
        out = out.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.0)))
    return np.asarray(out)


def draw_sample(name, rng, size=64):
    """One ``size x size`` RGB uint8 image of class ``name``; every nuisance factor comes from ``rng``."""
    radius = rng.uniform(0.25, 0.4) * size  # the shape spans 50-80 % of the side
    margin = radius * 0.95  # the shape may touch the border a little, never leave the centre crop entirely
    centre = rng.uniform(margin, size - margin, 2)
    mask = shape_mask(name, size, centre, radius, rng.uniform(0, 2 * math.pi), mirror=rng.random() < 0.5)
    fg = random_colour(rng)
    bg = contrasting_colour(rng, [luma(fg)])  # visible to a person; colours stay independent of the class
    img = background(rng, size, bg)
    img = img * (1 - mask[..., None]) + grainy(rng, fg, (size, size, 3)) * mask[..., None]
    return finish(rng, size, img)


@dataclass
class DatasetSummary:
    root: str
    classes: tuple
    counts: dict  # {"train": n per class, "val": n per class}
    size: int
    seed: int
    seconds: float

    @property
    def total(self):
        return len(self.classes) * sum(self.counts.values())


def make_dataset(root, train_per_class=300, val_per_class=60, size=64, seed=0, quality=90, progress=None,
                 classes=CLASSES, draw=draw_sample):
    """Writes ``root/{train,val}/<class>/<class>_NNNN.jpg``; returns a :class:`DatasetSummary`.

    Each (split, class) draws from its own seeded generator, so changing one count does not change the other
    split's images. ``progress(done, total)`` is called after each image when given. ``classes`` and
    ``draw(name, rng, size)`` make another set the same way (``benchmarks/small_sets.py``).
    """
    if size < 64:
        raise ValueError(f"size must be at least 64 px, got {size}")
    if train_per_class < 1 or val_per_class < 1:
        raise ValueError("need at least one training and one validation image per class")
    tic = time.time()
    counts = {"train": train_per_class, "val": val_per_class}
    total, done = len(classes) * (train_per_class + val_per_class), 0
    for split_no, (split, n) in enumerate(counts.items()):
        for label, name in enumerate(sorted(classes)):
            folder = os.path.join(root, split, name)
            os.makedirs(folder, exist_ok=True)
            rng = np.random.default_rng([seed, split_no, label])
            for i in range(n):
                buf = io.BytesIO()
                Image.fromarray(draw(name, rng, size)).save(buf, "JPEG", quality=quality)
                with open(os.path.join(folder, f"{name}_{i:04d}.jpg"), "wb") as f:
                    f.write(buf.getvalue())
                done += 1
                if progress:
                    progress(done, total)
    return DatasetSummary(root, tuple(sorted(classes)), counts, size, seed, time.time() - tic)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("root", help="output folder (gets train/ and val/ class-per-folder trees)")
    p.add_argument("--train-per-class", type=int, default=300)
    p.add_argument("--val-per-class", type=int, default=60)
    p.add_argument("--size", type=int, default=64, help="image side in pixels (>= 64)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    try:
        s = make_dataset(args.root, args.train_per_class, args.val_per_class, args.size, args.seed)
    except ValueError as err:
        sys.exit(f"error: {err}")
    print(f"{s.total} images ({len(s.classes)} classes x {s.counts['train']} train + {s.counts['val']} val, "
          f"{s.size} px) in {s.root} ({s.seconds:.1f} s)")
    return s


if __name__ == "__main__":
    main()
