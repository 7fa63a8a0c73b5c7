"""Dense prediction on ResNeSt backbones with GluonCV's heads: segmentation (DeepLabV3), detection (Faster R-CNN FPN),
instance segmentation (Mask R-CNN FPN).

Names follow the classification registry: ``deeplab_<backbone>``, ``faster_rcnn_fpn_<backbone>`` and
``mask_rcnn_fpn_<backbone>`` for every backbone ``list_models()`` knows, built by
``get_model("deeplab_resnest50", classes=150)`` or ``get_model("mask_rcnn_fpn_resnest50", classes=["cat", "dog"])``.
gluoncv is imported only when one is built.
"""
import os
import warnings

import mxnet as mx

from ..zoo import get_config, get_model, list_models, load_weights
from .config import DenseDataConfig, default_data_config

__all__ = ["DENSE_KINDS", "DenseDataConfig", "dense_task", "get_dense_model", "list_dense_models",
           "load_gluoncv_params", "build_backbone", "initialize_fresh", "finish_deferred_init", "randomize"]


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


def dense_task(name):
    """``"segmentation"`` or ``"detection"``: what the dense model ``name`` predicts (``"classification"`` for the
    other names)."""
    parts = split_dense_name(name)
    if parts is None:
        return "classification"
    return "segmentation" if parts[0] == "deeplab" else "detection"


def build_backbone(name, pretrained_base=False, ctx=mx.cpu(), root=None, **kwargs):
    """Our network ``name`` as a dense model's backbone (``features_only``; ``kwargs`` as :func:`get_model`'s).

    ``pretrained_base``: False (to be initialised), True (the published ImageNet weights) or the path of a
    classification weights file of this project (a checkpoint or a ``save_trained`` file: its information must name
    the same model; its classifier is left out).
    """
    if isinstance(pretrained_base, (str, os.PathLike)):
        from ..trained import read_info

        info = read_info(pretrained_base)
        if info is not None and info.model != get_config(name).name:
            raise ValueError(f"{pretrained_base} holds a {info.model}, not the {get_config(name).name} backbone "
                             f"asked for")
        net = get_model(name, ctx=ctx, features_only=True, **kwargs)
        return load_weights(net, os.fspath(pretrained_base), ctx=ctx)
    return get_model(name, pretrained=bool(pretrained_base), ctx=ctx, root=root, features_only=True, **kwargs)


def initialize_fresh(net, ctx):
    """Initialises every parameter nothing was loaded into, as GluonCV's training scripts do: each with its own
    initializer, else our backbone's (Xavier, gaussian, magnitude 2); normalisation parameters with ones and zeros
    (GluonCV's FPN would hand its 1-D ones the initializer of the convolution before them, which fails)."""
    default = mx.init.Xavier(rnd_type="gaussian", factor_type="in", magnitude=2)
    for name, p in net.collect_params().items():
        if p._data is not None or p._deferred_init:
            continue
        if name.endswith(("gamma", "running_var", "moving_var")):
            p.initialize(mx.init.One(), ctx=ctx)
        elif name.endswith(("beta", "running_mean", "moving_mean")):
            p.initialize(mx.init.Zero(), ctx=ctx)
        else:
            p.initialize(default_init=default, ctx=ctx)
    finish_deferred_init(net, ctx)


def finish_deferred_init(net, ctx=mx.cpu()):
    """Gives the layers built without their input size (GluonCV's FPN, heads) their weights now, from shapes
    inferred on a small image without running the network, so the model can be saved or changed before a call."""
    params = [p for p in net.collect_params().values() if p._deferred_init]
    if params:
        net.infer_shape(mx.nd.zeros((1, 3, 64, 64), ctx=ctx))
        for p in params:
            p._finish_deferred_init()
    return net


def randomize(net, seed=0):
    """Random weights everywhere, normalisation statistics and affine terms included (no layer is an identity by
    accident), for parity checks and speed measurements: Xavier (uniform, magnitude 2), means and betas N(0, 0.1),
    variances and gammas U(0.5, 1.5). Works on GluonCV's detectors too (their FPN's 1-D parameters get ones and
    zeros first, where left to themselves they would ask for Xavier, which fails)."""
    import numpy as np

    mx.random.seed(seed)
    for name, p in net.collect_params().items():
        if name.endswith(("gamma", "beta", "_mean", "_var")):
            p.init = mx.init.One() if name.endswith(("gamma", "_var")) else mx.init.Zero()
    with warnings.catch_warnings():  # heads a constructor initialised already keep their values
        warnings.simplefilter("ignore")
        net.initialize(mx.init.Xavier(magnitude=2))
    finish_deferred_init(net)
    rng = np.random.RandomState(seed)
    for name, p in sorted(net._collect_params_with_prefix().items()):
        if name.endswith(("running_mean", "moving_mean", "beta")):
            p.set_data(mx.nd.array(rng.normal(0, 0.1, p.shape)))
        elif name.endswith(("running_var", "moving_var", "gamma")):
            p.set_data(mx.nd.array(rng.uniform(0.5, 1.5, p.shape)))
    return net


def _plain(value):
    return isinstance(value, (bool, int, float, str)) or (
        isinstance(value, (tuple, list)) and all(isinstance(v, (int, float)) for v in value))


def get_dense_model(name, classes, pretrained_base=False, ctx=None, root=None, **kwargs):
    """Builds the dense model ``name`` (see :func:`list_dense_models`) for ``classes`` (a number, or the class names:
    then ``net.class_names``), every parameter initialised (the backbone's from ``pretrained_base``: see
    :func:`build_backbone`), ready to train, run or save with :func:`resnest_gluon.save_trained` (it carries
    ``model_name``, ``num_classes``, ``class_names`` and its evaluation transform, ``data_config``)."""
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
    ctx = ctx or mx.cpu()
    with warnings.catch_warnings():
        # MXNet's notes while GluonCV's FPN is traced (the input's dtype is unknown until called) and when a
        # SyncBatchNorm is built without a device count (it then spans all devices, as GluonCV's models intend)
        warnings.filterwarnings("ignore", message="Cannot decide type for the following arguments")
        warnings.filterwarnings("ignore", message="Caution using SyncBatchNorm")
        net = DENSE_KINDS[kind](backbone, classes, class_names, pretrained_base=pretrained_base, ctx=ctx, root=root,
                                **kwargs)
        initialize_fresh(net, ctx)
    net.model_name, net.class_names, net.num_classes = name.lower(), class_names, classes
    net.data_config = default_data_config(dense_task(name))
    # settings to rebuild it with (in its information file); layers (norm_layer) are not: any normalisation loads
    net.build_kwargs = {k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items() if _plain(v)}
    return net


def load_gluoncv_params(net, path, ctx=None):
    """Loads a parameter file of GluonCV's matching model (e.g. ``deeplab_resnest50_ade`` into
    ``deeplab_resnest50``) by name: GluonCV's names mapped to ours (``net.gluoncv_name``), then every weight must fit,
    as :func:`~resnest_gluon.load_weights` checks."""
    return load_weights(net, path, ctx=ctx or mx.cpu(), rename=net.gluoncv_name)
