"""The head interface, the registry of head kinds and their configurations, in one import.

Kept so that ``from pipeline.heads.base import ...`` keeps working; the names live in
:mod:`pipeline.heads.spec` (the interface and a kind's declaration),
:mod:`pipeline.heads.registry` (the kinds) and :mod:`pipeline.heads.grid` (configurations).
New code imports them from :mod:`pipeline.heads`.
"""

from __future__ import annotations

from pipeline.heads.grid import (
    HeadConfig,
    HeadGrid,
    expand_grids,
    make_grid,
    parse_head_args,
    parse_param_arg,
)
from pipeline.heads.registry import (
    finetunable_kinds,
    get_head_spec,
    layer_kinds,
    list_heads,
    make_head,
    register_head,
    superlinear_kinds,
    unregister_head,
)
from pipeline.heads.spec import LAYER_FORMS, SCALINGS, Head, HeadSpec, full_proba

__all__ = [
    "LAYER_FORMS", "SCALINGS", "Head", "HeadConfig", "HeadGrid", "HeadSpec", "expand_grids",
    "finetunable_kinds", "full_proba", "get_head_spec", "layer_kinds", "list_heads",
    "make_grid", "make_head", "parse_head_args", "parse_param_arg", "register_head",
    "superlinear_kinds", "unregister_head",
]
