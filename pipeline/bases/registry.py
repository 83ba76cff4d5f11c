"""The registry of bases: one name -> one :class:`BaseSpec`."""

from __future__ import annotations

from pipeline.bases.spec import BaseSpec
from pipeline.errors import PipelineError, did_you_mean

_REGISTRY: dict[str, BaseSpec] = {}


def register(spec: BaseSpec) -> BaseSpec:
    if spec.name in _REGISTRY:
        raise ValueError(f"base {spec.name!r} registered twice")
    _REGISTRY[spec.name] = spec
    return spec


def get_base(name: str) -> BaseSpec:
    """The spec of a registered base; an unknown name is a :class:`PipelineError`."""
    _load_builtin()
    try:
        return _REGISTRY[name]
    except KeyError:
        hint = did_you_mean(name, _REGISTRY, n=3)
        raise PipelineError(
            f"unknown base {name!r}{hint}; `pipeline bases` lists the {len(_REGISTRY)} known"
        ) from None


def list_bases() -> list[BaseSpec]:
    _load_builtin()
    return list(_REGISTRY.values())


def _load_builtin() -> None:
    # Imported lazily: the modules register their specs on import.
    from pipeline.bases import efficientnet_lite, keras_apps  # noqa: F401
