"""The evaluation transform of a dense model, as it travels in the model's information file.

Detection and segmentation look at the whole image, so there is no centre crop: the image is resized (aspect kept)
so its short side is ``short`` unless the long side would pass ``max_size``, then normalised. The defaults are
GluonCV's evaluation protocols: its FPN detectors validate at short 800 / max 1333 (``FasterRCNNDefaultValTransform``
with the largest training scale), its ADE20K segmenters at a long side of 520 (``base_size``; short = max = 520 gives
exactly that).
"""
from dataclasses import dataclass

from ..zoo import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["DenseDataConfig", "default_data_config"]


@dataclass(frozen=True)
class DenseDataConfig:
    """Resize the short side to ``short`` (long side at most ``max_size``), normalise with ``mean`` / ``std``."""

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
        unknown = set(d) - {"short", "max_size", "interpolation", "mean", "std"}
        if unknown:
            raise ValueError(f"unknown dense data config keys {sorted(unknown)}")
        return cls(**{k: tuple(v) if k in ("mean", "std") else v for k, v in d.items()}).checked()

    def checked(self):
        """Itself, after checking the values make sense (``ValueError`` naming the first that does not)."""
        for key in ("short", "max_size"):
            value = getattr(self, key)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{key} must be a positive integer, got {value!r}")
        if self.max_size < self.short:
            raise ValueError(f"max_size ({self.max_size}) must be at least short ({self.short})")
        from ..data.transforms import interp_code

        interp_code(self.interpolation)
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"mean and std must have 3 values (std > 0), got {self.mean} and {self.std}")
        return self

    def resized_shape(self, height, width):
        """``(new_height, new_width)`` of an image of that size, as GluonCV's ``resize_short_within`` computes it."""
        small, large = min(height, width), max(height, width)
        scale = self.short / small
        if round(scale * large) > self.max_size:
            scale = self.max_size / large
        return int(round(height * scale)), int(round(width * scale))


_DEFAULTS = {"detection": DenseDataConfig(800, 1333), "segmentation": DenseDataConfig(520, 520)}


def default_data_config(task):
    """GluonCV's evaluation transform for ``task`` (``"detection"`` or ``"segmentation"``)."""
    return _DEFAULTS[task]
