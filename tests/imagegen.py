"""Small class-per-folder image trees for tests, with every kind of awkward file a real dataset contains.

Each good image has a unique flat colour and size, so a test can tell from a decoded record which file it
came from; ``expected`` gives the RGB colour each should decode to after conversion (e.g. RGBA composited on
white).
"""
import io
import os
from dataclasses import dataclass

import numpy as np
from PIL import Image


@dataclass
class Sample:
    path: str  # relative to the tree root, '/'-separated
    label: int
    size: tuple = None  # (w, h) of the source image
    rgb: tuple = None  # expected decoded colour (good files)
    reason: str = None  # expected skip reason (bad files)
    note: str = None  # expected conversion note


# Sorted folder order gives the labels: n03_empty is empty but still owns label 2.
CLASSES = ["n01_cat", "n02_dog", "n03_empty", "n04_fish"]


def _bytes(im, fmt, **kw):
    f = io.BytesIO()
    im.save(f, fmt, **kw)
    return f.getvalue()


def _flat(size, rgb):
    return Image.new("RGB", size, tuple(rgb))


def _noisy_jpeg(size, seed=0):
    rng = np.random.RandomState(seed)
    return _bytes(Image.fromarray(rng.randint(0, 256, (size[1], size[0], 3)).astype(np.uint8)), "JPEG", quality=90)


def _rgba_on_white(rgb, alpha):
    a = alpha / 255.0
    return tuple(int(round(c * a + 255 * (1 - a))) for c in rgb)


def make_tree(root, huge_side=400):
    """Writes the tree under ``root``; returns ``{relative path: Sample}`` for every listed file."""
    samples = {}

    def put(rel, data, **kw):
        full = os.path.join(root, rel)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "wb") as f:
            f.write(data)
        samples[rel] = Sample(rel, CLASSES.index(rel.split("/")[0]), **kw)

    # class 0
    put("n01_cat/a.jpg", _bytes(_flat((64, 48), (200, 40, 40)), "JPEG", quality=95), size=(64, 48), rgb=(200, 40, 40))
    put("n01_cat/b.JPEG", _bytes(_flat((48, 80), (40, 200, 40)), "JPEG", quality=95), size=(48, 80), rgb=(40, 200, 40))
    put("n01_cat/gray.jpg", _bytes(Image.new("L", (56, 56), 90), "JPEG"), size=(56, 56), rgb=(90, 90, 90),
        note="grayscale")
    put("n01_cat/cmyk.jpg", _bytes(_flat((60, 50), (30, 60, 220)).convert("CMYK"), "JPEG", quality=95),
        size=(60, 50), rgb=(30, 60, 220), note="cmyk")
    valid = _noisy_jpeg((80, 64))
    put("n01_cat/truncated.jpg", valid[: len(valid) // 2], reason="truncated")
    put("n01_cat/zero.jpg", b"", reason="empty_file")
    # class 1
    put("n02_dog/c.png", _bytes(_flat((96, 64), (220, 220, 40)), "PNG"), size=(96, 64), rgb=(220, 220, 40))
    put("n02_dog/rgba.png", _bytes(Image.new("RGBA", (64, 64), (0, 0, 200, 128)), "PNG"), size=(64, 64),
        rgb=_rgba_on_white((0, 0, 200), 128), note="alpha")
    put("n02_dog/palette.png", _bytes(_flat((64, 56), (150, 30, 180)).convert("P"), "PNG"), size=(64, 56),
        rgb=(150, 30, 180), note="palette")
    put("n02_dog/deep.png", _bytes(Image.fromarray(np.full((52, 70), 50000, np.uint16), "I;16"), "PNG"),
        size=(70, 52), rgb=(195, 195, 195), note="16bit")
    put("n02_dog/notes.jpg", b"these are my notes, not a picture\n", reason="not_an_image")
    # class 2: empty folder
    os.makedirs(os.path.join(root, "n03_empty"), exist_ok=True)
    # class 3
    put("n04_fish/big.jpg", _bytes(_flat((huge_side, huge_side * 3 // 4), (20, 120, 220)), "JPEG", quality=95),
        size=(huge_side, huge_side * 3 // 4), rgb=(20, 120, 220), note="downscaled")
    put("n04_fish/d.jpg", _bytes(_flat((72, 72), (240, 150, 90)), "JPEG", quality=95), size=(72, 72),
        rgb=(240, 150, 90))
    put("n04_fish/e.jpg", _bytes(_flat((50, 90), (120, 90, 60)), "JPEG", quality=95), size=(50, 90),
        rgb=(120, 90, 60))
    put("n04_fish/huge.png", _bytes(_flat((300, 300), (1, 2, 3)), "PNG"), reason="too_many_pixels")
    with open(os.path.join(root, "n04_fish", "readme.txt"), "w") as f:  # not an image extension: not listed
        f.write("fish\n")
    return samples
