"""Turn the bytes of one image file into an RGB uint8 array (or a reasoned rejection), and back into bytes.

Everything a real photo collection throws at a packer lands here: zero-byte and non-image files, truncated
or corrupt JPEGs (which OpenCV, and so ``ImageRecordIter``, would decode silently into grey bands), CMYK,
grayscale, 16-bit and palette images, transparency, and decompression bombs.

Policies:
* transparency (RGBA, LA, palette with a transparent colour) is composited on **white**: dropping alpha would
  expose whatever colour the encoder left under transparent pixels (often black or garbage);
* 16-bit images are scaled to 8 bits (``v * 255 / 65535``), not clipped;
* EXIF orientation is applied, as OpenCV's decoder does for pass-through records;
* images above ``max_pixels`` are decoded at a reduced scale when the format allows it without allocating the
  full image (JPEG DCT scaling, up to 1/8 per side), then resized to fit; anything else over the limit is
  rejected, so no file can make a worker allocate more than about ``max_pixels`` pixels.
"""
import io
import math
import warnings

import cv2
import numpy as np
from PIL import Image, ImageOps

from resnest_gluon.data.strict_images import load_strict

DEFAULT_MAX_PIXELS = 40_000_000  # ~ 7300 x 5500; the largest ImageNet train image is about 4 Mpx (~ 2600 x 1700)


class ImageRejected(Exception):
    """An image that cannot be packed; ``reason`` is a short stable key for the report."""

    def __init__(self, reason, detail):
        super().__init__("%s: %s" % (reason, detail))
        self.reason = reason
        self.detail = detail


def _open(data, max_pixels):
    if not data:
        raise ImageRejected("empty_file", "zero bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as e:
        raise ImageRejected("too_many_pixels", str(e)) from None
    except Image.UnidentifiedImageError:
        raise ImageRejected("not_an_image", "not a recognised image format (%s...)" % data[:8]) from None
    except Exception as e:  # header cut short or malformed
        raise ImageRejected("corrupt", "%s: %s" % (type(e).__name__, e)) from None
    return im


def _shrink_on_decode(im, max_pixels, notes):
    """Asks the decoder for a reduced-scale decode that fits ``max_pixels``; rejects what cannot be reduced."""
    w, h = im.size
    if w * h <= max_pixels:
        return
    if im.format != "JPEG":
        raise ImageRejected("too_many_pixels", "%dx%d = %d pixels > --max-pixels %d (only JPEG can be "
                            "downscaled while decoding)" % (w, h, w * h, max_pixels))
    scale = next((s for s in (2, 4, 8) if math.ceil(w / s) * math.ceil(h / s) <= max_pixels), None)
    if scale is None:
        raise ImageRejected("too_many_pixels", "%dx%d = %d pixels > 64 x --max-pixels %d"
                            % (w, h, w * h, max_pixels))
    im.draft(im.mode if im.mode in ("RGB", "L") else None, (math.ceil(w / scale), math.ceil(h / scale)))
    notes.append("downscaled")


def _to_rgb(im, notes):
    """Converts any PIL mode to RGB following the module's policies; records what was converted."""
    mode = im.mode
    if mode == "RGB":
        return np.asarray(im)
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im).astype(np.float64)
        if arr.min() < 0 or arr.max() > 65535:
            raise ImageRejected("unsupported_mode", "%s values outside 0..65535" % mode)
        notes.append("16bit")
        gray = np.round(arr * (255.0 / 65535.0)).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode == "P":
        notes.append("palette")
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        return _to_rgb(im, []) if im.mode == "RGBA" else np.asarray(im)
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        notes.append("alpha")
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
    if mode in ("L", "1"):
        notes.append("grayscale")
    elif mode == "CMYK":
        notes.append("cmyk")
    else:
        notes.append(mode.lower())
    try:
        return np.asarray(im.convert("RGB"))
    except Exception as e:
        raise ImageRejected("unsupported_mode", "cannot convert mode %s to RGB: %s" % (mode, e)) from None


def decode_rgb(data, max_pixels=DEFAULT_MAX_PIXELS, downscale_huge=True):
    """Returns ``(rgb uint8 HxWx3 array, notes, info)``; raises ImageRejected with a reason.

    ``notes`` lists the conversions applied (e.g. ``["cmyk"]``); ``info`` has the source ``format`` and
    ``mode`` (the pass-through decision needs them).
    """
    im = _open(data, max_pixels)
    info = {"format": im.format, "mode": im.mode, "size": im.size}
    notes = []
    if downscale_huge:
        _shrink_on_decode(im, max_pixels, notes)
    elif im.size[0] * im.size[1] > max_pixels:
        raise ImageRejected("too_many_pixels", "%dx%d = %d pixels > --max-pixels %d"
                            % (im.size + (im.size[0] * im.size[1], max_pixels)))
    try:
        load_strict(im)
        if im.getexif().get(0x0112, 1) != 1:
            im = ImageOps.exif_transpose(im)
            notes.append("exif_rotated")
    except ImageRejected:
        raise
    except OSError as e:
        reason = "truncated" if "truncated" in str(e).lower() else "corrupt"
        raise ImageRejected(reason, str(e)) from None
    except Exception as e:
        raise ImageRejected("corrupt", "%s: %s" % (type(e).__name__, e)) from None
    rgb = _to_rgb(im, notes)
    h, w = rgb.shape[:2]
    if w * h > max_pixels:  # JPEG draft rounds sizes up; finish the job exactly
        f = math.sqrt(max_pixels / float(w * h))
        rgb = cv2.resize(rgb, (max(1, int(w * f)), max(1, int(h * f))), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(rgb), notes, info


def resized_shape(width, height, shorter):
    """Target (width, height) with the shorter side = ``shorter``, as im2rec computes it (floor)."""
    if width > height:
        return max(1, width * shorter // height), shorter
    return shorter, max(1, height * shorter // width)


def resize_shorter(rgb, shorter):
    """Resizes so the shorter side equals ``shorter`` (0 keeps the size).

    Bilinear for shrinking by up to 2x (as im2rec; ~7x faster than area averaging), area averaging beyond
    that (bilinear would alias), bicubic for enlarging.
    """
    if not shorter:
        return rgb
    h, w = rgb.shape[:2]
    size = resized_shape(w, h, shorter)
    if size == (w, h):
        return rgb
    if size[0] > w:
        interp = cv2.INTER_CUBIC
    else:
        interp = cv2.INTER_LINEAR if 2 * size[0] >= w else cv2.INTER_AREA
    return cv2.resize(rgb, size, interpolation=interp)


def is_passthrough_jpeg(info, notes):
    """True when the original bytes can go into the record as they are: a fully decodable 3-channel JPEG."""
    return info["format"] == "JPEG" and info["mode"] == "RGB" and not notes
