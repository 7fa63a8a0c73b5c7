"""Dense prediction on ResNeSt backbones with GluonCV's heads: segmentation (DeepLabV3), detection (Faster R-CNN FPN),
instance segmentation (Mask R-CNN FPN).

Names follow the classification registry: ``deeplab_<backbone>``, ``faster_rcnn_fpn_<backbone>`` and
``mask_rcnn_fpn_<backbone>`` for every backbone the zoo has; importing this package registers them in
:mod:`resnest_gluon.registry`, so ``get_model("deeplab_resnest50", classes=150)`` or
``get_model("mask_rcnn_fpn_resnest50", classes=["cat", "dog"])`` build them. gluoncv is imported only when one is
built.
"""
import warnings

import mxnet as mx

from ..config import DenseDataConfig, default_dense_data_config
from ..registry import ModelEntry, list_models, model_entry, register_model
from ..weights import load_weights
from .backbone import build_backbone
from .detection import faster_rcnn_fpn, mask_rcnn_fpn
from .segmentation import DeepLabV3

__all__ = ["DENSE_KINDS", "DenseDataConfig", "dense_task", "get_dense_model", "list_dense_models",
           "load_gluoncv_params", "build_backbone", "initialize_fresh", "finish_deferred_init", "randomize"]


def _deeplab(backbone, num_classes, class_names, **kwargs):
    return DeepLabV3(backbone, num_classes, **kwargs)


def _faster_rcnn_fpn(backbone, num_classes, class_names, **kwargs):
    return faster_rcnn_fpn(backbone, class_names or [str(i) for i in range(num_classes)], **kwargs)


def _mask_rcnn_fpn(backbone, num_classes, class_names, **kwargs):
    return mask_rcnn_fpn(backbone, class_names or [str(i) for i in range(num_classes)], **kwargs)


DENSE_KINDS = {"deeplab": _deeplab, "faster_rcnn_fpn": _faster_rcnn_fpn, "mask_rcnn_fpn": _mask_rcnn_fpn}


KIND_TASKS = {"deeplab": "segmentation", "faster_rcnn_fpn": "detection", "mask_rcnn_fpn": "detection"}


def list_dense_models(pattern=None):
    """Sorted dense model names (``deeplab_resnest50``, ...), optionally filtered by a shell-style ``pattern``."""
    return sorted(list_models(pattern, "detection") + list_models(pattern, "segmentation"))


def split_dense_name(name):
    """``("deeplab", "resnest50")`` for ``deeplab_resnest50``; None when ``name`` is not a dense model's name."""
    try:
        entry = model_entry(name)
    except ValueError:
        return None
    return entry.config if entry.task != "classification" else None


def dense_task(name):
    """``"segmentation"`` or ``"detection"``: what the dense model ``name`` predicts (``"classification"`` for the
    other names)."""
    parts = split_dense_name(name)
    return "classification" if parts is None else KIND_TASKS[parts[0]]


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
    net.data_config = default_dense_data_config(dense_task(name))
    # settings to rebuild it with (in its information file); layers (norm_layer) are not: any normalisation loads
    net.build_kwargs = {k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items() if _plain(v)}
    return net


def load_gluoncv_params(net, path, ctx=None):
    """Loads a parameter file of GluonCV's matching model (e.g. ``deeplab_resnest50_ade`` into
    ``deeplab_resnest50``) by name: GluonCV's names mapped to ours (``net.gluoncv_name``), then every weight must fit,
    as :func:`~resnest_gluon.load_weights` checks."""
    return load_weights(net, path, ctx=ctx or mx.cpu(), rename=net.gluoncv_name)


def _dense_builder(name):
    def build(pretrained=False, ctx=None, root=None, classes=None, **kwargs):
        if pretrained:
            raise ValueError(f"{name}: this project publishes no {name} weights; build it with "
                             f"pretrained_base=True (ImageNet backbone), or load GluonCV's published file of the same "
                             f"model with resnest_gluon.dense.load_gluoncv_params")
        return get_dense_model(name, classes, ctx=ctx, root=root, **kwargs)

    build.__name__ = build.__qualname__ = name
    return build


for _backbone in list_models():
    for _kind, _task in KIND_TASKS.items():
        _name = f"{_kind}_{_backbone}"
        register_model(ModelEntry(_name, _task, _dense_builder(_name), default_dense_data_config(_task),
                                  (_kind, _backbone)))
