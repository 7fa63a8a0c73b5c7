"""AutoAugment with the ImageNet policy of Cubuk et al. (arXiv 1805.09501, appendix): 25 sub-policies of two
(operation, probability, magnitude) steps, one sub-policy drawn per image. PIL ImageOps/ImageEnhance do the work.

Magnitudes 0-10 map linearly onto the paper's ranges: shear +-0.3, translate +-150/331 of the side (the paper's
150 px on 331 px images, relative because this runs before the crop on full-size images), rotate +-30 deg (the
geometric ones with a random sign), Color/Contrast/Brightness/Sharpness factor 0.1-1.9, Posterize 8 -> 4 bits
and Solarize threshold 256 -> 0 (stronger with the magnitude, as torchvision).
"""
import numpy as np
from PIL import Image, ImageEnhance, ImageOps

__all__ = ["IMAGENET_POLICY", "apply_op", "ImageNetAutoAugment"]

IMAGENET_POLICY = (
    (("Posterize", 0.4, 8), ("Rotate", 0.6, 9)),
    (("Solarize", 0.6, 5), ("AutoContrast", 0.6, None)),
    (("Equalize", 0.8, None), ("Equalize", 0.6, None)),
    (("Posterize", 0.6, 7), ("Posterize", 0.6, 6)),
    (("Equalize", 0.4, None), ("Solarize", 0.2, 4)),
    (("Equalize", 0.4, None), ("Rotate", 0.8, 8)),
    (("Solarize", 0.6, 3), ("Equalize", 0.6, None)),
    (("Posterize", 0.8, 5), ("Equalize", 1.0, None)),
    (("Rotate", 0.2, 3), ("Solarize", 0.6, 8)),
    (("Equalize", 0.6, None), ("Posterize", 0.4, 6)),
    (("Rotate", 0.8, 8), ("Color", 0.4, 0)),
    (("Rotate", 0.4, 9), ("Equalize", 0.6, None)),
    (("Equalize", 0.0, None), ("Equalize", 0.8, None)),
    (("Invert", 0.6, None), ("Equalize", 1.0, None)),
    (("Color", 0.6, 4), ("Contrast", 1.0, 8)),
    (("Rotate", 0.8, 8), ("Color", 1.0, 2)),
    (("Color", 0.8, 8), ("Solarize", 0.8, 7)),
    (("Sharpness", 0.4, 7), ("Invert", 0.6, None)),
    (("ShearX", 0.6, 5), ("Equalize", 1.0, None)),
    (("Color", 0.4, 0), ("Equalize", 0.6, None)),
    (("Equalize", 0.4, None), ("Solarize", 0.2, 4)),
    (("Solarize", 0.6, 5), ("AutoContrast", 0.6, None)),
    (("Invert", 0.6, None), ("Equalize", 1.0, None)),
    (("Color", 0.6, 4), ("Contrast", 1.0, 8)),
    (("Equalize", 0.8, None), ("Equalize", 0.6, None)),
)

_FILL = (128, 128, 128)  # what geometric ops expose, as in the paper's implementation


def _signed(value, rng):
    return -value if rng.rand() < 0.5 else value


def _affine(img, coeffs):
    return img.transform(img.size, Image.AFFINE, coeffs, resample=Image.NEAREST, fillcolor=_FILL)


def _enhance(cls):
    return lambda img, m, rng: cls(img).enhance(0.1 + 1.8 * m / 10)


_OPS = {
    "ShearX": lambda img, m, rng: _affine(img, (1, _signed(0.3 * m / 10, rng), 0, 0, 1, 0)),
    "ShearY": lambda img, m, rng: _affine(img, (1, 0, 0, _signed(0.3 * m / 10, rng), 1, 0)),
    "TranslateX": lambda img, m, rng: _affine(img, (1, 0, _signed(150 / 331 * m / 10 * img.size[0], rng), 0, 1, 0)),
    "TranslateY": lambda img, m, rng: _affine(img, (1, 0, 0, 0, 1, _signed(150 / 331 * m / 10 * img.size[1], rng))),
    "Rotate": lambda img, m, rng: img.rotate(_signed(30 * m / 10, rng), resample=Image.NEAREST, fillcolor=_FILL),
    "AutoContrast": lambda img, m, rng: ImageOps.autocontrast(img),
    "Equalize": lambda img, m, rng: ImageOps.equalize(img),
    "Invert": lambda img, m, rng: ImageOps.invert(img),
    "Posterize": lambda img, m, rng: ImageOps.posterize(img, 8 - int(round(4 * m / 10))),
    "Solarize": lambda img, m, rng: ImageOps.solarize(img, int(256 - 256 * m / 10)),
    "Color": _enhance(ImageEnhance.Color),
    "Contrast": _enhance(ImageEnhance.Contrast),
    "Brightness": _enhance(ImageEnhance.Brightness),
    "Sharpness": _enhance(ImageEnhance.Sharpness),
}


def apply_op(img, name, magnitude, rng):
    """One AutoAugment operation on a PIL RGB image (``magnitude`` 0-10, None for the magnitude-free ones)."""
    if name not in _OPS:
        raise ValueError(f"unknown AutoAugment operation {name!r}; known: {', '.join(sorted(_OPS))}")
    return _OPS[name](img, magnitude or 0, rng)


class ImageNetAutoAugment:
    """``aug(img, rng)``: a random sub-policy of ``policy`` on an RGB uint8 HWC array (returns the same kind).

    ``rng`` is a ``numpy.random.RandomState``: the same seed gives the same result.
    """

    def __init__(self, policy=IMAGENET_POLICY):
        self.policy = tuple(policy)
        for sub in self.policy:
            for name, _, _ in sub:
                if name not in _OPS:
                    raise ValueError(f"policy uses unknown operation {name!r}")

    def apply_subpolicy(self, img, index, rng, force=False):
        """Sub-policy ``index``; ``force=True`` applies both steps regardless of their probabilities."""
        pil = Image.fromarray(img) if isinstance(img, np.ndarray) else img
        for name, prob, magnitude in self.policy[index]:
            if force or rng.rand() < prob:
                pil = apply_op(pil, name, magnitude, rng)
        return np.asarray(pil) if isinstance(img, np.ndarray) else pil

    def __call__(self, img, rng):
        return self.apply_subpolicy(img, rng.randint(len(self.policy)), rng)
