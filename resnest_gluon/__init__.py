"""ResNeSt (Split-Attention Networks, arXiv 2004.08955) for MXNet Gluon.

    from resnest_gluon import export_onnx, get_model, list_models, optimize  # or: from resnest.gluon import resnest50
    net = get_model("resnest50", pretrained=True)
    fast = optimize(net, dtype="bfloat16")                       # hybridized and converted, for inference
    export_onnx(net, "resnest50.onnx")                           # for ONNX Runtime / OpenVINO, classes inside
    net = load_trained("runs/x/ckpt-0007.params")                # a checkpoint with its classes and data config

This package never imports gluoncv (gluoncv 0.10.5 refuses to import beside torch >= 2).
"""
from .deploy import attention_op

attention_op.load()  # before any network is built: the blocks pick the fused operator up at construction

from .deploy import export_onnx, optimize  # noqa: E402
from .dropblock import DropBlock, get_drop_prob, set_drop_prob
from .resnest import FEATURE_STRIDES, Bottleneck, ResNeSt
from .splat import SplitAttentionConv
from .trained import ModelInfo, export, load_trained, save_trained
from .zoo import *  # noqa: F401,F403  (get_model, list_models and one constructor per model name)
from .zoo import (CONSTRUCTORS, DataConfig, ModelConfig, count_flops, count_params, get_config, get_model,
                  list_models, load_weights)

__version__ = "0.1.0"
__all__ = ["get_model", "list_models", "get_config", "load_weights", "count_params", "count_flops", "optimize",
           "export_onnx",
           "load_trained", "save_trained", "export", "ModelInfo",
           "DataConfig", "ModelConfig", "ResNeSt", "Bottleneck", "SplitAttentionConv", "DropBlock", "set_drop_prob", "get_drop_prob",
           "FEATURE_STRIDES"] + list(CONSTRUCTORS)
