"""A trained model travels with what is needed to use it: model name, classes and their names, evaluation transform.

The information of ``X.params`` is kept in ``X.json`` under the key ``"model"`` (a :class:`ModelInfo`). Training's
checkpoints (``ckpt-0007.params`` + ``ckpt-0007.json``), :func:`save_trained` and :func:`export` write it, so

    net = rg.load_trained("runs/x/ckpt-0007.params")     # net.data_config, net.class_names, net.model_name

rebuilds the network and evaluates it the way training validated it, and ``scripts/verify.py --params``,
``scripts/predict.py --params``, :class:`~resnest_gluon.predict.Predictor` and ``benchmarks/agreement.py`` need no
flag that repeats what training knew (timm's data config, for MXNet files). :func:`resolve` is the one place that
merges such a file's information with what a caller asks for: data-config changes apply, a model or class count
that contradicts the file is an error naming both, and a bare ``.params`` (no ``.json``) works as before.
"""
import dataclasses
import json
import os
import re
from dataclasses import dataclass, field

import mxnet as mx

from .atomic import atomic_write, write_json
from .config import DataConfig, DenseDataConfig
from .ops import attention_op
from .registry import get_model, model_entry
from .weights import classes_in_params, load_weights

__all__ = ["ModelInfo", "SCHEMA", "IMAGENET_CLASSES_FILE", "load_class_names", "info_path", "read_info",
           "write_info", "read_onnx_info", "ONNX_METADATA_KEY", "resolve", "save_trained", "export", "load_trained"]

SCHEMA = "resnest-gluon/model/1"
ONNX_METADATA_KEY = "resnest_gluon.model_info"  # where an exported .onnx file keeps its ModelInfo JSON
# The 1000 ILSVRC-2012 class names in synset-sorted order (label i = line i), as GluonCV's ImageNet1kAttr.
# Two names repeat in that list; here they read 'crane (bird)'/'crane (machine)' and 'maillot'/'tank suit'.
IMAGENET_CLASSES_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "imagenet_classes.txt")
_EXPORTED = re.compile(r"^(.*)-(symbol\.json|\d{4}\.params)$")


@dataclass(frozen=True, eq=True)
class ModelInfo:
    """What a weights file needs to be used: the registry name, the classifier size, the evaluation data config,
    the class names (label i = ``class_names[i]``; None when unknown) and constructor arguments that differ from
    the registry's (``arch``, e.g. ``final_drop``)."""

    model: str
    num_classes: int
    data_config: DataConfig
    class_names: tuple = None
    arch: dict = field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "model", canonical_name(self.model))  # unknown names fail here, with hints
        expected = DenseDataConfig if is_dense(self.model) else DataConfig
        if not isinstance(self.data_config, expected):
            raise ValueError(f"{self.model} needs a {expected.__name__}, got {type(self.data_config).__name__}")
        if not isinstance(self.num_classes, int) or self.num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer, got {self.num_classes!r}")
        if self.class_names is not None:
            object.__setattr__(self, "class_names", tuple(self.class_names))
            if len(self.class_names) != self.num_classes:
                raise ValueError(f"{len(self.class_names)} class names for {self.num_classes} classes")
        self.data_config.checked()

    def to_dict(self):
        return {"schema": SCHEMA, "model": self.model, "num_classes": self.num_classes,
                "data_config": self.data_config.to_dict(),
                "class_names": list(self.class_names) if self.class_names is not None else None,
                "arch": dict(self.arch)}

    @classmethod
    def from_dict(cls, d):
        if d.get("schema") != SCHEMA:
            raise ValueError(f"schema {d.get('schema')!r}, expected {SCHEMA!r}")
        config = DenseDataConfig if is_dense(d["model"]) else DataConfig
        return cls(d["model"], d["num_classes"], config.from_dict(d["data_config"]), d.get("class_names"),
                   dict(d.get("arch") or {}))

    def build(self, ctx=mx.cpu(), **kwargs):
        """The network (a classifier uninitialised), carrying ``model_name``, ``data_config``, ``class_names``,
        ``model_info``. A dense model (:mod:`resnest_gluon.dense`) gets the class names when they are known."""
        classes = self.num_classes
        if is_dense(self.model) and self.class_names:
            classes = list(self.class_names)
        arch = {k: tuple(v) if isinstance(v, list) else v for k, v in self.arch.items()}  # JSON gave lists
        net = get_model(self.model, ctx=ctx, classes=classes, **{**arch, **kwargs})
        return _attach(net, self)

    def load(self, path, ctx=mx.cpu()):
        """The network with the weights of ``path``: a Gluon network for a ``.params`` file, a ``SymbolBlock`` for
        an exported ``P-symbol.json`` (its ``P-0000.params`` beside it)."""
        m = _EXPORTED.match(os.fspath(path))
        if not (m and m.group(2) == "symbol.json"):
            return load_weights(self.build(ctx), path, ctx=ctx)
        import warnings

        attention_op.load()  # a graph exported with the fused operator names it
        with warnings.catch_warnings():  # SymbolBlock's note that the file's weights carry no dtype: harmless here
            warnings.simplefilter("ignore", UserWarning)
            net = mx.gluon.SymbolBlock.imports(path, ["data"], f"{m.group(1)}-0000.params", ctx=ctx)
        net.num_classes = self.num_classes
        return _attach(net, self)


def is_dense(name):
    """Whether ``name`` is a dense prediction model's (``deeplab_resnest50``, ``faster_rcnn_fpn_resnest50``, ...)."""
    return model_entry(name).task != "classification"


def canonical_name(name):
    """The registry's name for ``name`` (aliases resolved, lower case); ``ValueError`` with hints when unknown."""
    return model_entry(name).name


def _attach(net, info):
    net.model_name, net.data_config, net.class_names, net.model_info = (info.model, info.data_config,
                                                                        info.class_names, info)
    return net


def load_class_names(path=None):
    """Class names, one per line (label i = line i); ``None`` gives the shipped ImageNet-1k names.

    Blank lines are errors (they would shift every label after them), except trailing ones.
    """
    path = path or IMAGENET_CLASSES_FILE
    if not os.path.isfile(path):
        raise FileNotFoundError(f"class names file not found: {path!r}")
    with open(path, encoding="utf-8") as f:
        lines = [line.rstrip("\r\n") for line in f]
    while lines and not lines[-1].strip():
        lines.pop()
    blank = [n for n, line in enumerate(lines, 1) if not line.strip()]
    if blank:
        raise ValueError(f"{path}:{blank[0]}: blank line in a class names file (one name per line, label i on "
                         f"line i + 1)")
    if not lines:
        raise ValueError(f"{path}: no class names in the file")
    return [line.strip() for line in lines]


def is_onnx(path):
    """Whether ``path`` names an ONNX file (it runs in ONNX Runtime or OpenVINO, not in MXNet)."""
    return os.fspath(path).lower().endswith(".onnx")


def info_path(path):
    """Where the information of a weights file is: ``X.params`` -> ``X.json``; an exported ``P-symbol.json`` ->
    ``P-0000.json`` (the information of its epoch-0 parameters)."""
    path = os.fspath(path)
    m = _EXPORTED.match(path)
    if m and m.group(2) == "symbol.json":
        return f"{m.group(1)}-0000.json"
    return os.path.splitext(path)[0] + ".json"


def read_info(path):
    """The :class:`ModelInfo` of a weights file, or None when it has none (a bare ``.params``).

    Checkpoints written before model information existed give their model and class count (their evaluation
    size was not recorded: the model's registry data config stands in). An ``.onnx`` file's information is in
    its metadata (:func:`~resnest_gluon.deploy.export_onnx`).
    """
    if is_onnx(path):
        return read_onnx_info(path)
    meta_path = info_path(path)
    if not os.path.isfile(meta_path):
        return None
    try:
        with open(meta_path, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError) as err:
        raise ValueError(f"{meta_path} (the information of {path}) is not readable JSON: {err}") from None
    if not isinstance(doc, dict):
        return None
    try:
        if isinstance(doc.get("model"), dict):
            return ModelInfo.from_dict(doc["model"])
        run = doc.get("run")
        if isinstance(run, dict) and "model" in run and "num_classes" in run:  # an older checkpoint
            return ModelInfo(run["model"], int(run["num_classes"]), model_entry(run["model"]).data_config)
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{meta_path}: the model information of {path} is malformed: {err}") from None
    return None  # some other JSON that happens to share the name


def read_onnx_info(path):
    """The :class:`ModelInfo` an ONNX file carries in its metadata (written by
    :func:`~resnest_gluon.deploy.export_onnx`); ``ValueError`` naming the file when it has none."""
    try:
        import onnx  # the deploy extra, needed only for .onnx files
    except ImportError as err:
        raise ImportError("reading an .onnx file needs the onnx package: pip install -r requirements-deploy.txt") \
            from err
    model = onnx.load(os.fspath(path), load_external_data=False)
    props = {p.key: p.value for p in model.metadata_props}
    if ONNX_METADATA_KEY not in props:
        raise ValueError(f"{path}: no {ONNX_METADATA_KEY} in its metadata_props (not written by resnest_gluon's "
                         f"export_onnx); give the model, classes and data config yourself")
    return ModelInfo.from_dict(json.loads(props[ONNX_METADATA_KEY]))


def write_info(params_path, info, **extra):
    """Writes ``info`` (and JSON-serialisable ``extra`` keys) to the information file of ``params_path``."""
    write_json(info_path(params_path), {"model": info.to_dict(), **extra}, indent=1)
    return info_path(params_path)


def resolve(params=None, model=None, num_classes=None, class_names=None, data_changes=None, pretrained=False):
    """The :class:`ModelInfo` to build and evaluate with: ``params``' own information, merged with the caller's.

    ``model`` / ``num_classes`` / ``class_names`` (a list or a names file) that contradict the file's are errors
    naming both values; ``data_changes`` (``input_size``, ``crop_pct``, ``interpolation``, ...) replace the data
    config's. Without information (a bare ``.params``, or ``pretrained``): ``model`` (default ``resnest50``), the
    file's classifier size, and the model's registry data config. Class names default to the file's, else to the
    ImageNet names for 1000 classes, else None. A dense model's bare file needs ``model`` and the classes.
    """
    info = read_info(params) if params else None
    source = f"{params} (see {info_path(params)})" if info else params
    if info and model and canonical_name(model) != info.model:
        raise ValueError(f"model {model!r} was asked for, but {source} holds a {info.model}")
    names = None
    if class_names is not None:
        names = class_names if isinstance(class_names, (list, tuple)) else load_class_names(class_names)
    names_source = class_names if isinstance(class_names, str) else "the given class names"
    if info:
        file_classes = info.num_classes
    elif params and not (model and is_dense(model)):
        file_classes = classes_in_params(params)
    else:
        file_classes = 1000 if pretrained else None
    if num_classes is not None and file_classes is not None and num_classes != file_classes:
        raise ValueError(f"{num_classes} classes were asked for, but {source or 'the pretrained model'} has "
                         f"{file_classes}")
    name = info.model if info else (model or "resnest50")
    if is_dense(name) and not (file_classes or num_classes or names):
        raise ValueError(f"{params or name} has no information file: say its classes (their names, or how many)")
    count = file_classes or num_classes or (len(names) if names else 1000)
    if names is not None and len(names) != count:
        raise ValueError(f"{names_source} has {len(names)} class names but the model "
                         f"({source or (model or 'resnest50') + ' pretrained'}) has {count} classes")
    if names is None:
        names = info.class_names if info else None
    if names is None and count == 1000 and not is_dense(name):
        names = load_class_names()
    if info:
        data = info.data_config
    else:
        data = model_entry(name).data_config
    changes = {k: v for k, v in (data_changes or {}).items() if v is not None}
    unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(data)})
    if unknown:
        raise ValueError(f"{name}'s data config has no {', '.join(unknown)} (its fields: "
                         f"{', '.join(f.name for f in dataclasses.fields(data))})")
    return ModelInfo(name, count, dataclasses.replace(data, **changes), names, info.arch if info else {})


def save_trained(net, path, class_names=None, data_config=None, **extra):
    """Saves ``net``'s weights to ``path`` and its information beside it (``X.json``); returns the info.

    ``class_names`` and ``data_config`` default to the network's own (``net.class_names``, ``net.data_config``).
    """
    info = info_of(net, class_names, data_config)
    atomic_write(path, net.save_parameters)
    write_info(path, info, **extra)
    return info


def info_of(net, class_names=None, data_config=None, arch=None):
    """The :class:`ModelInfo` describing a built network (``get_model`` / :func:`load_trained` ones)."""
    if getattr(net, "model_name", None) is None:
        raise ValueError("this network has no model_name: build it with resnest_gluon.get_model or load_trained")
    names = class_names if class_names is not None else getattr(net, "class_names", None)
    old = getattr(net, "model_info", None)
    if arch is None:  # a loaded network's, else the settings a dense model was built with
        arch = old.arch if old else getattr(net, "build_kwargs", {})
    return ModelInfo(net.model_name, net.num_classes, data_config or net.data_config, names, arch)


def export(net, prefix, epoch=0, class_names=None, data_config=None):
    """``net.export(prefix, epoch)`` plus the model information: ``P-symbol.json``, ``P-0000.params``,
    ``P-0000.json``. Each file appears complete or not at all. Returns the symbol and params paths.

    The graph is traced at the data config's input size. Graphs holding the fused split-attention operator need
    ``resnest_gluon.ops.attention_op.load()`` before ``SymbolBlock.imports`` (:func:`load_trained` does it); call
    ``resnest_gluon.splat.set_fused_attention(net, False)`` first for a graph plain MXNet loads.
    """
    info = info_of(net, class_names, data_config)
    size = info.data_config.input_size
    net.hybridize()
    ctx = net.collect_params().list_ctx()[0]
    net(mx.nd.zeros((1, 3, size, size), ctx=ctx))
    folder = os.path.dirname(os.path.abspath(prefix))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(prefix)}.{os.getpid()}.tmp")
    try:
        net.export(tmp, epoch)
        finals = []
        for suffix in ("-symbol.json", f"-{epoch:04d}.params"):
            os.replace(tmp + suffix, prefix + suffix)
            finals.append(prefix + suffix)
    finally:
        for suffix in ("-symbol.json", f"-{epoch:04d}.params"):
            if os.path.exists(tmp + suffix):
                os.remove(tmp + suffix)
    write_info(finals[1], info)
    return tuple(finals)


def load_trained(path, ctx=mx.cpu(), model=None, num_classes=None, class_names=None, **data_changes):
    """The trained network of ``path`` with its weights, ready to call: a Gluon ``ResNeSt`` for a ``.params`` file
    (a checkpoint, a :func:`save_trained` file or an exported ``P-0000.params``), a ``SymbolBlock`` for an exported
    ``P-symbol.json``. It carries ``model_name``, ``data_config``, ``class_names`` (None when unknown) and
    ``model_info``. Keywords are checked against the file's information (see :func:`resolve`); ``data_changes``
    (``input_size=``, ``crop_pct=``, ``interpolation=``) replace its data config.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weights file not found: {path!r}")
    if is_onnx(path):
        raise ValueError(f"{path} is an ONNX file: it runs in ONNX Runtime or OpenVINO "
                         f"(Predictor(params=..., backend='onnxruntime'), --backend), not in MXNet")
    return resolve(path, model, num_classes, class_names, data_changes).load(path, ctx)
