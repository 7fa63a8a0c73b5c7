"""Classifying image files with a ResNeSt: class names, top-k probabilities, the model's own eval protocol.

``Predictor('resnest50', pretrained=True).predict(['cat.jpg'])`` -> ``[[('tabby', 0.61), ...]]``. The images go
through :func:`~resnest_gluon.data.preprocess_image` with the model's ``DataConfig``, the very transform
``scripts/verify.py`` measures accuracy with, so a prediction here is what the published top-1 describes.
"""
import dataclasses
import os

import mxnet as mx
import numpy as np

from .data import preprocess_image
from .deploy import BACKENDS, engine_for, input_dtype, optimize
from .deploy.onnx_quantize import onnx_precision
from .trained import IMAGENET_CLASSES_FILE, is_onnx, load_class_names, load_trained, resolve

__all__ = ["IMAGENET_CLASSES_FILE", "load_class_names", "softmax", "Predictor"]


def softmax(logits):
    """Row-wise softmax in float64 (stable: max subtracted)."""
    z = np.asarray(logits, np.float64)
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


class Predictor:
    """A model plus its class names, ready to classify images (paths, PIL images or RGB uint8 arrays).

    ``params``: a trained weights file (a checkpoint, a ``save_trained`` file, an exported ``P-0000.params`` or
    ``P-symbol.json``): its information (:mod:`resnest_gluon.trained`) gives the model, classes, class names and
    evaluation transform, so ``Predictor(params="runs/x/ckpt-0007.params")`` is enough. ``pretrained``: the
    published ImageNet weights of ``model``. ``model`` / ``classes`` (a names file or a list) that contradict the
    file are a ``ValueError`` naming both; for a bare ``.params`` they say what the file cannot (default
    ``resnest50``; the ImageNet names for 1000 classes). ``data_config``: a :class:`~resnest_gluon.zoo.DataConfig`
    replacing the file's. ``dtype`` and, for int8, the calibration keywords (``calib_data``, ``calib_mode``,
    ``num_calib_batches``, ``exclude_first_conv``): see :func:`~resnest_gluon.deploy.optimize`; calibration batches
    must be preprocessed as :attr:`config` says.

    ``backend``: ``'mxnet'`` (default for weights files), ``'onnxruntime'`` (default for an ``.onnx`` file) or
    ``'openvino'``: an engine runs the ONNX file given as ``params`` (:func:`~resnest_gluon.deploy.export_onnx`
    wrote its information into it), or the network exported on the fly; ``threads`` sets its thread count, and
    ``dtype`` is float32, bfloat16 (OpenVINO) or int8: a quantized file as it is, a float one quantized with the
    calibration keywords (:mod:`resnest_gluon.deploy.engines`). ``dtype`` defaults to float32, and to an ``.onnx``
    file's own precision.
    """

    def __init__(self, model=None, params=None, pretrained=False, classes=None, ctx=None, root=None,
                 dtype=None, data_config=None, backend=None, threads=None, **calibration):
        if (params is None) == (not pretrained):
            raise ValueError("give exactly one of params=FILE or pretrained=True")
        onnx_file = params is not None and is_onnx(params)
        if dtype is None:  # the file's own precision (a quantized .onnx: int8), else float32
            dtype = onnx_precision(params) if onnx_file and os.path.isfile(params) else "float32"
        backend = backend or ("onnxruntime" if onnx_file else "mxnet")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        if onnx_file and backend == "mxnet":
            raise ValueError(f"{params} is an ONNX file: run it with the onnxruntime or openvino backend")
        self.ctx, self.backend, self.engine = ctx or mx.cpu(), backend, None
        changes = dataclasses.asdict(data_config) if data_config else {}
        self.net = None
        if onnx_file:
            info = resolve(params, model, class_names=classes, data_changes=changes)
        elif params:
            self.net = load_trained(params, ctx=self.ctx, model=model, class_names=classes, **changes)
            info = self.net.model_info
        else:
            info = resolve(model=model, class_names=classes, data_changes=changes, pretrained=True)
            self.net = info.build(self.ctx, pretrained=True, root=root)
        if info.class_names is None:
            raise ValueError(f"{params} has {info.num_classes} classes and no class names beside it: give them "
                             f"(--classes FILE, one name per line; classes= in Python)")
        self.info, self.names, self.config = info, list(info.class_names), info.data_config
        if backend == "mxnet":
            self.net = optimize(self.net, dtype, self.ctx, **calibration)
            self.input_dtype = input_dtype(dtype)
            return
        self.engine = engine_for(info, backend, params, self.net, threads, dtype, **calibration)
        self.net, self.input_dtype = None, "float32"

    def logits(self, batch):
        """The network's output for a preprocessed ``(N, 3, S, S)`` batch (NDArray or numpy), as numpy."""
        if self.engine is not None:
            return self.engine(batch.asnumpy() if isinstance(batch, mx.nd.NDArray) else batch)
        batch = batch if isinstance(batch, mx.nd.NDArray) else mx.nd.array(batch)
        return self.net(batch.as_in_context(self.ctx).astype(self.input_dtype, copy=False)).asnumpy()

    def probabilities(self, images):
        """``(N, classes)`` softmax probabilities of the images, float64."""
        images = list(images)
        if not images:
            return np.zeros((0, len(self.names)))
        x = mx.nd.concat(*[preprocess_image(img, self.config) for img in images], dim=0)
        return softmax(self.logits(x))

    def predict(self, images, topk=5):
        """Per image, the ``topk`` most probable ``(class name, probability)``, most probable first."""
        if topk < 1:
            raise ValueError(f"topk must be >= 1, got {topk}")
        out = []
        for row in self.probabilities(images):
            order = np.argsort(-row, kind="stable")[:topk]
            out.append([(self.names[k], float(row[k])) for k in order])
        return out
