"""Dense prediction on ResNeSt backbones with GluonCV's heads: segmentation (DeepLabV3), detection (Faster R-CNN FPN),
instance segmentation (Mask R-CNN FPN).

Names follow the classification registry: ``deeplab_<backbone>``, ``faster_rcnn_fpn_<backbone>`` and
``mask_rcnn_fpn_<backbone>`` for every backbone ``list_models()`` knows, built by
``get_model("deeplab_resnest50", classes=150)`` or ``get_model("mask_rcnn_fpn_resnest50", classes=["cat", "dog"])``.
gluoncv is imported only when one is built.
"""
from ..zoo import list_models, load_weights

__all__ = ["DENSE_KINDS", "get_dense_model", "list_dense_models", "load_gluoncv_params"]


def _deeplab(backbone, num_classes, class_names, **kwargs):
    from .segmentation import DeepLabV3

    return DeepLabV3(backbone, num_classes, **kwargs)


def _faster_rcnn_fpn(backbone, num_classes, class_names, **kwargs):
    from .detection import faster_rcnn_fpn

    return faster_rcnn_fpn(backbone, class_names or [str(i) for i in range(num_classes)], **kwargs)


def _mask_rcnn_fpn(backbone, num_classes, class_names, **kwargs):
    from .detection import mask_rcnn_fpn

    return mask_rcnn_fpn(backbone, class_names or [str(i) for i in range(num_classes)], **kwargs)


DENSE_KINDS = {"deeplab": _deeplab, "faster_rcnn_fpn": _faster_rcnn_fpn, "mask_rcnn_fpn": _mask_rcnn_fpn}


def list_dense_models(pattern=None):
    """Sorted dense model names (``deeplab_resnest50``, ...), optionally filtered by a shell-style ``pattern``."""
    import fnmatch

    names = sorted(f"{kind}_{backbone}" for kind in DENSE_KINDS for backbone in list_models())
    return [n for n in names if fnmatch.fnmatch(n, pattern)] if pattern else names


def split_dense_name(name):
    """``("deeplab", "resnest50")`` for ``deeplab_resnest50``; None when ``name`` is not a dense model's name."""
    for kind in DENSE_KINDS:
        if name.lower().startswith(kind + "_") and name.lower()[len(kind) + 1:] in list_models():
            return kind, name.lower()[len(kind) + 1:]
    return None


def get_dense_model(name, classes, pretrained_base=False, ctx=None, root=None, **kwargs):
    """Builds the dense model ``name`` (see :func:`list_dense_models`) for ``classes`` (a number, or the class names:
    then ``net.class_names``); heads initialised, the backbone too when ``pretrained_base`` (else call
    ``net.backbone.initialize()`` or load a file)."""
    import mxnet as mx

    class_names = None
    if not isinstance(classes, int):
        class_names = [str(c) for c in classes]
        classes = len(class_names)
    if classes < 1:
        raise ValueError(f"{name}: classes must be a positive number or a non-empty list of names, got {classes}")

    parts = split_dense_name(name)
    if parts is None:
        raise ValueError(f"unknown dense model {name!r}; known kinds {sorted(DENSE_KINDS)} on any of: "
                         f"{', '.join(list_models())}")
    kind, backbone = parts
    net = DENSE_KINDS[kind](backbone, classes, class_names, pretrained_base=pretrained_base, ctx=ctx or mx.cpu(),
                            root=root, **kwargs)
    net.model_name, net.class_names = name.lower(), class_names
    return net


def load_gluoncv_params(net, path, ctx=None):
    """Loads a parameter file of GluonCV's matching model (e.g. ``deeplab_resnest50_ade`` into
    ``deeplab_resnest50``) by name: GluonCV's names mapped to ours (``net.gluoncv_name``), then every weight must fit,
    as :func:`~resnest_gluon.load_weights` checks."""
    import mxnet as mx

    return load_weights(net, path, ctx=ctx or mx.cpu(), rename=net.gluoncv_name)
