"""Running a trained dense model on images: its own evaluation transform, results in the image's own pixels.

    detector = Detector("runs/det/final.params")            # model, classes and transform from its .json
    objects = detector.detect("street.jpg", threshold=0.5)  # [{"label", "class", "score", "box", ("mask")}]
    segmenter = Segmenter("runs/seg/final.params")
    labels = segmenter.segment("street.jpg")                # (H, W) class index per pixel

Both hybridize the network (static memory); on CPU our backbone runs its split attention as the fused operator
(:mod:`resnest_gluon.attention_op`) when it is built, inside GluonCV's traced FPN as well. ``scripts/detect.py``
and ``scripts/segment.py`` draw the results.
"""
import cv2
import mxnet as mx
import numpy as np

from ..data.transforms import interp_code, load_image
from ..trained import load_trained
from . import dense_task

__all__ = ["preprocess", "Detector", "Segmenter"]


def preprocess(image, config, ctx=mx.cpu()):
    """``(x, (scale_y, scale_x))``: the image (a path, an array, ...: see :func:`~resnest_gluon.data.load_image`)
    resized as ``config`` (a :class:`~resnest_gluon.dense.DenseDataConfig`) says, normalised, as a (1, 3, h, w)
    batch, and the factors from its pixels to the original's."""
    img = load_image(image)
    height, width = img.shape[:2]
    new_h, new_w = config.resized_shape(height, width)
    img = cv2.resize(img, (new_w, new_h), interpolation=interp_code(config.interpolation))
    x = (img.astype(np.float32) / 255 - np.array(config.mean, np.float32)) / np.array(config.std, np.float32)
    return mx.nd.array(x.transpose(2, 0, 1)[None], ctx=ctx), (height / new_h, width / new_w)


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
        count = self.info.num_classes
        self.names = list(self.info.class_names) if self.info.class_names else [f"class {i}" for i in range(count)]
        self.net.hybridize(static_alloc=True)


class Detector(_DenseRunner):
    """Boxes (and, for Mask R-CNN, masks) of a trained detector (``faster_rcnn_fpn_*``, ``mask_rcnn_fpn_*``)."""

    task = "detection"

    def detect(self, image, threshold=0.5):
        """The objects found in ``image`` with a score of at least ``threshold``, best first: dicts with ``label``
        (index), ``class`` (name), ``score``, ``box`` ([x1, y1, x2, y2] in the image's pixels) and, for Mask
        R-CNN, ``mask`` (a boolean (H, W) array)."""
        img = load_image(image)
        x, (sy, sx) = preprocess(img, self.config, self.ctx)
        out = [o[0].asnumpy() for o in self.net(x)]
        ids, scores, boxes = out[0][:, 0], out[1][:, 0], out[2]
        keep = np.flatnonzero((ids >= 0) & (scores >= threshold))
        keep = keep[np.argsort(-scores[keep], kind="stable")]
        height, width = img.shape[:2]
        boxes = boxes[keep] * np.array([sx, sy, sx, sy], np.float32)
        boxes = np.clip(boxes, 0, [width, height, width, height])
        objects = [{"label": int(ids[k]), "class": self.names[int(ids[k])], "score": float(scores[k]),
                    "box": [float(v) for v in box]} for k, box in zip(keep, boxes)]
        if len(out) == 4 and len(keep):  # Mask R-CNN: per-box mask probabilities, pasted into the image
            from gluoncv.data.transforms.mask import fill

            masks = fill(out[3][keep], boxes, (width, height)) >= 0.5
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
