"""Pictures of dense predictions: boxes and masks drawn on the image, colour-mapped class maps.

Colours are the Pascal VOC palette (class i always gets the same colour, in boxes, masks and class maps alike), so
a class map saved by :func:`class_map_image` is both a picture and, read back as a palette PNG, the class indices.
"""
import numpy as np
from PIL import Image, ImageDraw

__all__ = ["palette", "draw_objects", "class_map_image", "overlay"]


def palette(count=256):
    """``(count, 3)`` uint8 colours, the Pascal VOC colour map (class 0 black, then well-separated colours)."""
    colours = np.zeros((count, 3), np.uint8)
    for i in range(count):
        c, r, g, b = i, 0, 0, 0
        for bit in range(8):
            r |= ((c >> 0) & 1) << (7 - bit)
            g |= ((c >> 1) & 1) << (7 - bit)
            b |= ((c >> 2) & 1) << (7 - bit)
            c >>= 3
        colours[i] = r, g, b
    return colours


def _box_colour(label):
    return tuple(int(v) for v in palette(256)[(label + 1) % 256])  # class 0 must not be drawn black


def draw_objects(image, objects, alpha=0.5):
    """``image`` (RGB uint8 HWC) with the objects of :meth:`~resnest_gluon.dense.Detector.detect` drawn on it: masks
    blended in their class colour, boxes, and "class score" labels. Returns a PIL image."""
    img = np.array(image, np.float32)
    for obj in objects:
        if "mask" in obj:
            mask = obj["mask"]
            img[mask] = (1 - alpha) * img[mask] + alpha * np.array(_box_colour(obj["label"]), np.float32)
    picture = Image.fromarray(img.round().astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    for obj in reversed(objects):  # the best on top
        colour = _box_colour(obj["label"])
        x1, y1, x2, y2 = obj["box"]
        draw.rectangle([x1, y1, x2, y2], outline=colour, width=2)
        text = f"{obj['class']} {obj['score']:.2f}"
        left, top, right, bottom = draw.textbbox((x1, y1), text)
        top_y = max(0, y1 - (bottom - top) - 2)
        draw.rectangle([x1, top_y, x1 + right - left + 4, top_y + bottom - top + 2], fill=colour)
        draw.text((x1 + 2, top_y), text, fill=(255, 255, 255) if sum(colour) < 384 else (0, 0, 0))
    return picture


def class_map_image(labels):
    """A palette PNG-ready image of an (H, W) class map: pixel value = class index, colour = the class's."""
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() > 255):
        raise ValueError(f"a palette image holds class indices 0-255, got {labels.min()}-{labels.max()}")
    picture = Image.fromarray(labels.astype(np.uint8), mode="P")
    picture.putpalette(palette(256).reshape(-1).tolist())
    return picture


def overlay(image, labels, alpha=0.5):
    """``image`` (RGB uint8 HWC) with the class map's colours blended in at ``alpha``."""
    colours = palette(256)[np.clip(np.asarray(labels), 0, 255)].astype(np.float32)
    img = (1 - alpha) * np.asarray(image, np.float32) + alpha * colours
    return Image.fromarray(img.round().astype(np.uint8))
