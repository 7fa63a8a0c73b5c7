"""Package attributes resolved on first use (PEP 562), so ``import resnest_gluon`` (or a light submodule such as
``resnest_gluon.atomic``) loads no network, no MXNet and no compiled operator."""
import importlib
import sys

__all__ = ["lazy_attributes"]


def lazy_attributes(package, exports, extra=None):
    """``(__getattr__, __dir__)`` for ``package`` whose ``exports`` map a public name to the submodule that defines
    it (relative, e.g. ``".zoo"``); ``extra(name)`` may resolve the names not listed (or raise AttributeError).
    Each value is cached in the package once resolved."""

    def __getattr__(name):
        if name in exports:
            value = getattr(importlib.import_module(exports[name], package), name)
        elif extra is not None and (name == "__all__" or not name.startswith("__")):
            value = extra(name)
        else:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        setattr(sys.modules[package], name, value)
        return value

    def __dir__():
        return sorted(set(vars(sys.modules[package])) | set(exports))

    return __getattr__, __dir__
