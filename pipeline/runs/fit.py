"""Fit heads and save them: the heads stage followed by its run folders, in one call."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

from pipeline.context import Context
from pipeline.heads.metrics import DEFAULT_METRIC
from pipeline.heads.options import FitOptions
from pipeline.heads.results import SweepResult
from pipeline.heads.sweep import HeadsArg, run_sweep
from pipeline.runs.writer import save_sweep


def fit_heads(
    caches: str | os.PathLike | Iterable[str | os.PathLike],
    heads: HeadsArg = None,
    *,
    metric: str = DEFAULT_METRIC,
    refit: bool = False,
    class_weight: str | None = None,
    jobs: int | None = None,
    seed: int = 0,
    cv: int | str = "auto",
    max_memory: int | str | None = None,
    reports_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    save: bool = True,
    quiet: bool = False,
    extra_config: Mapping[str, Any] | None = None,
    ctx: Context | None = None,
) -> SweepResult:
    """Fit every head configuration on every cache, select on validation (or by
    cross-validation), test the chosen,
    and (``save=True``) write a run folder per chosen head and refresh the leaderboard.

    ``caches``: feature-cache files (or folders of them) from ``pipeline extract``, or names
    (file name or unique prefix) in ``cache_dir`` (default ``$PIPELINE_CACHE_DIR`` or
    ``./cache``).
    ``heads``: grids (see :func:`pipeline.heads.as_grids`); ``None`` runs the default sweep.
    ``metric``, ``refit``, ``class_weight`` (``"balanced"``/``"none"``), ``jobs``, ``seed``,
    ``cv`` (folds of cross-validated selection: ``"auto"``, 0 = off, K), ``max_memory``
    (budget past which linear heads train out of core: ``"4G"``; default half of RAM):
    see :class:`~pipeline.heads.FitOptions` (validated before any work).
    ``reports_dir``/``quiet`` (or ``ctx``): where run folders go, and the progress output.
    ``extra_config`` is stored in each run's ``config.json`` as ``experiment``.

    Example::

        from pipeline.heads import make_grid
        from pipeline.runs import fit_heads
        result = fit_heads(paths, [make_grid("logreg", {"C": [0.01, 0.1, 1]}), "knn"])
        result.best.config.label, result.best.test["balanced_accuracy"], result.best.run_dir
    """
    options = FitOptions(metric=metric, refit=refit, class_weight=class_weight or "none",
                         jobs=jobs, seed=seed, cv=cv, max_memory=max_memory)
    ctx = ctx or Context.create(reports_dir=reports_dir, cache_dir=cache_dir, quiet=quiet)
    result = run_sweep(caches, heads, options, ctx=ctx)
    if save:
        save_sweep(result, ctx, extra=extra_config)
    return result
