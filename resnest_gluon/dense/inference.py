"""Running a trained dense model on images: its own evaluation transform, results in the image's own pixels.

    detector = Detector("runs/det/final.params")            # model, classes and transform from its .json
    objects = detector.detect("street.jpg", threshold=0.5)  # [{"label", "class", "score", "box", ("mask")}]
    segmenter = Segmenter("runs/seg/final.params")
    labels = segmenter.segment("street.jpg")                # (H, W) class index per pixel

Both hybridize the network (static memory); on CPU our backbone runs its split attention as the fused operator
(:mod:`resnest_gluon.ops.attention_op`) when it is built, inside GluonCV's traced FPN as well. ``scripts/detect.py``
and ``scripts/segment.py`` draw the results.
"""
import cv2
import mxnet as mx
import numpy as np

from ..data.transforms import interp_code, load_image
from ..trained import load_trained
from . import dense_task

__all__ = ["prepare", "preprocess", "run_detector", "class_names_of", "Detector", "Segmenter"]


def prepare(image, config):
    """``(chw, (scale_y, scale_x))``: the image (a path, an array, ...: see :func:`~resnest_gluon.data.load_image`)
    resized as ``config`` (a :class:`~resnest_gluon.dense.DenseDataConfig`) says and normalised, a (3, h, w) float32
    numpy array (no MXNet: DataLoader workers can call it), and the factors from its pixels to the original's."""
    img = load_image(image)
    height, width = img.shape[:2]
    new_h, new_w = config.resized_shape(height, width)
    img = cv2.resize(img, (new_w, new_h), interpolation=interp_code(config.interpolation))
    x = (img.astype(np.float32) / 255 - np.array(config.mean, np.float32)) / np.array(config.std, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1)), (height / new_h, width / new_w)


def preprocess(image, config, ctx=mx.cpu()):
    """``(x, (scale_y, scale_x))``: :func:`prepare`'s image as a (1, 3, h, w) batch on ``ctx``, and its factors."""
    x, scale = prepare(image, config)
    return mx.nd.array(x[None], ctx=ctx), scale


def run_detector(net, x, scale, size):
    """``(ids, scores, boxes, masks)`` of every detection of ``net`` (a GluonCV-style detector) on the batch of one
    image ``x`` from :func:`preprocess`, rows of id < 0 (padding) dropped, in the network's order.

    ``boxes`` are in the original image's pixels: scaled by ``scale`` and clipped to ``size`` = (height, width),
    which is GluonCV's validation (``BBoxClipToImage`` on the resized image, then the scale back) in the other
    order, so the bounds are exactly the image's. ``masks``: Mask R-CNN's per-box probabilities (28 x 28), else
    None. Runs in inference mode whatever the caller records (a network being trained is left as it is).
    """
    with mx.autograd.pause(train_mode=False):
        out = [o[0].asnumpy() for o in net(x)]
    ids, scores = out[0][:, 0], out[1][:, 0]
    keep = np.flatnonzero(ids >= 0)
    sy, sx = scale
    height, width = size
    boxes = np.clip(out[2][keep] * np.array([sx, sy, sx, sy], np.float32), 0, [width, height, width, height])
    return ids[keep].astype(np.int64), scores[keep], boxes.astype(np.float32), \
        (out[3][keep] if len(out) == 4 else None)


def class_names_of(net):
    """The class names of a dense model built or loaded by this project: its own, else ``class 0``, ``class 1``..."""
    names = getattr(net, "class_names", None)
    return list(names) if names else [f"class {i}" for i in range(net.num_classes)]


class _DenseRunner:
    """A trained dense model of one task, loaded from its file (see :func:`resnest_gluon.load_trained`)."""

    task = None

    def __init__(self, params, ctx=None, model=None, class_names=None, **data_changes):
        self.ctx = ctx or mx.cpu()
        self.net = load_trained(params, ctx=self.ctx, model=model, class_names=class_names, **data_changes)
        if dense_task(self.net.model_name) != self.task:
            raise ValueError(f"{params} holds a {self.net.model_name}, a {dense_task(self.net.model_name)} model, "
                             f"not a {self.task} model")
        self.info, self.config = self.net.model_info, self.net.data_config
        self.names = class_names_of(self.net)
        self.net.hybridize(static_alloc=True)

    @classmethod
    def of_network(cls, net, ctx=None):
        """A runner of ``net`` as it is in memory (a model being trained: its weights, classes and evaluation
        transform), without a file; the caller hybridizes it for inputs of any size."""
        if dense_task(net.model_name) != cls.task:
            raise ValueError(f"{net.model_name} is a {dense_task(net.model_name)} model, not a {cls.task} model")
        runner = cls.__new__(cls)
        runner.ctx, runner.net = ctx or mx.cpu(), net
        runner.info, runner.config = getattr(net, "model_info", None), net.data_config
        runner.names = class_names_of(net)
        return runner


class Detector(_DenseRunner):
    """Boxes (and, for Mask R-CNN, masks) of a trained detector (``faster_rcnn_fpn_*``, ``mask_rcnn_fpn_*``)."""

    task = "detection"

    def detect(self, image, threshold=0.5):
        """The objects found in ``image`` with a score of at least ``threshold``, best first: dicts with ``label``
        (index), ``class`` (name), ``score``, ``box`` ([x1, y1, x2, y2] in the image's pixels) and, for Mask
        R-CNN, ``mask`` (a boolean (H, W) array)."""
        img = load_image(image)
        x, scale = preprocess(img, self.config, self.ctx)
        ids, scores, boxes, masks = run_detector(self.net, x, scale, img.shape[:2])
        keep = np.flatnonzero(scores >= threshold)
        keep = keep[np.argsort(-scores[keep], kind="stable")]
        height, width = img.shape[:2]
        boxes = boxes[keep]
        objects = [{"label": int(ids[k]), "class": self.names[int(ids[k])], "score": float(scores[k]),
                    "box": [float(v) for v in box]} for k, box in zip(keep, boxes)]
        if masks is not None and len(keep):  # Mask R-CNN: per-box mask probabilities, pasted into the image
            from gluoncv.data.transforms.mask import fill

            masks = fill(masks[keep], boxes, (width, height)) >= 0.5
            for obj, mask in zip(objects, masks):
                obj["mask"] = mask
        return objects


class Segmenter(_DenseRunner):
    """Per-pixel classes of a trained segmenter (``deeplab_*``)."""

    task = "segmentation"

    def logits(self, image):
        """(classes, H, W) logits at the image's own size (the network's output resized bilinearly)."""
        img = load_image(image)
        x, _ = preprocess(img, self.config, self.ctx)
        out = self.net(x)
        out = out[0] if isinstance(out, (list, tuple)) else out
        height, width = img.shape[:2]
        return mx.nd.contrib.BilinearResize2D(out, height=height, width=width)[0]

    def segment(self, image):
        """The class index of every pixel of ``image``, an (H, W) int32 array."""
        return self.logits(image).argmax(axis=0).asnumpy().astype(np.int32)
