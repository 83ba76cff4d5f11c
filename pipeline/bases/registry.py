"""The registry of bases: one name -> one :class:`BaseSpec`.

The built-in bases come from :mod:`pipeline.bases.table`, loaded on first use so that importing
the registry does not build the Keras application tables; the family modules never import this
module (the import graph has no circle).
"""

from __future__ import annotations

from pipeline.bases.spec import BaseSpec
from pipeline.errors import PipelineError, did_you_mean

_REGISTRY: dict[str, BaseSpec] = {}


def _registry() -> dict[str, BaseSpec]:
    """The registry, with the built-in bases loaded (once, before any other)."""
    if not _REGISTRY:
        from pipeline.bases.table import BUILTIN_BASES

        for spec in BUILTIN_BASES:
            _add(spec)
    return _REGISTRY


def _add(spec: BaseSpec) -> BaseSpec:
    if spec.name in _REGISTRY:
        raise ValueError(f"base {spec.name!r} registered twice")
    _REGISTRY[spec.name] = spec
    return spec


def register(spec: BaseSpec) -> BaseSpec:
    """Add a base; a name already registered (built-in or not) is a ValueError."""
    _registry()
    return _add(spec)


def get_base(name: str) -> BaseSpec:
    """The spec of a registered base; an unknown name is a :class:`PipelineError`."""
    registry = _registry()
    try:
        return registry[name]
    except KeyError:
        hint = did_you_mean(name, registry, n=3)
        raise PipelineError(
            f"unknown base {name!r}{hint}; `pipeline bases` lists the {len(registry)} known"
        ) from None


def list_bases() -> list[BaseSpec]:
    return list(_registry().values())
