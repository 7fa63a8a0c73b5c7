"""Reading ``.params`` files into networks by parameter name, with errors that name the file and the mismatch.

Below the networks: it needs only MXNet, so the model files, the dense models and the zoo share one loader.
"""
import os
import re

import mxnet as mx

from .exits import plain_reason

__all__ = ["read_params", "classes_in_params", "load_weights"]


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
