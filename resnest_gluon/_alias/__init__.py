"""The ``resnest`` package: ``resnest.gluon`` is an alias of ``resnest_gluon``, not a copy.

``resnest.gluon`` and every ``resnest.gluon.<sub>`` resolve to the very module objects of ``resnest_gluon`` and
``resnest_gluon.<sub>``, so classes, registries and caches exist once.
"""
import importlib
import importlib.abc
import importlib.util
import sys

_ALIAS = __name__ + ".gluon"
_TARGET = "resnest_gluon"


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, target):
        self.target = target

    def create_module(self, spec):
        return importlib.import_module(self.target)

    def exec_module(self, module):
        """Nothing to run: the target module is already executed; the import system files it under the alias."""


class _AliasFinder(importlib.abc.MetaPathFinder):
    """Resolves ``resnest.gluon[.x]`` to the already-importable ``resnest_gluon[.x]``."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != _ALIAS and not fullname.startswith(_ALIAS + "."):
            return None
        real = _TARGET + fullname[len(_ALIAS):]
        if importlib.util.find_spec(real) is None:
            return None
        return importlib.util.spec_from_loader(fullname, _AliasLoader(real))


if not any(isinstance(f, _AliasFinder) for f in sys.meta_path):
    sys.meta_path.insert(0, _AliasFinder())

from . import gluon  # noqa: E402,F401  (import resnest; resnest.gluon works too)
