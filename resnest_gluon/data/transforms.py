"""Per-image transforms on RGB uint8 HWC arrays: the evaluation protocol and the training augmentations.

Evaluation resizes with ``mx.image.imresize``: MXNet's bundled OpenCV, the very code ``mx.io.ImageRecordIter``
runs, so both evaluation backends agree to float rounding (opencv-python's own bicubic differs from it by one
grey level on ~2% of pixels). Training augmentations use ``cv2.resize`` directly (no exact-match need, and no
NDArray round trip in the worker processes). Interpolation codes 0-4 mean the same in all of them.
"""
import math
import os

import cv2
import mxnet as mx
import numpy as np

from ..config import IMAGENET_MEAN, IMAGENET_STD, INTERPOLATIONS, interp_code

__all__ = ["INTERPOLATIONS", "interp_code", "eval_crop", "eval_transform", "EvalTransform", "load_image",
           "random_resized_crop", "color_jitter", "lighting", "to_normalized_chw", "TrainTransform",
           "IMAGENET_PCA_EIGVAL", "IMAGENET_PCA_EIGVEC"]

LARGE_SIZE = 320  # from this input size on, the official protocol switches to a centred square + bicubic

# AlexNet-style PCA lighting on ImageNet RGB (0-255 units), the constants MXNet and GluonCV use
IMAGENET_PCA_EIGVAL = np.array([55.46, 4.794, 1.148], np.float32)
IMAGENET_PCA_EIGVEC = np.array([[-0.5675, 0.7192, 0.4009],
                                [-0.5808, -0.0045, -0.8140],
                                [-0.5836, -0.6948, 0.4203]], np.float32)
_GRAY = np.array([0.299, 0.587, 0.114], np.float32)


def _as_uint8_hwc(img, what="image"):
    if isinstance(img, mx.nd.NDArray):
        img = img.asnumpy()
    elif not isinstance(img, np.ndarray):  # a PIL image
        img = np.asarray(img.convert("RGB"))
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"{what} must be an RGB uint8 HWC array, got shape {img.shape} dtype {img.dtype}")
    return img


def eval_short_side(input_size, crop_pct):
    """The short side the < 320 px protocol resizes to: ``ceil(input_size / crop_pct)``."""
    return int(math.ceil(round(input_size / crop_pct, 6)))  # round() keeps 224 / 0.875 at exactly 256


def eval_crop(img, input_size, crop_pct, interpolation="bilinear"):
    """The official verify geometry: RGB uint8 HWC in, ``input_size``-square RGB uint8 out.

    Below 320 px: resize the short side to ``ceil(input_size / crop_pct)`` keeping the ratio (long side floored,
    as ``mx.image.resize_short``), then centre-crop (offsets floored, as ``mx.image.center_crop``).
    From 320 px on: a centred square of side ``crop_pct * short side`` (box corners rounded, as PIL's
    ``Image.crop``), resized to ``input_size`` x ``input_size``.
    """
    if not 0 < crop_pct <= 1:
        raise ValueError(f"crop_pct must be in (0, 1], got {crop_pct}")
    h, w = img.shape[:2]
    code = interp_code(interpolation)
    if input_size < LARGE_SIZE:
        short = eval_short_side(input_size, crop_pct)
        nh, nw = (short * h // w, short) if h > w else (short, short * w // h)
        img = _mx_resize(img, nw, nh, code)
        y0, x0 = (nh - input_size) // 2, (nw - input_size) // 2
        return img[y0:y0 + input_size, x0:x0 + input_size]
    side = crop_pct * min(h, w)
    top, left = round((h - side) / 2), round((w - side) / 2)
    img = img[top:round(top + side), left:round(left + side)]
    return _mx_resize(img, input_size, input_size, code)


def _mx_resize(img, w, h, code):
    return mx.image.imresize(mx.nd.array(img, dtype="uint8"), w, h, interp=code).asnumpy()


def to_normalized_chw(img, mean, std):
    """float CHW ``(img / 255 - mean) / std`` from an HWC image in 0-255 units (uint8 or float)."""
    img = img.astype(np.float32) * np.float32(1 / 255.0)
    img = (img - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(img.transpose(2, 0, 1))


class EvalTransform:
    """The one evaluation transform (training-time validation, verify, predict) of a ``DataConfig``.

    ``t(img)``: RGB uint8 HWC (numpy, NDArray or PIL) -> normalised CHW float32 NDArray.
    ``t.numpy(img)``: the same as a numpy array (what DataLoader workers return).
    """

    def __init__(self, data_config):
        self.config = data_config
        self.input_size = int(data_config.input_size)
        self.crop_pct = float(data_config.crop_pct)
        self.interpolation = data_config.interpolation
        interp_code(self.interpolation)  # fail early on an unknown name
        self.mean, self.std = tuple(data_config.mean), tuple(data_config.std)

    def numpy(self, img):
        img = eval_crop(_as_uint8_hwc(img), self.input_size, self.crop_pct, self.interpolation)
        return to_normalized_chw(img, self.mean, self.std)

    def __call__(self, img):
        return mx.nd.array(self.numpy(img), dtype="float32")

    def __repr__(self):
        return (f"EvalTransform(input_size={self.input_size}, crop_pct={self.crop_pct}, "
                f"interpolation={self.interpolation!r})")


def eval_transform(data_config):
    """``EvalTransform(data_config)``: pass ``net.data_config`` or ``get_config(name).data``."""
    return EvalTransform(data_config)


def load_image(source):
    """RGB uint8 HWC numpy image from a file path, bytes, a PIL image, an NDArray or a numpy array."""
    if isinstance(source, (str, os.PathLike)):
        if not os.path.isfile(source):
            raise FileNotFoundError(f"image file not found: {source!r}")
        with open(source, "rb") as f:
            data = f.read()
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if img is None:
            raise ValueError(f"{source}: not an image OpenCV can decode")
        return np.ascontiguousarray(img[:, :, ::-1])
    if isinstance(source, bytes):
        img = cv2.imdecode(np.frombuffer(source, np.uint8), cv2.IMREAD_COLOR)
        if img is None:
            raise ValueError(f"{len(source)} bytes that are not an image OpenCV can decode")
        return np.ascontiguousarray(img[:, :, ::-1])
    return _as_uint8_hwc(source)


# ----------------------------------------------------------------------------- training augmentations


def random_resized_crop(img, size, rng, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), interpolation="bilinear"):
    """Inception-style crop: a random box of ``scale`` x area and ``ratio`` aspect (10 tries, else the
    centred largest box within ``ratio``), resized to ``size`` x ``size``."""
    h, w = img.shape[:2]
    area = h * w
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        cw, ch = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            y0, x0 = rng.randint(0, h - ch + 1), rng.randint(0, w - cw + 1)
            break
    else:
        aspect = w / h
        cw, ch = (w, h) if ratio[0] <= aspect <= ratio[1] else \
            ((int(round(h * ratio[1])), h) if aspect > ratio[1] else (w, int(round(w / ratio[0]))))
        y0, x0 = (h - ch) // 2, (w - cw) // 2
    return cv2.resize(img[y0:y0 + ch, x0:x0 + cw], (size, size), interpolation=interp_code(interpolation))


def _brightness(img, a):
    return img * a


def _contrast(img, a):  # towards the mean grey level
    return img * a + (1 - a) * float((img @ _GRAY).mean())


def _saturation(img, a):  # towards the per-pixel grey
    return img * a + (1 - a) * (img @ _GRAY)[:, :, None]


def color_jitter(img, rng, brightness=0.4, contrast=0.4, saturation=0.4):
    """Brightness, contrast and saturation, each scaled by a factor in ``[1 - x, 1 + x]``, in random order,
    on a float32 0-255 image."""
    ops = [(op, amount) for op, amount in ((_brightness, brightness), (_contrast, contrast),
                                           (_saturation, saturation)) if amount]
    for k in rng.permutation(len(ops)):
        op, amount = ops[k]
        img = op(img, np.float32(rng.uniform(1 - amount, 1 + amount)))
    return img


def lighting(img, rng, alphastd=0.1):
    """PCA lighting noise (AlexNet): adds ``eigvec @ (alpha * eigval)``, ``alpha ~ N(0, alphastd)``."""
    if not alphastd:
        return img
    alpha = rng.normal(0, alphastd, 3).astype(np.float32)
    return img + IMAGENET_PCA_EIGVEC @ (alpha * IMAGENET_PCA_EIGVAL)


class TrainTransform:
    """The training recipe for the Gluon path: [AutoAugment] -> RandomResizedCrop -> flip -> ColorJitter ->
    PCA lighting -> normalise, on RGB uint8 HWC, returning CHW float32 numpy.

    ``interpolation=None`` picks bilinear below 320 px and bicubic from 320 px on (large-size training).
    """

    def __init__(self, input_size=224, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), interpolation=None,
                 jitter=0.4, lighting=0.1, mirror=True, autoaugment=False,
                 mean=IMAGENET_MEAN, std=IMAGENET_STD):
        self.input_size, self.scale, self.ratio = int(input_size), tuple(scale), tuple(ratio)
        self.interpolation = interpolation or ("bicubic" if self.input_size >= LARGE_SIZE else "bilinear")
        interp_code(self.interpolation)
        self.jitter, self.lighting, self.mirror = jitter, lighting, mirror
        self.mean, self.std = tuple(mean), tuple(std)
        if autoaugment is True:
            from .autoaugment import ImageNetAutoAugment

            autoaugment = ImageNetAutoAugment()
        self.autoaugment = autoaugment or None

    def __call__(self, img, rng):
        if self.autoaugment is not None:
            img = self.autoaugment(img, rng)
        img = random_resized_crop(img, self.input_size, rng, self.scale, self.ratio, self.interpolation)
        if self.mirror and rng.rand() < 0.5:
            img = img[:, ::-1]
        img = img.astype(np.float32)
        if self.jitter:
            img = color_jitter(img, rng, self.jitter, self.jitter, self.jitter)
        img = lighting(img, rng, self.lighting)
        return to_normalized_chw(img, self.mean, self.std)
