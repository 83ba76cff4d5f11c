"""The registry of head kinds: one kind -> one :class:`HeadSpec`, and questions about them.

The built-in kinds come from :mod:`pipeline.heads.table`, loaded on first use; the
implementations never import this module (the import graph has no circle). Importing the
registry does not import TensorFlow: the Keras heads import it when they build a model.

Other stages ask the specs for capabilities (:func:`finetunable_kinds`, :func:`layer_kinds`,
:func:`superlinear_kinds`) instead of keeping their own lists of kind names.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipeline.errors import PipelineError, did_you_mean
from pipeline.heads.spec import Head, HeadSpec

_REGISTRY: dict[str, HeadSpec] = {}
_LOADED: list[bool] = []  # non-empty once the built-in kinds are in


def _registry() -> dict[str, HeadSpec]:
    """The registry, with the built-in kinds loaded (once, before any other)."""
    if not _LOADED:
        from pipeline.heads.table import BUILTIN_HEADS

        _LOADED.append(True)
        for spec in BUILTIN_HEADS:
            register_head(spec)
    return _REGISTRY


def register_head(spec: HeadSpec, *, replace: bool = False) -> HeadSpec:
    """Add a head kind to the registry (``replace=True`` to redefine one, e.g. in tests)."""
    registry = _registry()
    if spec.kind in registry and not replace:
        raise ValueError(f"head kind {spec.kind!r} registered twice")
    registry[spec.kind] = spec
    return spec


def unregister_head(kind: str) -> None:
    _registry().pop(kind, None)


def get_head_spec(kind: str) -> HeadSpec:
    """The spec of a registered head kind; an unknown kind is a :class:`PipelineError`."""
    registry = _registry()
    try:
        return registry[kind]
    except KeyError:
        hint = did_you_mean(kind, registry, n=2)
        raise PipelineError(f"unknown head {kind!r}{hint}; known heads: "
                            f"{', '.join(registry)}") from None


def list_heads() -> list[HeadSpec]:
    """Every registered kind, built-in ones first, in registration order."""
    return list(_registry().values())


def make_head(kind: str, params: Mapping[str, Any] | None = None, *, n_classes: int,
              seed: int = 0) -> Head:
    """A new, unfitted head of ``kind`` with validated ``params`` (defaults fill the rest)."""
    return get_head_spec(kind).make(params, n_classes=n_classes, seed=seed)


def layer_kinds() -> list[str]:
    """Kinds whose fitted head is exactly a stack of Keras layers (``HeadSpec.layers``)."""
    return [s.kind for s in list_heads() if s.layers]


def finetunable_kinds() -> list[str]:
    """Kinds a fine-tuning run can start from (``HeadSpec.finetunable``)."""
    return [s.kind for s in list_heads() if s.finetunable]


def export_kinds(fmt: str) -> list[str]:
    """Kinds ``pipeline export --format fmt`` can write (``HeadSpec.export_formats``)."""
    return [s.kind for s in list_heads() if fmt in s.export_formats]


def superlinear_kinds() -> list[str]:
    """Kinds whose fitting cost grows faster than the training rows (``HeadSpec.scaling``)."""
    return [s.kind for s in list_heads() if s.scaling == "superlinear"]
