"""Convert PyTorch ResNeSt weights (timm or the official zhanghang1989 code) into Gluon ``.params`` files.

    from resnest_gluon.convert import convert_file
    convert_file("resnest50d.pth", "resnest50d.params", "resnest50d")

The Gluon-to-PyTorch name map lives only here. Both PyTorch codebases use the same module paths as this package
(``conv1.<i>``, ``bn1``, ``layer<s>.<j>.conv2.fc1``, ``downsample.<i>``, ``fc``); they differ in two ways only:
BatchNorm's ``gamma/beta`` are ``weight/bias`` (plus a ``num_batches_tracked`` counter that Gluon has no use for),
and the split-attention convolution's BatchNorm is ``conv2.bn0`` where ours is ``conv2.bn``.

torch is an optional extra: it is imported only inside :func:`load_torch_checkpoint`, so this module (and the
package) import without it. The conversion itself works on numpy arrays.
"""
import os
import re

import mxnet as mx
import numpy as np

from .atomic import atomic_path
from .zoo import get_config, get_model, load_weights

__all__ = ["gluon_to_torch_name", "torch_names", "unwrap_state_dict", "convert_state_dict",
           "load_torch_checkpoint", "convert_file"]

_BN_LEAVES = {"gamma": "weight", "beta": "bias", "running_mean": "running_mean", "running_var": "running_var"}
# Wrappers that training scripts put around a state_dict, tried in this order.
_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "net")
_IGNORED_SUFFIXES = ("num_batches_tracked",)  # BN step counters: no Gluon counterpart, not needed for inference


def gluon_to_torch_name(name):
    """The PyTorch key of the Gluon structural parameter name ``name`` (e.g. ``layer2.0.conv2.bn.gamma``).

    A parameter is a BatchNorm one when its leaf is ``gamma``, ``beta`` or ``running_*``; in PyTorch its module
    path is the same except that the split-attention conv's BN child ``bn`` is ``bn0`` (it is the only child
    named exactly ``bn`` in ResNeSt).
    """
    *path, leaf = name.split(".")
    if leaf in _BN_LEAVES:
        leaf = _BN_LEAVES[leaf]
        path = ["bn0" if part == "bn" else part for part in path]
    return ".".join(path + [leaf])


def _is_state(name):
    """DropBlock probabilities are run-time state stored as parameters, not weights: never converted."""
    return name.endswith("drop_prob")


def torch_names(net):
    """``{gluon_name: torch_name}`` for every weight of ``net`` (structural names, DropBlock state excluded)."""
    names = {k: gluon_to_torch_name(k) for k in net._collect_params_with_prefix() if not _is_state(k)}
    if len(set(names.values())) != len(names):  # a collision would silently load one tensor twice
        raise AssertionError("the Gluon-to-PyTorch name map is not one-to-one for this network")
    return names


def unwrap_state_dict(obj):
    """The bare state_dict inside a checkpoint: descends ``{'state_dict': ...}`` / ``{'model': ...}`` wrappers and
    strips the ``module.`` prefix DataParallel / DistributedDataParallel add to every key.

    Training checkpoints bundle the weights with epoch, optimizer state and so on; only the weights matter here.
    """
    if not isinstance(obj, dict):
        raise ValueError(f"a checkpoint must be a dict of tensors (a state_dict), got {type(obj).__name__}")
    seen = 0
    while seen < 4:
        wrapper = next((k for k in _WRAPPER_KEYS if isinstance(obj.get(k), dict)), None)
        if wrapper is None:
            break
        obj = obj[wrapper]
        seen += 1
    if obj and all(isinstance(k, str) and k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def _shape_fits(model_shape, file_shape):
    """Shapes agree, treating 0 in a not-yet-inferred Gluon shape as unknown."""
    return len(model_shape) == len(file_shape) and all(m in (0, f) for m, f in zip(model_shape, file_shape))


def _first(keys, n=5):
    keys = sorted(keys)
    more = f" and {len(keys) - n} more" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def convert_state_dict(state_dict, net):
    """Maps a PyTorch state_dict (name -> numpy array) onto ``net``'s parameters: ``{gluon_name: NDArray}``.

    Strict on purpose, so that a checkpoint of another model cannot half-load: every weight of ``net`` must be
    present with its exact shape and every tensor of the checkpoint must be used (``num_batches_tracked`` aside).
    Otherwise ``ValueError`` names the model and the offending keys. Arrays are cast to the parameter's dtype.
    """
    model = getattr(net, "model_name", type(net).__name__)
    state_dict = unwrap_state_dict(state_dict)
    names = torch_names(net)
    params = net._collect_params_with_prefix()
    wanted = set(names.values())
    missing = sorted(t for t in wanted if t not in state_dict)
    unused = sorted(k for k in state_dict if k not in wanted and not k.endswith(_IGNORED_SUFFIXES))
    not_arrays = sorted(t for t in wanted & set(state_dict) if not hasattr(state_dict[t], "shape"))
    shapes = [(t, params[g].shape, tuple(state_dict[t].shape)) for g, t in names.items()
              if t in state_dict and t not in not_arrays and not _shape_fits(params[g].shape, state_dict[t].shape)]
    problems = []
    if missing:
        problems.append(f"{len(missing)} weights of {model} missing from the checkpoint (first: {_first(missing)})")
    if unused:
        problems.append(f"{len(unused)} checkpoint tensors that {model} does not have (first: {_first(unused)})")
    if not_arrays:
        problems.append(f"entries that are not arrays: {_first(not_arrays)}")
    if shapes:
        problems.append("shape mismatch: " + "; ".join(f"{t} model {m} vs checkpoint {f}" for t, m, f in shapes[:5])
                        + (f" and {len(shapes) - 5} more" if len(shapes) > 5 else ""))
    if problems:
        if shapes and all(t.startswith("fc.") for t, _, _ in shapes) and not (missing or unused or not_arrays):
            hint = f" The classifier differs: convert with classes={state_dict['fc.weight'].shape[0]}."
        else:
            hint = " Is the checkpoint of another model? Check the model name."
        raise ValueError(f"checkpoint does not fit model {model}: " + " | ".join(problems) + "." + hint)
    return {g: mx.nd.array(np.asarray(state_dict[t]), dtype=params[g].dtype) for g, t in names.items()}


def load_torch_checkpoint(path):
    """Reads a PyTorch checkpoint into ``{name: numpy array}`` (on CPU, wrappers and ``module.`` removed).

    Uses ``weights_only=True``: a checkpoint is untrusted input and must not run code while it is unpickled.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        import torch  # optional extra, imported only when a PyTorch file is actually read
    except ImportError:
        raise ImportError("reading PyTorch checkpoints needs torch: pip install torch (CPU is enough), or use the "
                          "project's second environment (tools/setup_env.sh torch, then .venv-torch/bin/python)") \
            from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types (UnpicklingError, RuntimeError, EOFError, ...)
        raise ValueError(_explain_load_error(path, err)) from None
    state_dict = unwrap_state_dict(obj)
    out = {}
    for key, value in state_dict.items():
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu()
            if value.dtype == torch.bfloat16:  # numpy has no bfloat16
                value = value.float()
            value = value.numpy()
        out[key] = value
    return out


def _explain_load_error(path, err):
    """torch.load's errors are long and generic; keep the part that says what is wrong with this file."""
    text = " ".join(re.sub(r"\x1b\[[0-9;]*m", "", str(err)).split()) or type(err).__name__
    found = re.search(r"WeightsUnpickler error:\s*(.*?)\s*(?:Check the documentation|$)", text)
    detail = found.group(1) if found else text.split(". ")[0]
    glob = re.search(r"Unsupported global: GLOBAL (\S+)", detail)
    if glob:
        return (f"{path} holds Python objects besides tensors ({glob.group(1)}), which a weights-only load refuses "
                f"so that reading a checkpoint cannot run code. If you trust the file, re-save only its weights: "
                f"torch.save(torch.load({path!r}, weights_only=False)['state_dict'], 'weights.pth')")
    return f"{path} is not a readable PyTorch checkpoint: {detail}"


def convert_file(src, dst, model_name, classes=None):
    """Converts the PyTorch checkpoint ``src`` into the Gluon ``.params`` file ``dst`` for ``model_name``.

    ``classes`` defaults to the rows of the checkpoint's ``fc.weight``. The file is written atomically (a temporary
    file in the destination folder, created if needed), checked to load into the model, and only then renamed onto
    ``dst``, so ``dst`` is never left half-written. Returns ``dst``.
    """
    get_config(model_name)  # an unknown name fails before a large checkpoint is read
    state_dict = load_torch_checkpoint(src)
    if classes is None:
        fc = state_dict.get("fc.weight")
        classes = int(fc.shape[0]) if hasattr(fc, "shape") else 1000
    net = get_model(model_name, classes=classes)
    arrays = convert_state_dict(state_dict, net)
    dst = os.fspath(dst)
    with atomic_path(dst) as tmp:
        mx.nd.save(tmp, arrays)
        load_weights(net, tmp)  # the file must load into the model it was made for
    return dst
