"""The ResNeSt family as one table of named configs, and the registry that builds them.

Every model name maps to a :class:`ModelConfig`: the architecture (what :class:`~resnest_gluon.resnest.ResNeSt`
takes), the data config its weights expect (input size, crop_pct, interpolation, mean, std), the exact trainable
parameter count of the published weights, their published ImageNet top-1, and the input size they were trained at.
"""
import difflib
import os
import re
from dataclasses import dataclass, field

import mxnet as mx

from . import store
from .exits import plain_reason
from .resnest import ResNeSt
from .splat import set_fused_attention

__all__ = ["DataConfig", "ModelConfig", "list_models", "get_config", "get_model", "load_weights", "read_params",
           "classes_in_params", "count_params"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class DataConfig:
    """What the evaluation transform needs: resize the short side to ``input_size / crop_pct``, centre-crop."""

    input_size: int = 224
    crop_pct: float = 0.875
    interpolation: str = "bilinear"  # or "bicubic"
    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD

    def to_dict(self):
        return {"input_size": self.input_size, "crop_pct": self.crop_pct, "interpolation": self.interpolation,
                "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, d):
        """The inverse of :meth:`to_dict`; missing keys take the defaults, wrong values raise ``ValueError``."""
        unknown = set(d) - {"input_size", "crop_pct", "interpolation", "mean", "std"}
        if unknown:
            raise ValueError(f"unknown data config keys {sorted(unknown)}")
        cfg = cls(**{k: tuple(v) if k in ("mean", "std") else v for k, v in d.items()})
        return cfg.checked()

    def checked(self):
        """Itself, after checking the values make sense (``ValueError`` naming the first that does not)."""
        if not isinstance(self.input_size, int) or self.input_size < 1:
            raise ValueError(f"input_size must be a positive integer, got {self.input_size!r}")
        if not 0 < self.crop_pct <= 1:
            raise ValueError(f"crop_pct must be in (0, 1], got {self.crop_pct!r}")
        from .data.transforms import interp_code

        interp_code(self.interpolation)  # a name the evaluation transform knows
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"mean and std must have 3 values (std > 0), got {self.mean} and {self.std}")
        return self


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


def list_models(pattern=None):
    """Sorted model names, optionally filtered by a shell-style ``pattern`` (e.g. ``'resnest50*'``)."""
    import fnmatch

    names = sorted(_REGISTRY)
    return [n for n in names if fnmatch.fnmatch(n, pattern)] if pattern else names


def get_config(name):
    """The :class:`ModelConfig` of ``name``; an unknown name raises ``ValueError`` listing close matches."""
    try:
        return _REGISTRY[name.lower()]
    except KeyError:
        close = difflib.get_close_matches(name.lower(), _REGISTRY, n=5, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown model {name!r}.{hint} Known models: {', '.join(list_models())}") from None


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


def get_model(name, pretrained=False, ctx=mx.cpu(), root=None, classes=1000, **kwargs):
    """Builds the model ``name`` (see :func:`list_models`).

    Parameters
    ----------
    pretrained : bool   load the published weights (downloaded into ``root`` once, SHA-1 checked)
    ctx : Context or list of Context   where pretrained weights are loaded
    root : str          weight cache folder (default ``$MXNET_HOME/models``, as GluonCV)
    classes : int       number of classes; with ``pretrained`` and ``classes != 1000`` the ImageNet classifier is
                        replaced by a fresh one (fine-tuning)
    kwargs              passed to :class:`ResNeSt` (``dropblock_prob``, ``final_drop``, ``last_gamma``,
                        ``features_only``, ``out_indices``, ``norm_layer``, ...)

    Without ``pretrained`` the network is returned uninitialised, as in GluonCV: call ``net.initialize()``.
    The returned network carries ``net.model_name`` and ``net.data_config`` (a :class:`DataConfig`).

    Dense prediction models (``deeplab_resnest50``, ...: :func:`resnest_gluon.dense.list_dense_models`) are built
    here too, with ``classes`` an int or a list of class names and ``pretrained_base`` for the backbone's weights.
    """
    from .dense import get_dense_model, split_dense_name  # gluoncv is imported only when one is built

    if split_dense_name(name):
        if pretrained:
            raise ValueError(f"{name}: this project publishes no {name} weights; build it with "
                             f"pretrained_base=True (ImageNet backbone), or load GluonCV's published file of the same "
                             f"model with resnest_gluon.dense.load_gluoncv_params")
        return get_dense_model(name, classes, ctx=ctx, root=root, **kwargs)
    cfg = get_config(name)
    arch = {**cfg.arch, **kwargs}
    if pretrained and classes != 1000 and not arch.get("features_only"):
        net = get_model(name, pretrained=True, ctx=ctx, root=root, classes=1000, **kwargs)
        return net.reset_classifier(classes, ctx=ctx)
    net = ResNeSt(classes=classes, **arch)
    if any(c.device_type == "gpu" for c in (ctx if isinstance(ctx, (list, tuple)) else [ctx])):
        set_fused_attention(net, False)  # the fused operator is CPU-only (also when net sits in a larger graph)
    net.model_name = cfg.name
    net.data_config = cfg.data
    if pretrained:
        load_weights(net, store.get_model_file(cfg.name, root=root), ctx=ctx)
    return net


def read_params(path):
    """The arrays of a ``.params`` file (``mx.nd.load``), with a ``ValueError`` naming a file that is not one."""
    try:
        return mx.nd.load(path)
    except mx.base.MXNetError as err:
        raise ValueError(f"{path} is not a readable MXNet .params file ({plain_reason(err)})") from None


def classes_in_params(path):
    """Output classes of a ``.params`` file (rows of its ``fc.weight``), or None when it has no classifier."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"params file not found: {path!r}")
    loaded = read_params(path)
    if not isinstance(loaded, dict):
        return None
    for key, value in loaded.items():
        if key.split(":", 1)[-1] == "fc.weight":
            return int(value.shape[0])
    return None


def load_weights(net, path, ctx=mx.cpu(), rename=None):
    """Loads a ``.params`` file into ``net`` by parameter name, with errors that name the model and the mismatch.

    DropBlock probabilities are run-time state, not weights: they may be absent from (or extra in) the file. A
    backbone (``features_only``) takes a classification file and leaves its classifier out. A classifier of
    another size, a missing or unexpected weight, or another shape raise ``ValueError``. ``rename`` maps the file's
    names to the model's (another library's layout of the same weights).
    """
    model = getattr(net, "model_name", type(net).__name__)
    loaded = read_params(path)
    if not isinstance(loaded, dict):
        raise ValueError(f"{path} holds unnamed arrays, not a parameter file saved with save_parameters()")
    loaded = {k.split(":", 1)[-1]: v for k, v in loaded.items()}  # accept export()'s 'arg:'/'aux:' prefixes
    if rename is not None:
        loaded = {rename(k): v for k, v in loaded.items()}
    params = net._collect_params_with_prefix()
    if loaded and not set(loaded) & set(params):
        loaded = _structural_names(net, loaded)
    is_state = lambda k: k.endswith("drop_prob")  # noqa: E731
    unused_head = lambda k: getattr(net, "features_only", False) and k.startswith("fc.")  # noqa: E731
    missing = sorted(k for k in params if k not in loaded and not is_state(k))
    extra = sorted(k for k in loaded if k not in params and not is_state(k) and not unused_head(k))
    shapes = [(k, params[k].shape, loaded[k].shape) for k in params if k in loaded
              and not _shape_fits(params[k].shape, loaded[k].shape)]
    problems = []
    if shapes:
        problems.append("shape mismatch: " + "; ".join(f"{k} model {m} vs file {f}" for k, m, f in shapes[:5]))
    if missing:
        problems.append(f"{len(missing)} weights missing from the file (first: {', '.join(missing[:5])})")
    if extra:
        problems.append(f"{len(extra)} weights in the file that {model} does not have (first: {', '.join(extra[:5])})")
    if problems:
        hint = ""
        if any(k.startswith("fc.") for k, _, _ in shapes):
            hint = (f" The classifier differs: build with classes={loaded['fc.weight'].shape[0]} to load this "
                    f"file, or load it with 1000 classes and call net.reset_classifier(N).")
        raise ValueError(f"{path} does not fit model {model}: " + " | ".join(problems) + "." + hint)
    ctx = ctx if isinstance(ctx, (list, tuple)) else [ctx]
    for k, p in params.items():
        if k in loaded:
            p._load_init(loaded[k], ctx, cast_dtype=True, dtype_source="current")
        elif p._data is None:
            p.initialize(ctx=ctx)
    return net


def _structural_names(net, loaded):
    """Renames an ``export()``-ed file's prefixed names (``resnest0_conv1_batchnorm0_beta``) to structural ones."""
    by_name = {p.name[len(net.prefix):]: k for k, p in net._collect_params_with_prefix().items()}
    renamed = {}
    for key, value in loaded.items():
        local = re.sub(r"^[a-z_]*?\d+_", "", key, count=1)
        renamed[by_name.get(local, key)] = value
    return renamed


def _shape_fits(model_shape, file_shape):
    """Shapes agree, treating 0 in a not-yet-inferred model shape (or no shape at all) as unknown."""
    return model_shape is None or len(model_shape) == len(file_shape) and all(m in (0, f) for m, f in zip(model_shape, file_shape))


def _constructor(name):
    def build(pretrained=False, ctx=mx.cpu(), root=None, **kwargs):
        return get_model(name, pretrained=pretrained, ctx=ctx, root=root, **kwargs)

    cfg = _REGISTRY[name]
    build.__name__ = build.__qualname__ = name
    build.__doc__ = (f"ResNeSt model ``{name}`` ({cfg.source}); input {cfg.data.input_size} px, "
                     f"crop_pct {cfg.data.crop_pct}, {cfg.data.interpolation}. See :func:`get_model`.")
    return build


CONSTRUCTORS = {name: _constructor(name) for name in _REGISTRY}
globals().update(CONSTRUCTORS)
__all__ += list(CONSTRUCTORS)
