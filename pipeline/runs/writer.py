"""Persist a sweep: one run folder per chosen head, its plots, and the leaderboard.

The heads stage returns a :class:`~pipeline.heads.sweep.SweepResult` and writes nothing; this
module turns each chosen configuration into a run folder (see :mod:`pipeline.runs.store`)
holding its :class:`~pipeline.runs.record.RunRecord`, :class:`~pipeline.runs.record.RunMetrics`,
the fitted head, its validation and test predictions (``predictions.csv``) and the plots, then
refreshes the leaderboard files.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.cache.store import SPLITS
from pipeline.context import Context
from pipeline.errors import PipelineError
from pipeline.fileio import atomic_write_text, utc_timestamp
from pipeline.heads.results import ChosenRun, Split, SplitPredictions, SweepResult
from pipeline.runs.leaderboard import write_leaderboard
from pipeline.runs.plots import plot_confusion, plot_learning_curve
from pipeline.runs.record import CacheRef, RunMetrics, RunRecord, Selection
from pipeline.runs.store import new_run_dir, save_head
from pipeline.runs.thumbnails import write_thumbnails

#: The validation and test predictions of a run (see :func:`write_predictions`).
PREDICTIONS = "predictions.csv"
#: The fields of the cache's record a run records as they are.
_CACHE_META = ("key", "samples_digest", "dataset_source", "weights", "weights_id", "layer",
               "pooling", "input_size", "preprocessing", "dtype", "feature_shape", "class_names")


def cache_ref(d: Split) -> CacheRef:
    """What a run records about the cache it was fitted on."""
    meta = {k: getattr(d.info, k) for k in _CACHE_META}
    counts = {f"n_{s}": len(d.y[s]) for s in SPLITS}
    return CacheRef.from_dict({"path": str(Path(d.path).resolve()), "file": Path(d.path).name,
                               "dataset": d.dataset,
                               "base": d.base, **meta, **counts,
                               "split_ids_sha256": d.ids_digest})


def _versions() -> dict[str, str]:
    import sklearn

    import pipeline

    return {"pipeline": pipeline.__version__, "scikit-learn": sklearn.__version__}


def run_record(result: SweepResult, run: ChosenRun, run_dir: Path, created: str,
               extra: Mapping[str, Any] | None = None) -> RunRecord:
    """The record of one chosen run, its head saved into ``run_dir``."""
    assert run.head is not None
    selection = Selection(
        metric=result.metric, on="cv" if run.cv else "validation", refit=run.refit,
        refit_params=run.head.params if run.refit else None,
        best_overall=run.best_overall,
        candidates=[{"params": c.config.params, "validation": c.validation,
                     "fit_seconds": c.fit_seconds, "error": c.error,
                     **({"cv": c.cv} if c.cv else {})}
                    for c in result.pool(run)],
        n_configurations_total=result.n_tried(run.cache_index),
        cv_folds=run.cv["folds"] if run.cv else None)
    return RunRecord(run_id=run_dir.name, created=created,
                     cache=cache_ref(result.splits[run.cache_index]),
                     head=save_head(run.head, run_dir), selection=selection,
                     versions=_versions(), experiment=dict(extra) if extra else None)


def run_metrics(run: ChosenRun) -> RunMetrics:
    """Validation and test metrics; for epoch heads the history of the validation-monitored
    fit (also for refitted heads, whose refit has no validation to monitor)."""
    assert run.head is not None
    trained = run.candidate.head if run.candidate is not None else None
    history = (trained.history if trained is not None else None) or run.head.history
    extra = {"cv": run.cv, "test_ci": run.test_ci}
    if not history:
        return RunMetrics(validation=run.validation, test=run.test, **extra)
    return RunMetrics(validation=run.validation, test=run.test, history=history,
                      best_epoch=getattr(trained, "best_epoch", None), **extra)


def _plot(run: ChosenRun, run_dir: Path, metrics: RunMetrics, class_names: list[str]) -> None:
    assert run.head is not None
    title = f"{run.dataset} / {run.base} / {run.config.label}"
    plot_confusion(run_dir / "confusion_matrix.png",
                   {f"{run.cv['folds']}-fold cv" if run.cv else "validation":
                    run.validation["confusion_matrix"],
                    "test": run.test["confusion_matrix"]}, class_names, title)
    history = metrics.history
    if history and ("val_loss" in history or run.head.family == "keras"):
        plot_learning_curve(run_dir / "learning_curve.png", history, title,
                            best_epoch=metrics.best_epoch)


def write_predictions(run_dir: Path, class_names: Sequence[str],
                      splits: Mapping[str, SplitPredictions]) -> Path:
    """``predictions.csv``: one row per validation and test sample – ``id``, ``split``,
    ``label`` and ``predicted`` (class names), then ``p_<class>`` per class (probabilities as
    computed, full precision)."""
    text = io.StringIO(newline="")
    w = csv.writer(text)
    w.writerow(["id", "split", "label", "predicted", *(f"p_{c}" for c in class_names)])
    for split, p in splits.items():
        proba = np.asarray(p.proba, dtype=np.float64)
        if proba.shape != (len(p.ids), len(class_names)) or len(p.labels) != len(p.ids):
            raise PipelineError(f"{run_dir}: {split} predictions do not match its rows")
        predicted = np.argmax(proba, axis=1) if len(proba) else np.zeros(0, dtype=int)
        for sample_id, label, pred, row in zip(p.ids, p.labels, predicted, proba, strict=True):
            w.writerow([sample_id, split, class_names[int(label)], class_names[int(pred)],
                        *(repr(float(v)) for v in row)])
    return atomic_write_text(run_dir / PREDICTIONS, text.getvalue())


def save_sweep(result: SweepResult, ctx: Context | None = None,
               extra: Mapping[str, Any] | None = None) -> SweepResult:
    """Write a run folder per chosen run under ``ctx.reports_dir`` and refresh the
    leaderboard; fills each run's ``run_id``/``run_dir`` and the result's ``reports_dir``.

    ``extra`` is stored as the record's ``experiment`` (e.g. the experiment, with its
    ``[finetune]`` table).
    """
    ctx = ctx or Context.create()
    reports = ctx.reports_dir
    now = time.time()
    created = utc_timestamp()
    for run in result.runs:
        d = result.splits[run.cache_index]
        run_dir = new_run_dir(reports, d.dataset, d.base, run.config.slug, now=now)
        run.run_dir, run.run_id = run_dir, run_dir.name
        record = run_record(result, run, run_dir, created, extra)
        metrics = run_metrics(run)
        record.write(run_dir)
        metrics.write(run_dir)
        write_predictions(run_dir, d.class_names, run.predictions)
        # While the images are surely there: the report's top-losses grid reads these.
        write_thumbnails(run_dir, d.info.dataset_root, run.predictions)
        _plot(run, run_dir, metrics, d.class_names)
    write_leaderboard(reports)
    result.reports_dir = reports
    return result
