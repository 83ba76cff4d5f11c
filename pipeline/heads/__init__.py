"""Stage 2: heads fitted on cached features, chosen on validation, tested once.

This package fits and chooses; it writes nothing. Run folders, the leaderboard and loading a
saved head belong to :mod:`pipeline.runs`, which is also where the one-call entry point is::

    from pipeline.runs import fit_heads, load_head
    from pipeline.heads import make_grid
    result = fit_heads(["cache/elpv-efficientnet_lite0.h5"],
                       [make_grid("logreg", {"C": [0.01, 0.1, 1]}), "dense"])
    result.best.test["balanced_accuracy"], result.best.run_dir
    head = load_head(result.best.run_dir)       # verified before loading
    head.predict_proba(features), head.class_names, head.export()

Without saving: ``run_sweep(caches, heads, FitOptions(metric="accuracy"))`` returns the same
:class:`SweepResult` (``run_dir`` left empty).

Head kinds (``pipeline fit-head --help`` lists their parameters): ``dense``, ``dense_mlp``
(Keras) and ``logreg``, ``linear_svm``, ``rbf_svm``, ``knn``, ``random_forest``,
``gradient_boosting``, ``mlp`` (scikit-learn, each behind a StandardScaler).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: Public name -> the module defining it. Loaded on first use, so that reading the options
#: schema (the CLI's ``--help``) does not import scikit-learn, h5py or the head registry.
_EXPORTS = {
    **dict.fromkeys(("Head", "HeadSpec", "full_proba"), "spec"),
    **dict.fromkeys(("HeadConfig", "HeadGrid", "expand_grids", "make_grid", "parse_head_args",
                     "parse_param_arg"), "grid"),
    **dict.fromkeys(("get_head_spec", "list_heads", "make_head", "register_head",
                     "unregister_head", "layer_kinds", "finetunable_kinds", "export_kinds",
                     "superlinear_kinds"), "registry"),
    **dict.fromkeys(("DEFAULT_METRIC", "SELECTION_METRICS", "classification_metrics"),
                    "metrics"),
    "FitOptions": "options",
    "Param": "params",
    **dict.fromkeys(("Candidate", "ChosenRun", "SweepResult"), "results"),
    **dict.fromkeys(("DEFAULT_SWEEP", "as_grids", "default_sweep", "run_sweep"), "sweep"),
}

__all__ = [
    "DEFAULT_METRIC", "DEFAULT_SWEEP", "SELECTION_METRICS", "Candidate", "ChosenRun",
    "FitOptions", "Head", "HeadConfig", "HeadGrid", "HeadSpec", "Param", "SweepResult",
    "as_grids", "classification_metrics", "default_sweep", "expand_grids", "export_kinds",
    "finetunable_kinds",
    "full_proba", "get_head_spec", "layer_kinds", "list_heads", "make_grid", "make_head",
    "parse_head_args", "parse_param_arg", "register_head", "run_sweep", "superlinear_kinds",
    "unregister_head",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pipeline.heads' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"pipeline.heads.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


if TYPE_CHECKING:
    from pipeline.heads.grid import (
        HeadConfig,
        HeadGrid,
        expand_grids,
        make_grid,
        parse_head_args,
        parse_param_arg,
    )
    from pipeline.heads.metrics import (
        DEFAULT_METRIC,
        SELECTION_METRICS,
        classification_metrics,
    )
    from pipeline.heads.options import FitOptions
    from pipeline.heads.params import Param
    from pipeline.heads.registry import (
        export_kinds,
        finetunable_kinds,
        get_head_spec,
        layer_kinds,
        list_heads,
        make_head,
        register_head,
        superlinear_kinds,
        unregister_head,
    )
    from pipeline.heads.results import Candidate, ChosenRun, SweepResult
    from pipeline.heads.spec import Head, HeadSpec, full_proba
    from pipeline.heads.sweep import DEFAULT_SWEEP, as_grids, default_sweep, run_sweep
