"""Small generated 10-class image sets of different character, to choose and check ``--recipe small`` on.

Why several: a recipe tuned on one kind of picture learns its quirks. The sets differ in what carries the class and
what is noise:

- ``shapes``: coloured outlines on textured backgrounds with clutter (the demo's data, ``demos.shapes``);
- ``textures``: the class is a texture (stripes at an angle, checks, dots, rings, ...), at random scale, phase,
  colours and contrast: no object, no outline;
- ``strokes``: the digits 0-9 written as pen strokes, jittered, thick or thin, rendered at 8-16 px and scaled up,
  grey: blocky, low resolution, little texture;
- ``noisy``: grey shapes at low contrast under heavy pixel noise and blur.

    python -m benchmarks.small_sets out/small-sets --train-per-class 144 --val-per-class 36

writes ``out/small-sets/<set>/{train,val}/<class>/*.jpg`` for every set (or ``--sets strokes,noisy``).
"""
import argparse
import math
import os

if __name__ == "__main__" and not __package__:  # run as a file: rerun as python -m benchmarks.small_sets
    import _launch  # the script's folder is sys.path[0] when Python runs a file

    _launch.run_as_module(__file__)

import numpy as np  # noqa: E402
from PIL import Image, ImageDraw, ImageFilter  # noqa: E402

from demos import shapes as demo_data  # noqa: E402

# No class is the mirror image of another: training flips images left-right.
TEXTURES = ("bricks", "checks", "crosshatch", "diagonal", "dots", "horizontal", "noise", "radial", "rings", "vertical")
DIGITS = tuple(str(d) for d in range(10))


def _grid(size):
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    return xx - 0.5, yy - 0.5


def draw_texture(name, rng, size=64):
    """A texture class; period, phase, a small rotation, colours and contrast are random."""
    x, y = _grid(size)
    tilt = rng.uniform(-0.25, 0.25)  # radians: classes are 45 degrees apart at least
    c, s = math.cos(tilt), math.sin(tilt)
    x, y = c * x - s * y, s * x + c * y
    freq = rng.uniform(3, 7)
    phase = rng.uniform(0, 2 * math.pi)
    wave = lambda t: np.sin(2 * math.pi * freq * t + phase)  # noqa: E731
    if name == "horizontal":
        t = wave(y)
    elif name == "vertical":
        t = wave(x)
    elif name == "diagonal":  # either way: a left-right flip turns one into the other
        t = wave((x + rng.choice([-1, 1]) * y) / math.sqrt(2))
    elif name == "bricks":
        row = np.floor(y * freq * 2 + phase)
        t = ((np.abs(np.sin(math.pi * freq * 2 * y + phase)) < 0.3)
             | (np.abs(np.sin(math.pi * freq * (x + 0.5 / freq * (row % 2)))) < 0.25)) * 2 - 1.0
    elif name == "checks":
        t = wave(x) * wave(y) * 2
    elif name == "crosshatch":
        t = np.maximum(wave((x + y) / math.sqrt(2)), wave((x - y) / math.sqrt(2)))
    elif name == "dots":
        t = (np.cos(2 * math.pi * freq * x + phase) + np.cos(2 * math.pi * freq * y + phase) > 1.2) * 2 - 1.0
    elif name == "rings":
        cx, cy = rng.uniform(-0.3, 0.3, 2)
        t = wave(np.hypot(x - cx, y - cy))
    elif name == "radial":
        cx, cy = rng.uniform(-0.3, 0.3, 2)
        t = np.sin(rng.integers(5, 10) * np.arctan2(y - cy, x - cx) + phase)
    else:  # noise: smooth blobs at the same scale as the waves
        n = max(3, int(freq * 2))
        coarse = rng.random((n, n)).astype(np.float32)
        t = np.asarray(Image.fromarray((coarse * 255).astype(np.uint8)).resize((size, size), Image.BICUBIC),
                       np.float32) / 127.5 - 1
    t = np.clip(t, -1, 1) * 0.5 + 0.5
    a, b = rng.integers(0, 256, 3).astype(np.float32), rng.integers(0, 256, 3).astype(np.float32)
    while abs(demo_data.luma(a) - demo_data.luma(b)) < 60:
        b = rng.integers(0, 256, 3).astype(np.float32)
    img = a * (1 - t[..., None]) + b * t[..., None]
    img += rng.standard_normal(img.shape).astype(np.float32) * rng.uniform(2, 12)
    return np.clip(img, 0, 255).astype(np.uint8)


# Pen strokes of each digit in a unit box (x right, y down), as polylines.
def _arc(cx, cy, rx, ry, a0, a1, n=16):
    a = np.linspace(math.radians(a0), math.radians(a1), n)
    return list(zip(cx + rx * np.cos(a), cy + ry * np.sin(a)))


_DIGIT_STROKES = {
    "0": [_arc(0.5, 0.5, 0.3, 0.42, 0, 360, 32)],
    "1": [[(0.35, 0.25), (0.55, 0.08), (0.55, 0.92)]],
    "2": [_arc(0.5, 0.32, 0.28, 0.24, 200, 360) + [(0.74, 0.45), (0.22, 0.92), (0.8, 0.92)]],
    "3": [_arc(0.48, 0.3, 0.26, 0.22, 200, 450), _arc(0.48, 0.7, 0.3, 0.22, 270, 520)],
    "4": [[(0.65, 0.92), (0.65, 0.08), (0.2, 0.65), (0.85, 0.65)]],
    "5": [[(0.78, 0.08), (0.3, 0.08), (0.26, 0.45)] + _arc(0.5, 0.66, 0.3, 0.26, 230, 510)],
    "6": [_arc(0.62, 0.45, 0.35, 0.4, 250, 170, 12)[::-1] + _arc(0.5, 0.7, 0.26, 0.22, 180, 540)],
    "7": [[(0.2, 0.08), (0.8, 0.08), (0.4, 0.92)]],
    "8": [_arc(0.5, 0.28, 0.22, 0.2, 0, 360), _arc(0.5, 0.7, 0.28, 0.22, 0, 360)],
    "9": [_arc(0.5, 0.3, 0.26, 0.22, 0, 360), [(0.76, 0.3), (0.62, 0.92)]],
}


def draw_strokes(name, rng, size=64):
    """A handwritten-looking digit: jittered strokes, random slant/scale/thickness, rendered small, scaled up, grey."""
    low = int(rng.integers(8, 17))  # the drawing's real resolution
    big = low * 8
    img = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(img)
    slant, scale = rng.uniform(-0.3, 0.3), rng.uniform(0.6, 0.9)
    ox, oy = rng.uniform(-0.08, 0.08, 2)
    width = max(1, int(big * rng.uniform(0.06, 0.14)))
    for stroke in _DIGIT_STROKES[name]:
        pts = np.array(stroke, np.float32)
        pts += rng.normal(0, 0.02, pts.shape).astype(np.float32)  # a shaky hand
        pts[:, 0] += slant * (0.5 - pts[:, 1])
        pts = ((pts - 0.5) * scale + 0.5 + [ox, oy]) * big
        draw.line([tuple(p) for p in pts], fill=255, width=width, joint="curve")
    img = img.resize((low, low), Image.BOX).resize((size, size), Image.BILINEAR if rng.random() < 0.5 else
                                                   Image.NEAREST)
    t = np.asarray(img, np.float32) / 255.0
    ink, paper = (255.0, rng.uniform(0, 60)) if rng.random() < 0.5 else (rng.uniform(0, 60), 255.0)
    out = paper * (1 - t) + ink * t + rng.standard_normal(t.shape) * rng.uniform(0, 6)
    return np.repeat(np.clip(out, 0, 255).astype(np.uint8)[..., None], 3, 2)


def draw_noisy(name, rng, size=64):
    """A shape of the demo's classes in grey at low contrast under heavy noise and some blur."""
    radius = rng.uniform(0.25, 0.4) * size
    centre = rng.uniform(radius * 0.95, size - radius * 0.95, 2)
    mask = demo_data.shape_mask(name, size, centre, radius, rng.uniform(0, 2 * math.pi), mirror=rng.random() < 0.5)
    bg = rng.uniform(60, 196)
    fg = bg + rng.choice([-1, 1]) * rng.uniform(40, 70)
    img = bg * (1 - mask) + fg * mask + rng.standard_normal(mask.shape) * rng.uniform(20, 40)
    out = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(rng.uniform(0, 1.2)))
    return np.repeat(np.asarray(out)[..., None], 3, 2)


SETS = {
    "shapes": (demo_data.CLASSES, demo_data.draw_sample),
    "textures": (TEXTURES, draw_texture),
    "strokes": (DIGITS, draw_strokes),
    "noisy": (demo_data.CLASSES, draw_noisy),
}


def make(root, name, train_per_class, val_per_class, size=64, seed=0):
    classes, draw = SETS[name]
    return demo_data.make_dataset(os.path.join(root, name), train_per_class, val_per_class, size, seed,
                                  classes=classes, draw=draw)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("root")
    p.add_argument("--sets", default=",".join(SETS))
    p.add_argument("--train-per-class", type=int, default=144)
    p.add_argument("--val-per-class", type=int, default=36)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    for name in args.sets.split(","):
        s = make(args.root, name, args.train_per_class, args.val_per_class, args.size, args.seed)
        print(f"{name}: {s.total} images in {s.seconds:.1f} s -> {s.root}")


if __name__ == "__main__":
    main()
