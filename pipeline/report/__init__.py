"""The HTML report over the run folders, and the same per-class reading in the terminal.

``reports/index.html``: each dataset and feature cache (class counts per split, base, layer,
input size, pooling, feature shape, extraction throughput), the validation and test metric
of every run with bootstrap intervals, the sweep curve of each head kind, and the sortable
leaderboard. ``<run>/report.html``: confusion matrices (counts and normalised), per-class
precision/recall/F1, ROC, precision-recall and reliability curves, the most confused pairs,
the top-losses grid of misclassified images, learning curves. Rendered from Jinja2
templates, figures as PNG files beside the pages::

    import pipeline.report
    pipeline.report.write_report("reports")            # every page
    rows = pipeline.report.interpret("#1")["per_class"]["test"]

Layer: above ``runs`` (it reads run folders and the caches they name) and below
``finetune`` (whose recorder refreshes it). The runs layer cannot call up into it, so this
package adds :func:`refresh` to :data:`pipeline.runs.leaderboard.PAGE_WRITERS` when it is
imported: every later leaderboard refresh (a new run, ``runs rm``) rewrites the index and the
missing run pages. The command line imports it at start-up.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pipeline import settings
from pipeline.runs.leaderboard import PAGE_WRITERS, find_run

__all__ = ["interpret", "refresh", "write_report"]


def write_report(reports_dir: str | os.PathLike | None = None, run: str | None = None, *,
                 cache_dir: str | os.PathLike | None = None, force: bool = True) -> Path:
    """Write ``index.html`` in ``reports_dir`` (default ``$PIPELINE_REPORTS_DIR`` or
    ``./reports``) and the page of every run, or of ``run`` alone (``best``, ``#N``, a run
    id or unique prefix, or a run folder). ``force=False`` keeps run pages newer than their
    run. Caches are looked up as :meth:`CacheRef.locate` does (``cache_dir``). Returns the
    page written for ``run``, else the index.

    Example::

        >>> write_report("reports")                     # doctest: +SKIP
        PosixPath('reports/index.html')
    """
    from pipeline.report.pages import RUN_PAGE, write_pages

    reports = settings.reports_dir(reports_dir)
    only = _find(reports, run) if run else None
    index = write_pages(reports, only=only, force=force, cache_dir=cache_dir)
    return only / RUN_PAGE if only is not None else index


def _find(reports: Path, run: str) -> Path:
    """``best`` (row #1), or what :func:`pipeline.runs.leaderboard.find_run` accepts."""
    return find_run(reports, "#1" if run.strip() == "best" else run.strip())


def interpret(run: str, reports_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """Per split, the per-class precision/recall/F1 table and the most confused class pairs
    of ``run`` (as :func:`write_report` names runs), from its saved predictions::

        {"run_id": ..., "classes": [...], "per_class": {"test": [{"class", "precision",
         "recall", "f1", "support"}, ...]}, "confused_pairs": {"test": [{"true",
         "predicted", "count", "share"}, ...]}}
    """
    from pipeline.errors import PipelineError
    from pipeline.report import data

    run_dir = _find(settings.reports_dir(reports_dir), run)
    r = data.load_run(run_dir)
    preds = r.predictions
    if not preds:
        raise PipelineError(f"{run_dir}: the run has no saved predictions "
                            f"({data.PREDICTIONS}); fit it again to interpret it")
    splits = [s for s in data.SPLITS if s in preds]
    return {"run_id": r.run_id, "run_dir": str(run_dir), "head": r.label,
            "classes": r.class_names,
            "per_class": {s: data.per_class(preds[s], r.class_names) for s in splits},
            "confused_pairs": {s: data.confused_pairs(preds[s], r.class_names)
                               for s in splits}}


def refresh(reports: str | os.PathLike) -> None:
    """The leaderboard hook: rewrite the index, write run pages that are missing or stale."""
    from pipeline.report.pages import write_pages

    write_pages(reports, force=False)


if refresh not in PAGE_WRITERS:
    PAGE_WRITERS.append(refresh)
