"""Classifying image files with a ResNeSt: class names, top-k probabilities, the model's own eval protocol.

``Predictor('resnest50', pretrained=True).predict(['cat.jpg'])`` -> ``[[('tabby', 0.61), ...]]``. The images go
through :func:`~resnest_gluon.data.preprocess_image` with the model's ``DataConfig``, the very transform
``scripts/verify.py`` measures accuracy with, so a prediction here is what the published top-1 describes.
"""
import os

import mxnet as mx
import numpy as np

from .data import preprocess_image
from .deploy import input_dtype, optimize
from .zoo import classes_in_params, get_config, get_model, load_weights

__all__ = ["IMAGENET_CLASSES_FILE", "load_class_names", "softmax", "Predictor"]

# The 1000 ILSVRC-2012 class names in synset-sorted order (label i = line i), as GluonCV's ImageNet1kAttr.
# Two names repeat in that list; here they read 'crane (bird)'/'crane (machine)' and 'maillot'/'tank suit'.
IMAGENET_CLASSES_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "imagenet_classes.txt")


def load_class_names(path=None):
    """Class names, one per line (label i = line i); ``None`` gives the shipped ImageNet-1k names.

    Blank lines are errors (they would shift every label after them), except trailing ones.
    """
    path = path or IMAGENET_CLASSES_FILE
    if not os.path.isfile(path):
        raise FileNotFoundError(f"class names file not found: {path!r}")
    with open(path, encoding="utf-8") as f:
        lines = [line.rstrip("\r\n") for line in f]
    while lines and not lines[-1].strip():
        lines.pop()
    blank = [n for n, line in enumerate(lines, 1) if not line.strip()]
    if blank:
        raise ValueError(f"{path}:{blank[0]}: blank line in a class names file (one name per line, label i on "
                         f"line i + 1)")
    if not lines:
        raise ValueError(f"{path}: no class names in the file")
    return [line.strip() for line in lines]


def softmax(logits):
    """Row-wise softmax in float64 (stable: max subtracted)."""
    z = np.asarray(logits, np.float64)
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


class Predictor:
    """A model plus its class names, ready to classify images (paths, PIL images or RGB uint8 arrays).

    ``params``: a ``.params`` file (its classifier size sets the class count); ``pretrained``: the published
    ImageNet weights; ``classes``: a names file or a list (default: the shipped ImageNet names). A names count
    that differs from the model's classes is a ``ValueError`` naming both. ``dtype`` and, for int8, the calibration
    keywords (``calib_data``, ``calib_mode``, ``num_calib_batches``, ``exclude_first_conv``): see
    :func:`~resnest_gluon.deploy.optimize`; calibration batches must be preprocessed like :attr:`config` says.
    """

    def __init__(self, model="resnest50", params=None, pretrained=False, classes=None, ctx=None, root=None,
                 dtype="float32", **calibration):
        if (params is None) == (not pretrained):
            raise ValueError("give exactly one of params=FILE or pretrained=True")
        self.ctx = ctx or mx.cpu()
        names = classes if isinstance(classes, (list, tuple)) else load_class_names(classes)
        source = classes if isinstance(classes, str) else ("the given list" if classes else IMAGENET_CLASSES_FILE)
        num = classes_in_params(params) if params else 1000
        num = num or len(names)
        if len(names) != num:
            raise ValueError(f"{source} has {len(names)} class names but the model "
                             f"({params or model + ' pretrained'}) has {num} classes")
        self.names = list(names)
        self.config = get_config(model).data
        self.net = get_model(model, pretrained=pretrained, ctx=self.ctx, root=root, classes=num)
        if params:
            load_weights(self.net, params, ctx=self.ctx)
        self.net = optimize(self.net, dtype, self.ctx, **calibration)
        self.input_dtype = input_dtype(dtype)

    def probabilities(self, images):
        """``(N, classes)`` softmax probabilities of the images, float64."""
        images = list(images)
        if not images:
            return np.zeros((0, len(self.names)))
        x = mx.nd.concat(*[preprocess_image(img, self.config) for img in images], dim=0)
        return softmax(self.net(x.as_in_context(self.ctx).astype(self.input_dtype, copy=False)).asnumpy())

    def predict(self, images, topk=5):
        """Per image, the ``topk`` most probable ``(class name, probability)``, most probable first."""
        if topk < 1:
            raise ValueError(f"topk must be >= 1, got {topk}")
        out = []
        for row in self.probabilities(images):
            order = np.argsort(-row, kind="stable")[:topk]
            out.append([(self.names[k], float(row[k])) for k in order])
        return out
