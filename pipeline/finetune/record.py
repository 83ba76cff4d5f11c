"""Recording a finished fine-tuning run: model, config, metrics, plots, leaderboard.

``config.json`` and ``metrics.json`` keep the heads stage's layout (so the run joins the
leaderboard); both are built by :func:`run_record` alone.
"""

from __future__ import annotations

import shutil
from typing import TYPE_CHECKING, Any

import keras

import pipeline
from pipeline.fileio import file_sha256, utc_timestamp, write_json
from pipeline.finetune.callbacks import KeepBest
from pipeline.finetune.run_folder import MODEL_FILE
from pipeline.finetune.source import FINETUNE_STAGE
from pipeline.heads.params import format_value
from pipeline.runs.leaderboard import write_leaderboard

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
    write_json(folder.path / "config.json", config)
    write_json(folder.path / "metrics.json", metrics)
    _plots(prepared, trained, evaluated, folder, metrics["head_history"])
    folder.state["status"] = "done"
    folder.write_state()
    shutil.rmtree(folder.backup_dir, ignore_errors=True)
    KeepBest(folder.path).discard_weights()
    write_leaderboard(ctx.reports_dir)


def run_record(prepared: Prepared, trained: Trained, evaluated: Evaluated, folder: RunFolder,
               model_sha256: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(config, metrics)``: the contents of ``config.json`` and ``metrics.json``."""
    src, loaded, rebuilt, unfrozen = (prepared.src, prepared.loaded, prepared.rebuilt,
                                      prepared.unfrozen)
    settings, state = prepared.settings, folder.state
    from_label = loaded.kind + "".join(f" {k}={format_value(v)}"
                                       for k, v in loaded.params.items()
                                       if k in ("C", "learning_rate", "units"))
    params = {"from": from_label, "unfreeze_from": settings["unfreeze_from"],
              "learning_rate": settings["learning_rate"], "optimizer": settings["optimizer"],
              "augment": prepared.augmentation.describe(), "epochs": trained.epochs_run}
    config = {
        "run_id": folder.run_id, "created": utc_timestamp(), "stage": FINETUNE_STAGE,
        "cache": dict(prepared.cache_info),
        "head": {"kind": f"{loaded.kind}+finetune", "family": "keras", "params": params,
                 "n_classes": prepared.n_classes, "seed": settings["seed"],
                 "file": MODEL_FILE, "sha256": model_sha256},
        "selection": {"metric": "val_loss (early stopping)", "on": "validation",
                      "refit": False, "best_overall": False},
        "finetune": {
            **settings, "source_run_dir": str(src.run_dir),
            "source_head": {"kind": loaded.kind, "params": loaded.params},
            "fold": rebuilt.folded.how, "input_size": rebuilt.input_size,
            "unfreeze": {"start": unfrozen.start, "first_layer": unfrozen.first_layer,
                         "n_layers": unfrozen.n_layers,
                         "n_trainable_layers": unfrozen.n_trainable_layers,
                         "n_trainable_params": unfrozen.n_trainable_params},
            "batchnorm": "inference mode (frozen)", "epochs_budget": prepared.options.epochs,
            "sessions": state.get("sessions", []), "digest": state.get("digest"),
        },
        "versions": {"pipeline": pipeline.__version__, "keras": keras.__version__},
    }
    metrics = {
        "validation": evaluated.validation, "test": evaluated.test,
        "initial_validation": prepared.initial,
        "initial_max_abs_diff": prepared.initial_max_abs_diff,
        "history": trained.history, "best_epoch": trained.best_epoch,
        "epochs_run": trained.epochs_run,
        "resumed_from_epoch": max((s.get("start_epoch", 0) for s in state.get("sessions", [])),
                                  default=0),
        "head_history": src.metrics.get("history") if isinstance(src.metrics, dict) else None,
    }
    return config, metrics


def _plots(prepared: Prepared, trained: Trained, evaluated: Evaluated, folder: RunFolder,
           head_history: dict[str, Any] | None) -> None:
    """The confusion matrices and the learning curve joined to the head's."""
    # matplotlib loads only when a run is recorded, not with the package.
    from pipeline.finetune.report import plot_joined_curve
    from pipeline.runs.plots import plot_confusion

    cache = prepared.cache_info
    title = (f"{cache.get('dataset')} / {cache.get('base')} / {prepared.loaded.kind} "
             f"fine-tuned ({prepared.src.run_id})")
    plot_confusion(folder.path / "confusion_matrix.png",
                   {"validation": evaluated.validation["confusion_matrix"],
                    "test": evaluated.test["confusion_matrix"]},
                   prepared.rebuilt.class_names, title)
    plot_joined_curve(folder.path / "learning_curve.png", head_history, trained.history,
                      prepared.initial, trained.best_epoch, title)
