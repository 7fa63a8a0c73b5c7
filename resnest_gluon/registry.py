"""The model registry: every buildable name, whatever its task, in one table that imports no model.

Model families register themselves when their module is imported (the classification zoo,
:mod:`resnest_gluon.zoo`; the dense models, :mod:`resnest_gluon.dense`), as timm's ``_registry`` works. The
registry finds the families it knows of (:data:`FAMILIES`) by module name on the first lookup, so
``get_model("deeplab_resnest50")`` works whatever the caller imported, and nothing here imports a network.
"""
import difflib
import fnmatch
import importlib
from dataclasses import dataclass, field
from typing import Callable

__all__ = ["TASKS", "FAMILIES", "ModelEntry", "register_model", "get_model", "list_models", "model_entry",
           "model_task", "is_registered", "canonical_name"]

TASKS = ("classification", "detection", "segmentation")
# the modules that register models, found by name (plugins: this module imports none of them at import time)
FAMILIES = ("resnest_gluon.zoo", "resnest_gluon.dense")
_MODELS = {}  # name -> ModelEntry
_ALIASES = {}  # alias -> name
_loaded = []


@dataclass(frozen=True)
class ModelEntry:
    """One registered name: ``build(pretrained=, ctx=, root=, classes=, **kwargs)`` makes the network; ``data_config``
    is the evaluation transform its weights expect; ``config`` the family's own description (a
    :class:`~resnest_gluon.zoo.ModelConfig` for classifiers; the backbone's name for dense models)."""

    name: str
    task: str
    build: Callable
    data_config: object
    config: object = None
    aliases: tuple = field(default_factory=tuple)


def register_model(entry):
    """Adds ``entry`` (a :class:`ModelEntry`); a name registered twice is an error (two families disagreeing)."""
    if entry.task not in TASKS:
        raise ValueError(f"{entry.name}: task must be one of {TASKS}, got {entry.task!r}")
    for name in (entry.name, *entry.aliases):
        if name in _MODELS or name in _ALIASES:
            raise ValueError(f"model name {name!r} is registered twice")
    _MODELS[entry.name] = entry
    _ALIASES.update({alias: entry.name for alias in entry.aliases})
    return entry


def _discover():
    """Imports the model families once (they register on import)."""
    if not _loaded:
        _loaded.append(True)
        for module in FAMILIES:
            importlib.import_module(module)


def model_entry(name):
    """The :class:`ModelEntry` of ``name`` (aliases and case resolved); ``ValueError`` listing close matches."""
    _discover()
    key = str(name).lower()
    key = _ALIASES.get(key, key)
    if key in _MODELS:
        return _MODELS[key]
    close = difflib.get_close_matches(key, list(_MODELS), n=5, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise ValueError(f"unknown model {name!r}.{hint} Known models: {', '.join(list_models())} (and the dense "
                     f"models: list_models(task=None))")


def is_registered(name):
    try:
        model_entry(name)
    except ValueError:
        return False
    return True


def canonical_name(name):
    """The registry's name for ``name`` (aliases resolved, lower case); ``ValueError`` with hints when unknown."""
    return model_entry(name).name


def model_task(name):
    """``"classification"``, ``"detection"`` or ``"segmentation"``: what the model ``name`` predicts."""
    return model_entry(name).task


def list_models(pattern=None, task="classification"):
    """Sorted model names of ``task`` (None: every task), optionally filtered by a shell-style ``pattern``."""
    _discover()
    names = sorted(n for n, e in _MODELS.items() if task is None or e.task == task)
    return [n for n in names if fnmatch.fnmatch(n, pattern)] if pattern else names


def get_model(name, pretrained=False, ctx=None, root=None, classes=1000, **kwargs):
    """Builds the model ``name`` (see :func:`list_models`; dense names too, e.g. ``deeplab_resnest50``).

    Parameters
    ----------
    pretrained : bool   load the published weights (downloaded into ``root`` once, SHA-1 checked)
    ctx : Context or list of Context   where the weights go (default: CPU)
    root : str          weight cache folder (default ``$MXNET_HOME/models``, as GluonCV)
    classes : int       number of classes (a dense model also takes the list of class names); with ``pretrained``
                        and ``classes != 1000`` a classifier's ImageNet head is replaced by a fresh one
    kwargs              passed to the family's builder (``dropblock_prob``, ``final_drop``, ``features_only``, ...;
                        ``pretrained_base`` for a dense model's backbone)

    A classifier without ``pretrained`` is returned uninitialised, as in GluonCV: call ``net.initialize()``. The
    network carries ``net.model_name`` and ``net.data_config``.
    """
    entry = model_entry(name)
    return entry.build(pretrained=pretrained, ctx=ctx, root=root, classes=classes, **kwargs)
