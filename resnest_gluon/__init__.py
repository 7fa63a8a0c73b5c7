"""ResNeSt (Split-Attention Networks, arXiv 2004.08955) for MXNet Gluon.

    from resnest_gluon import export_onnx, get_model, list_models, optimize  # or: from resnest.gluon import resnest50
    net = get_model("resnest50", pretrained=True)
    fast = optimize(net, dtype="bfloat16")                       # hybridized and converted, for inference
    export_onnx(net, "resnest50.onnx")                           # for ONNX Runtime / OpenVINO, classes inside
    net = load_trained("runs/x/ckpt-0007.params")                # a checkpoint with its classes and data config

Importing the package is light: each name below is imported on first use, and the fused operator is compiled or
loaded when the first network is built. This package never imports gluoncv at import time (gluoncv 0.10.5
refuses to import beside torch >= 2); the dense models import it when one is built.
"""
import importlib
import importlib.util

from ._lazy import lazy_attributes
from .config import DataConfig, DenseDataConfig, __version__  # noqa: F401  (light: resolved at import)

_EXPORTS = {
    "get_model": ".registry", "list_models": ".registry", "register_model": ".registry",
    "get_config": ".zoo", "load_weights": ".weights", "count_params": ".zoo", "count_flops": ".zoo",
    "ModelConfig": ".zoo", "CONSTRUCTORS": ".zoo",
    "optimize": ".deploy", "export_onnx": ".deploy",
    "load_trained": ".trained", "save_trained": ".trained", "export": ".trained", "ModelInfo": ".trained",
    "ResNeSt": ".resnest", "Bottleneck": ".resnest", "FEATURE_STRIDES": ".resnest",
    "SplitAttentionConv": ".splat", "DropBlock": ".dropblock", "set_drop_prob": ".dropblock",
    "get_drop_prob": ".dropblock",
}


def _other(name):
    """A subpackage (``resnest_gluon.deploy``), ``resnest50`` and the other model constructors, or ``__all__``."""
    if importlib.util.find_spec(f"{__name__}.{name}") is not None:
        return importlib.import_module(f"{__name__}.{name}")
    constructors = importlib.import_module(".zoo", __name__).CONSTRUCTORS
    if name == "__all__":
        return sorted(set(_EXPORTS) | {"DataConfig", "DenseDataConfig"}) + list(constructors)
    if name in constructors:
        return constructors[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__getattr__, __dir__ = lazy_attributes(__name__, _EXPORTS, _other)
