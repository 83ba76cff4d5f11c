"""Pretrained convolutional bases: one registry, one module per family.

Names are loaded on first use, so that reading the registry (``pipeline bases``) imports no
framework: only :func:`build_base` / :func:`build_extractor` import Keras.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pipeline.bases.lazy import load_export

_EXPORTS = {
    **dict.fromkeys(("Extractor", "build_base", "build_extractor"), "extractor"),
    **dict.fromkeys(("get_base", "list_bases", "register"), "registry"),
    **dict.fromkeys(("BaseSpec", "POOLINGS"), "spec"),
}

__all__ = ["POOLINGS", "BaseSpec", "Extractor", "build_base", "build_extractor", "get_base",
           "list_bases", "register"]


def __getattr__(name: str) -> Any:
    return load_export(__name__, _EXPORTS, name, globals())


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


if TYPE_CHECKING:
    from pipeline.bases.extractor import Extractor, build_base, build_extractor
    from pipeline.bases.registry import get_base, list_bases, register
    from pipeline.bases.spec import POOLINGS, BaseSpec
