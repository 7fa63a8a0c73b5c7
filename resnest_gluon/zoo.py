"""The ResNeSt classification family as one table of named configs, registered in :mod:`resnest_gluon.registry`.

Every model name maps to a :class:`ModelConfig`: the architecture (what :class:`~resnest_gluon.resnest.ResNeSt`
takes), the data config its weights expect (input size, crop_pct, interpolation, mean, std), the exact trainable
parameter count of the published weights, their published ImageNet top-1, and the input size they were trained at.
"""
import re
from dataclasses import dataclass, field

import mxnet as mx

from . import store
from .config import DataConfig
from .registry import ModelEntry, get_model, list_models, model_entry, register_model
from .resnest import ResNeSt
from .splat import set_fused_attention
from .weights import classes_in_params, load_weights, read_params

__all__ = ["DataConfig", "ModelConfig", "list_models", "get_config", "get_model", "load_weights", "read_params",
           "classes_in_params", "count_params", "count_flops", "CONSTRUCTORS"]


@dataclass(frozen=True)
class ModelConfig:
    name: str
    arch: dict
    data: DataConfig
    params: int = None  # exact trainable parameter count of the published weights (None: none published)
    top1: float = None  # published ImageNet top-1 of those weights
    source: str = "official Gluon"
    aliases: tuple = field(default_factory=tuple)
    # training crop of the official recipe: often smaller than the evaluation size (ResNeSt trains at 224/256/320
    # and tests at 256/320/416); None = the evaluation input size
    train_input_size: int = None

    def __post_init__(self):
        if self.train_input_size is None:
            object.__setattr__(self, "train_input_size", self.data.input_size)


def _arch(layers, stem_width=32, radix=2, cardinality=1, width=64, avd_first=False, final_drop=0.0):
    return dict(layers=tuple(layers), stem_width=stem_width, radix=radix, cardinality=cardinality,
                bottleneck_width=width, avd=True, avd_first=avd_first, avg_down=True, final_drop=final_drop)


def _official_data(size):
    """The official verify protocol: ratio 0.875 below 320 px, crop / (crop + 32) bicubic from 320 px on."""
    if size < 320:
        return DataConfig(size, 0.875, "bilinear")
    return DataConfig(size, size / (size + 32), "bicubic")


_R50 = (3, 4, 6, 3)
_CONFIGS = [
    # official Gluon names (zhanghang1989/ResNeSt, GluonCV)
    ModelConfig("resnest14", _arch((1, 1, 1, 1)), _official_data(224), 10_611_688),
    ModelConfig("resnest26", _arch((2, 2, 2, 2)), _official_data(224), 17_069_448),
    ModelConfig("resnest50", _arch(_R50), _official_data(224), 27_483_240, 81.04),
    ModelConfig("resnest101", _arch((3, 4, 23, 3), stem_width=64), _official_data(256), 48_275_016, 82.83,
                train_input_size=224),
    ModelConfig("resnest200", _arch((3, 24, 36, 3), stem_width=64, final_drop=0.2), _official_data(320),
                70_201_544, 83.86, train_input_size=256),
    ModelConfig("resnest269", _arch((3, 30, 48, 8), stem_width=64, final_drop=0.2), _official_data(416),
                110_929_480, 84.53, train_input_size=320),
    # timm names (the official PyTorch weights, converted with scripts/convert_torch_weights.py)
    ModelConfig("resnest14d", _arch((1, 1, 1, 1)), DataConfig(224, 0.875, "bilinear"), 10_611_688, 75.51, "timm"),
    ModelConfig("resnest26d", _arch((2, 2, 2, 2)), DataConfig(224, 0.875, "bilinear"), 17_069_448, 78.48, "timm"),
    ModelConfig("resnest50d", _arch(_R50), DataConfig(224, 0.875, "bilinear"), 27_483_240, 80.96, "timm"),
    ModelConfig("resnest101e", _arch((3, 4, 23, 3), stem_width=64), DataConfig(256, 0.875, "bilinear"),
                48_275_016, 82.88, "timm", train_input_size=224),
    ModelConfig("resnest200e", _arch((3, 24, 36, 3), stem_width=64), DataConfig(320, 0.909, "bicubic"),
                70_201_544, 83.85, "timm", train_input_size=256),
    ModelConfig("resnest269e", _arch((3, 30, 48, 8), stem_width=64), DataConfig(416, 0.928, "bicubic"),
                110_929_480, 84.53, "timm", train_input_size=320),
    ModelConfig("resnest50d_1s4x24d", _arch(_R50, radix=1, cardinality=4, width=24, avd_first=True),
                DataConfig(224, 0.875, "bicubic"), 25_677_000, 81.0, "timm"),
    ModelConfig("resnest50d_4s2x40d", _arch(_R50, radix=4, cardinality=2, width=40, avd_first=True),
                DataConfig(224, 0.875, "bicubic"), 30_417_592, 81.11, "timm"),
]


def _fast(code, params=None):
    """The official ablation models ``resnest50_fast_<R>s<K>x<W>d``: radix R, cardinality K, width W, avd first."""
    radix, card, width = map(int, re.fullmatch(r"(\d)s(\d)x(\d+)d", code).groups())
    return ModelConfig(f"resnest50_fast_{code}", _arch(_R50, radix=radix, cardinality=card, width=width,
                                                       avd_first=True), _official_data(224), params)


_CONFIGS += [_fast(code) for code in ("1s1x64d", "2s1x64d", "4s1x64d", "1s2x40d", "2s2x40d")]
_CONFIGS += [_fast("4s2x40d", 30_417_592), _fast("1s4x24d", 25_677_000)]
_REGISTRY = {cfg.name: cfg for cfg in _CONFIGS}


def get_config(name):
    """The :class:`ModelConfig` of the classifier ``name``; an unknown name raises ``ValueError`` listing close
    matches."""
    entry = model_entry(name)
    if entry.task != "classification":
        raise ValueError(f"{entry.name} is a {entry.task} model, not a classifier of this zoo")
    return entry.config


def count_params(net, trainable=True):
    """Number of parameters (trainable ones only by default: BN running statistics are not counted)."""
    return sum(int(_size(p.shape)) for p in net.collect_params().values() if not trainable or p.grad_req != "null")


def count_flops(net, input_size=None):
    """Floating-point operations of one forward pass on one image (2 x multiply-adds of convolutions and dense layers,
    the convention of the paper's table), at ``input_size`` (default: the model's data config). Runs one forward."""
    from mxnet.gluon import nn

    size = input_size or net.data_config.input_size
    macs = []

    def hook(block, inputs, output):
        w = block.weight.shape
        macs.append(output.size // output.shape[0] * _size(w[1:]) if isinstance(block, nn.Conv2D) else _size(w))

    handles = []
    net.apply(lambda b: handles.append(b.register_forward_hook(hook)) if isinstance(b, (nn.Conv2D, nn.Dense))
              else None)
    try:
        net(mx.nd.zeros((1, 3, size, size), ctx=net.collect_params().list_ctx()[0]))
    finally:
        for h in handles:
            h.detach()
    return 2 * sum(macs)


def _size(shape):
    n = 1
    for d in shape:
        n *= d
    return n


def build_resnest(name, pretrained=False, ctx=None, root=None, classes=1000, **kwargs):
    """The classifier ``name`` (what :func:`~resnest_gluon.registry.get_model` calls for these names); ``kwargs``
    go to :class:`~resnest_gluon.resnest.ResNeSt` (``dropblock_prob``, ``final_drop``, ``last_gamma``,
    ``features_only``, ``out_indices``, ``norm_layer``, ...)."""
    cfg = _REGISTRY[name]
    ctx = ctx or mx.cpu()
    arch = {**cfg.arch, **kwargs}
    if pretrained and classes != 1000 and not arch.get("features_only"):
        net = build_resnest(name, pretrained=True, ctx=ctx, root=root, classes=1000, **kwargs)
        return net.reset_classifier(classes, ctx=ctx)
    net = ResNeSt(classes=classes, **arch)
    if any(c.device_type == "gpu" for c in (ctx if isinstance(ctx, (list, tuple)) else [ctx])):
        set_fused_attention(net, False)  # the fused operator is CPU-only (also when net sits in a larger graph)
    net.model_name = cfg.name
    net.data_config = cfg.data
    if pretrained:
        load_weights(net, store.get_model_file(cfg.name, root=root), ctx=ctx)
    return net


def _constructor(name):
    def build(pretrained=False, ctx=None, root=None, **kwargs):
        return build_resnest(name, pretrained=pretrained, ctx=ctx, root=root, **kwargs)

    cfg = _REGISTRY[name]
    build.__name__ = build.__qualname__ = name
    build.__doc__ = (f"ResNeSt model ``{name}`` ({cfg.source}); input {cfg.data.input_size} px, "
                     f"crop_pct {cfg.data.crop_pct}, {cfg.data.interpolation}. See :func:`get_model`.")
    return build


for _cfg in _CONFIGS:
    register_model(ModelEntry(_cfg.name, "classification", _constructor(_cfg.name), _cfg.data, _cfg, _cfg.aliases))
CONSTRUCTORS = {name: _constructor(name) for name in _REGISTRY}
globals().update(CONSTRUCTORS)
__all__ += list(CONSTRUCTORS)
