"""What a model's inputs look like, as plain data: the bottom layer of the package (it imports nothing of ours).

A weights file carries one of these configs (:mod:`resnest_gluon.trained`), so every later command evaluates the
model the way training validated it: :class:`DataConfig` for classifiers (resize, centre crop), and
:class:`DenseDataConfig` for detectors and segmenters (whole image, short side within a maximum).
"""
import numbers
from dataclasses import dataclass

__all__ = ["__version__", "IMAGENET_MEAN", "IMAGENET_STD", "INTERPOLATIONS", "interp_code", "DataConfig", "DenseDataConfig",
           "default_dense_data_config"]

__version__ = "0.1.0"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# OpenCV's (and MXNet's image operators') interpolation codes
INTERPOLATIONS = {"nearest": 0, "bilinear": 1, "bicubic": 2, "area": 3, "lanczos": 4}


def interp_code(interpolation):
    """OpenCV/MXNet interpolation code of a name ('bilinear', 'bicubic', ...) or of an int code."""
    if isinstance(interpolation, numbers.Integral) and 0 <= interpolation <= 4:
        return int(interpolation)
    try:
        return INTERPOLATIONS[str(interpolation).lower()]
    except KeyError:
        raise ValueError(f"interpolation must be one of {sorted(INTERPOLATIONS)} or 0-4, "
                         f"got {interpolation!r}") from None


def _check_normalisation(mean, std):
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise ValueError(f"mean and std must have 3 values (std > 0), got {mean} and {std}")


def _from_dict(cls, d, what):
    fields = set(cls.__dataclass_fields__)
    unknown = set(d) - fields
    if unknown:
        raise ValueError(f"unknown {what} keys {sorted(unknown)}")
    return cls(**{k: tuple(v) if k in ("mean", "std") else v for k, v in d.items()}).checked()


@dataclass(frozen=True)
class DataConfig:
    """What the evaluation transform needs: resize the short side to ``input_size / crop_pct``, centre-crop."""

    input_size: int = 224
    crop_pct: float = 0.875
    interpolation: str = "bilinear"  # or "bicubic"
    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD

    def to_dict(self):
        return {"input_size": self.input_size, "crop_pct": self.crop_pct, "interpolation": self.interpolation,
                "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, d):
        """The inverse of :meth:`to_dict`; missing keys take the defaults, wrong values raise ``ValueError``."""
        return _from_dict(cls, d, "data config")

    def checked(self):
        """Itself, after checking the values make sense (``ValueError`` naming the first that does not)."""
        if not isinstance(self.input_size, int) or self.input_size < 1:
            raise ValueError(f"input_size must be a positive integer, got {self.input_size!r}")
        if not 0 < self.crop_pct <= 1:
            raise ValueError(f"crop_pct must be in (0, 1], got {self.crop_pct!r}")
        interp_code(self.interpolation)  # a name the evaluation transform knows
        _check_normalisation(self.mean, self.std)
        return self


@dataclass(frozen=True)
class DenseDataConfig:
    """Resize the short side to ``short`` (long side at most ``max_size``), normalise with ``mean`` / ``std``.

    Detection and segmentation look at the whole image, so there is no centre crop. The defaults
    (:func:`default_dense_data_config`) are GluonCV's evaluation protocols: its FPN detectors validate at short
    800 / max 1333, its ADE20K segmenters at a long side of 520 (short = max = 520 gives exactly that).
    """

    short: int = 800
    max_size: int = 1333
    interpolation: str = "bilinear"
    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD

    def to_dict(self):
        return {"short": self.short, "max_size": self.max_size, "interpolation": self.interpolation,
                "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, d):
        """The inverse of :meth:`to_dict`; missing keys take the defaults, wrong values raise ``ValueError``."""
        return _from_dict(cls, d, "dense data config")

    def checked(self):
        """Itself, after checking the values make sense (``ValueError`` naming the first that does not)."""
        for key in ("short", "max_size"):
            value = getattr(self, key)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{key} must be a positive integer, got {value!r}")
        if self.max_size < self.short:
            raise ValueError(f"max_size ({self.max_size}) must be at least short ({self.short})")
        interp_code(self.interpolation)
        _check_normalisation(self.mean, self.std)
        return self

    def resized_shape(self, height, width):
        """``(new_height, new_width)`` of an image of that size, as GluonCV's ``resize_short_within`` computes it."""
        small, large = min(height, width), max(height, width)
        scale = self.short / small
        if round(scale * large) > self.max_size:
            scale = self.max_size / large
        return int(round(height * scale)), int(round(width * scale))


_DENSE_DEFAULTS = {"detection": DenseDataConfig(800, 1333), "segmentation": DenseDataConfig(520, 520)}


def default_dense_data_config(task):
    """GluonCV's evaluation transform for ``task`` (``"detection"`` or ``"segmentation"``)."""
    return _DENSE_DEFAULTS[task]
