"""A module imported on first attribute access, so listing bases never loads the framework.

``keras = lazy_module("keras")`` at the top of a family module reads like the plain import,
but Keras (and TensorFlow under it) is imported only when a model is built or an op runs.
``pipeline bases`` and the other commands that only read the registry stay fast.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


class LazyModule:
    """Stands for a module; the first attribute read imports it."""

    def __init__(self, name: str):
        self._name = name

    def _load(self) -> ModuleType:
        return importlib.import_module(self._name)

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._load(), attr)

    def __repr__(self) -> str:
        return f"<lazy module {self._name}>"


def lazy_module(name: str) -> Any:
    """A stand-in for ``import name`` that imports on first use."""
    return LazyModule(name)


class LazyFunction:
    """A function of a module imported on first call (e.g. a Keras ``preprocess_input``)."""

    def __init__(self, module: str, name: str):
        self.module, self.name = module, name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(self.module), self.name)(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<lazy {self.module}.{self.name}>"


def load_export(package: str, exports: dict[str, str], name: str, namespace: dict) -> Any:
    """A package's ``__getattr__`` (PEP 562): ``name`` from the submodule ``exports`` maps it
    to, imported now and cached in the package's ``namespace``."""
    module = exports.get(name)
    if module is None:
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{package}.{module}"), name)
    namespace[name] = value
    return value
