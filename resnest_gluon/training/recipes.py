"""Named training recipes: defaults for ``scripts/train_imagenet.py`` chosen for a kind of data (``--recipe``).

Why presets: the official recipe (270 epochs, AutoAugment, mixup, DropBlock, random crops down to 8 % of the image)
is right for a million images and wrong for a few thousand, where it does not learn in the epochs a user gives it.
A recipe only changes flag *defaults*: a flag given on the command line wins. ``small`` was chosen by experiment on
four generated 10-class sets of different character (``benchmarks/small_data.py``; numbers in README), from scratch
and fine-tuning from a checkpoint trained on another set (the same settings did best there too).
"""
from dataclasses import dataclass, field
from types import MappingProxyType

__all__ = ["Recipe", "RECIPES", "DEFAULT_RECIPE", "get_recipe", "SEGMENTATION_RECIPES", "DEFAULT_SEGMENTATION_RECIPE"]


@dataclass(frozen=True)
class Recipe:
    """A name, one line saying what it is for, and the argparse defaults (``dest -> value``) it sets."""

    name: str
    summary: str
    defaults: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))

    def describe(self, given=()):
        """One start-up line: the recipe and which of its settings the command line replaced."""
        replaced = sorted(set(given) & set(self.defaults))
        line = f"recipe {self.name}: {self.summary}"
        if replaced:
            line += "; given on the command line instead: " + ", ".join("--" + d.replace("_", "-") for d in replaced)
        return line


IMAGENET = Recipe("imagenet", "the official ResNeSt ImageNet recipe (the flags' own defaults)")

SMALL = Recipe(
    "small",
    "thousands of images, from scratch or fine-tuning: 8 epochs, 2 warm-up, cosine, lr 0.2 per 128 images per worker "
    "with the classifier at 0.1x, batch 16, crops >= 80 % of the image, no AutoAugment/mixup/DropBlock, full-image evaluation",
    MappingProxyType({
        # Few images: small batches for more steps per epoch, a short schedule, and the highest learning rate that
        # stays stable (0.05 at 2 x 16 images; docs/small-data.md). At 10 classes the classifier's gradient is ~2x
        # its weights per step (every other layer: 0.1-0.7x): at the body's best rate it throws the loss above
        # ln(classes) after warm-up; 0.1x on the classifier alone keeps the run stable at 4x the ImageNet rate.
        "num_epochs": 8,
        "warmup_epochs": 2,
        "lr": 0.2,
        "classifier_lr_mult": 0.1,
        "batch_size": 16,
        # Regularisers of a 270-epoch ImageNet run slow a short run down more than they prevent overfitting in it.
        "auto_aug": False,
        "mixup": False,
        "dropblock_prob": 0.0,
        "final_drop": 0.0,
        # Small sets are mostly one object filling the picture, evaluated whole: crops that keep >= 80 % of it. In
        # 8 epochs the run is underfit, not overfit, and a train view much larger than the test view costs the most:
        # 0.5 -> 0.8 took the outline set from 37 % to 61 % and the strokes from 94 % to 98-99 % (docs/small-data.md).
        "min_random_area": 0.8,
        "crop_ratio": 1.0,
        # Short runs: see every epoch, keep every epoch.
        "val_interval": 1,
        "save_interval": 1,
        "log_interval": 10,
    }),
)

RECIPES = {r.name: r for r in (IMAGENET, SMALL)}
DEFAULT_RECIPE = IMAGENET.name


def get_recipe(name):
    """The :class:`Recipe` called ``name``; an unknown name is an error listing the known ones."""
    try:
        return RECIPES[name]
    except KeyError:
        raise ValueError(f"unknown recipe {name!r}; known: {', '.join(sorted(RECIPES))}") from None


# --------------------------------------------------------------------------------------------- segmentation
SEGMENTATION_GLUONCV = Recipe(
    "gluoncv", "GluonCV's ADE20K recipe for its deeplab_resnest* models (the flags' own defaults)")

SEGMENTATION_SMALL = Recipe(
    "small",
    "thousands of images on a few CPU cores, from a classification file of this project: DeepLabV3+ decoder at "
    "output stride 16, 8 epochs, batch 4, base size = crop 96, scale 0.85-1.15, no blur, no head dropout, class "
    "weights 1/sqrt(frequency), lr 0.02 per 16 images, auxiliary head at 0.4",
    MappingProxyType({
        # Chosen on four generated families (docs/segmentation.md, "Small data, measured"). In a few hundred steps
        # the run is short of steps, not of data: what gives more steps or a cleaner signal per second wins.
        # The decoder (stage 1, stride 4) keeps outlines at output stride 16, which costs half of 8's work.
        "decoder": True,
        "output_stride": 16,
        "num_epochs": 8,
        # batch 4 per worker: twice the steps of 8 for the same images (2 did not learn: BatchNorm over 2 images)
        "batch_size": 4,
        # whole images at 96 px (what one step costs on CPU decides); GluonCV's 0.5-2.0 scale range and blur are
        # regularisers of a 120-epoch run that only slow a short one down
        "base_size": 96,
        "crop_size": 96,
        "scale": (0.85, 1.15),
        "blur_p": 0.0,
        # GluonCV's dropout (0.5 after ASPP) and unweighted pixels slow the first epochs; mIoU counts every class
        # as much as the background, so rare classes pull harder (inverse square root of their frequency)
        "head_dropout": False,
        "class_weight_power": 0.5,
        "lr": 0.02,
        "aux_weight": 0.4,
        "val_interval": 1,
        "save_interval": 1,
        "log_interval": 10,
    }),
)

SEGMENTATION_RECIPES = {r.name: r for r in (SEGMENTATION_GLUONCV, SEGMENTATION_SMALL)}
DEFAULT_SEGMENTATION_RECIPE = SEGMENTATION_GLUONCV.name
