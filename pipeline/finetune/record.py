"""Recording a finished fine-tuning run: model, config, metrics, predictions, plots, leaderboard.

``config.json`` and ``metrics.json`` are the run records of :mod:`pipeline.runs.record` (so the
run joins the leaderboard); both are built by :func:`run_record` alone.
"""

from __future__ import annotations

import shutil
from typing import TYPE_CHECKING, Any

import keras
import numpy as np

import pipeline
import pipeline.report  # noqa: F401  (the leaderboard refresh below rewrites the report)
from pipeline.fileio import file_sha256, utc_timestamp
from pipeline.finetune.callbacks import KeepBest
from pipeline.finetune.run_folder import MODEL_FILE
from pipeline.heads.params import format_value
from pipeline.heads.results import SplitPredictions
from pipeline.runs.leaderboard import write_leaderboard
from pipeline.runs.record import (
    FINETUNE_STAGE,
    CacheRef,
    FinetuneInfo,
    HeadFile,
    RunMetrics,
    RunRecord,
    Selection,
)
from pipeline.runs.thumbnails import write_thumbnails
from pipeline.runs.writer import write_predictions

if TYPE_CHECKING:
    from pipeline.context import Context
    from pipeline.finetune.evaluate import Evaluated
    from pipeline.finetune.prepare import Prepared
    from pipeline.finetune.run_folder import RunFolder
    from pipeline.finetune.train import Trained


def record(prepared: Prepared, trained: Trained, evaluated: Evaluated, folder: RunFolder,
           ctx: Context) -> None:
    """Save the model and the run's records, mark the run done, drop what only resuming
    needed, and refresh the leaderboard."""
    prepared.classifier.save(folder.path / MODEL_FILE)
    config, metrics = run_record(prepared, trained, evaluated, folder,
                                 file_sha256(folder.path / MODEL_FILE))
    config.write(folder.path)
    metrics.write(folder.path)
    predictions = {s: SplitPredictions(np.asarray(prepared.splits[s].ids, dtype=object),
                                       prepared.splits[s].y, evaluated.proba[s])
                   for s in ("validation", "test")}
    write_predictions(folder.path, prepared.rebuilt.class_names, predictions)
    write_thumbnails(folder.path, prepared.features.info.dataset_root, predictions)
    _plots(prepared, trained, evaluated, folder, metrics.head_history)
    folder.state["status"] = "done"
    folder.write_state()
    shutil.rmtree(folder.backup_dir, ignore_errors=True)
    KeepBest(folder.path).discard_weights()
    write_leaderboard(ctx.reports_dir)


def _finetune_info(prepared: Prepared, folder: RunFolder) -> FinetuneInfo:
    src, loaded, rebuilt, unfrozen = (prepared.src, prepared.loaded, prepared.rebuilt,
                                      prepared.unfrozen)
    return FinetuneInfo.from_dict({
        **prepared.settings, "source_run_dir": str(src.run_dir),
        "source_head": {"kind": loaded.kind, "params": loaded.params},
        "fold": rebuilt.folded.how, "input_size": rebuilt.input_size,
        "unfreeze": {"start": unfrozen.start, "first_layer": unfrozen.first_layer,
                     "n_layers": unfrozen.n_layers,
                     "n_trainable_layers": unfrozen.n_trainable_layers,
                     "n_trainable_params": unfrozen.n_trainable_params},
        "batchnorm": "inference mode (frozen)", "epochs_budget": prepared.options.epochs,
        "sessions": folder.state.get("sessions", []), "digest": folder.state.get("digest"),
    }, "finetune")


def run_record(prepared: Prepared, trained: Trained, evaluated: Evaluated, folder: RunFolder,
               model_sha256: str) -> tuple[RunRecord, RunMetrics]:
    """The run's ``config.json`` and ``metrics.json``, as typed records."""
    loaded, settings = prepared.loaded, prepared.settings
    from_label = loaded.kind + "".join(f" {k}={format_value(v)}"
                                       for k, v in loaded.params.items()
                                       if k in ("C", "learning_rate", "units"))
    params = {"from": from_label, "unfreeze_from": settings["unfreeze_from"],
              "learning_rate": settings.get("learning_rate_found", settings["learning_rate"]),
              "optimizer": settings["optimizer"],
              "augment": prepared.augmentation.describe(), "epochs": trained.epochs_run}
    config = RunRecord(
        run_id=folder.run_id, created=utc_timestamp(), stage=FINETUNE_STAGE,
        cache=CacheRef.coerce(prepared.cache_info),
        head=HeadFile(kind=f"{loaded.kind}+finetune", family="keras", params=params,
                      n_classes=prepared.n_classes, seed=settings["seed"], file=MODEL_FILE,
                      sha256=model_sha256),
        selection=Selection(metric=f"{prepared.options.metric} (kept epoch, early stopping)",
                            on="validation"),
        finetune=_finetune_info(prepared, folder),
        versions={"pipeline": pipeline.__version__, "keras": keras.__version__})
    sessions = folder.state.get("sessions", [])
    metrics = RunMetrics(
        validation=evaluated.validation, test=evaluated.test, history=trained.history,
        best_epoch=trained.best_epoch, initial_validation=prepared.initial,
        initial_max_abs_diff=prepared.initial_max_abs_diff, epochs_run=trained.epochs_run,
        resumed_from_epoch=max((s.get("start_epoch", 0) for s in sessions), default=0),
        head_history=prepared.src.run_metrics.history, test_ci=evaluated.test_ci)
    return config, metrics


def _plots(prepared: Prepared, trained: Trained, evaluated: Evaluated, folder: RunFolder,
           head_history: dict[str, Any] | None) -> None:
    """The confusion matrices and the learning curve joined to the head's."""
    # matplotlib loads only when a run is recorded, not with the package.
    from pipeline.finetune.report import plot_joined_curve
    from pipeline.runs.plots import plot_confusion

    cache = prepared.cache_info
    title = (f"{cache.dataset} / {cache.base} / {prepared.loaded.kind} "
             f"fine-tuned ({prepared.src.run_id})")
    plot_confusion(folder.path / "confusion_matrix.png",
                   {"validation": evaluated.validation["confusion_matrix"],
                    "test": evaluated.test["confusion_matrix"]},
                   prepared.rebuilt.class_names, title)
    plot_joined_curve(folder.path / "learning_curve.png", head_history, trained.history,
                      prepared.initial, trained.best_epoch, title,
                      metric=prepared.options.metric)
