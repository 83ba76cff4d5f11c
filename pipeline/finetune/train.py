"""Stage 3: fine-tune base + head end to end, starting from a fitted head run.

What :func:`finetune` does, in order:

1. Resolve the head run (``RUN_ID``, ``best`` or a folder) and load its head (hash-verified).
2. Open the run's feature cache; hash every image under ``dataset_root`` again (one clear
   error if any changed) and read train/validation/test exactly as the cache splits them.
3. Rebuild base + head as one Keras model (:mod:`pipeline.finetune.model`); a linear head is
   folded into a Dense layer. Before any training its validation outputs are compared with
   the head's ``predict_proba`` on the cached features (recorded as ``initial_max_abs_diff``).
4. Put augmentation before the base, unfreeze the requested top of the base (BatchNorm stays
   in inference mode), compile with a low learning rate (default 1e-5).
5. Train with early stopping on validation loss, keeping the best epoch's weights (the
   starting point counts as epoch 0: if no epoch beats it, the head's weights stay). Each
   finished epoch is backed up in the run folder (``keras.callbacks.BackupAndRestore``), so
   running the same command again after a crash or kill resumes from the last finished epoch
   (``epochs`` is a budget and not part of a run's identity: the same settings with a larger
   budget continue an unfinished run; ``resume=False`` always starts a new folder).
6. Evaluate validation and the test split once, with the kept weights; write the run folder
   (``model.keras``, config, metrics with the heads stage's metric names, confusion matrices,
   the joined learning curve) and refresh the leaderboard.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np

from pipeline import settings
from pipeline.errors import PipelineError
from pipeline.finetune.augment import Augmentation, parse_augment
from pipeline.finetune.fold import FOLDABLE
from pipeline.finetune.source import FINETUNE_STAGE, resolve_run
from pipeline.finetune.unfreeze import DEFAULT_UNFREEZE, parse_unfreeze
from pipeline.progress import Reporter

OPTIMIZERS = ("adam", "rmsprop", "sgd")
DEFAULT_LEARNING_RATE = 1e-5
MODEL_FILE = "model.keras"
STATE_FILE = "finetune_state.json"
HISTORY_FILE = "finetune_history.json"
BEST_WEIGHTS = "best.weights.h5"
BEST_FILE = "best.json"
BACKUP_DIR = "backup"


@dataclass
class FinetuneResult:
    """What a fine-tuning run produced (its folder holds the same, on disk)."""

    run_id: str
    run_dir: Path
    source_run: str
    validation: dict[str, Any]
    test: dict[str, Any]
    initial_validation: dict[str, Any]
    initial_max_abs_diff: float
    history: dict[str, list[float]] = field(default_factory=dict)
    best_epoch: int | None = None
    epochs_run: int = 0
    resumed_from_epoch: int = 0
    seconds: float = 0.0

    @property
    def model_path(self) -> Path:
        return self.run_dir / MODEL_FILE


#: Fine-tuning settings and their defaults (also the keys an experiment's [finetune] takes).
DEFAULTS: dict[str, Any] = {
    "epochs": 10, "learning_rate": DEFAULT_LEARNING_RATE, "optimizer": "adam",
    "unfreeze_from": DEFAULT_UNFREEZE, "augment": "default", "batch_size": 32, "patience": 3,
    "class_weight": None, "seed": 0,
}


def resolve_settings(given: Mapping[str, Any], table: Mapping[str, Any] | None,
                     where: str = "[finetune]") -> dict[str, Any]:
    """Each setting: the value given, else the experiment's ``[finetune]`` value, else the
    default. Unknown keys in the table are an error (a typo must not be silently ignored)."""
    table = dict(table or {})
    if "lr" in table and "learning_rate" not in table:
        table["learning_rate"] = table.pop("lr")
    bad = sorted(set(table) - set(DEFAULTS))
    if bad:
        raise PipelineError(f"{where}: unknown key(s) {', '.join(bad)}; expected "
                            f"{', '.join(DEFAULTS)}")
    out = {}
    for key, default in DEFAULTS.items():
        value = given.get(key)
        out[key] = value if value is not None else table.get(key, default)
    return out


def _check_settings(epochs: int, learning_rate: float, optimizer: str, batch_size: int,
                    patience: int) -> None:
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise PipelineError(f"--epochs {epochs!r}: expected a positive whole number")
    if not isinstance(learning_rate, int | float) or not (
            math.isfinite(learning_rate) and learning_rate > 0):
        raise PipelineError(f"--learning-rate {learning_rate!r}: expected a positive number "
                            "(fine-tuning wants it small, e.g. 1e-5)")
    if optimizer not in OPTIMIZERS:
        raise PipelineError(f"--optimizer {optimizer!r}: expected one of {', '.join(OPTIMIZERS)}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise PipelineError(f"--batch-size {batch_size!r}: expected a positive whole number")
    if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
        raise PipelineError(f"--patience {patience!r}: expected 0 (never stop early) or more")


def finetune(
    run: str | os.PathLike = "best",
    *,
    epochs: int | None = None,
    learning_rate: float | None = None,
    optimizer: str | None = None,
    unfreeze_from: str | int | float | None = None,
    augment: str | Mapping[str, Any] | Augmentation | None = None,
    batch_size: int | None = None,
    patience: int | None = None,
    class_weight: str | None = None,
    seed: int | None = None,
    reports_dir: str | os.PathLike | None = None,
    resume: bool = True,
    quiet: bool = False,
) -> FinetuneResult:
    """Fine-tune the base and head of a head run end to end; returns the new run.

    ``run``: a head run id (or unique prefix), ``"best"`` (best head run on the leaderboard)
    or a run folder. Every setting left ``None`` comes from the ``[finetune]`` table of the
    experiment the head run was made by (``pipeline run``), else from :data:`DEFAULTS`:

    * ``unfreeze_from``: where training starts in the base: a layer name, an index, a
      fraction of the top layers (``0.3``), ``"all"``, or ``"none"`` (head only);
    * ``augment``: ``"default"`` (the tutorials' flip/rotation/zoom), ``"none"``,
      ``"flip=vertical,zoom=0.2"``, a dict or an :class:`Augmentation`;
    * ``learning_rate`` (1e-5), ``optimizer`` (adam, rmsprop, sgd), ``batch_size``;
    * ``epochs``: the total budget; ``patience``: epochs without a better validation loss
      before stopping (0: never);
    * ``class_weight``: ``"balanced"``/``"none"`` (default: the head's own setting).

    ``resume``: continue an unfinished run with the same settings (its folder holds the last
    finished epoch) instead of starting anew.
    """
    from pipeline.runs.store import load_head

    src = resolve_run(run, reports_dir, head_runs_only=True)
    table = (src.config.get("experiment") or {}).get("finetune")
    opts = resolve_settings(
        {"epochs": epochs, "learning_rate": learning_rate, "optimizer": optimizer,
         "unfreeze_from": unfreeze_from, "augment": augment, "batch_size": batch_size,
         "patience": patience, "class_weight": class_weight, "seed": seed},
        table, f"run {src.run_id}: experiment [finetune]")
    epochs, learning_rate, optimizer = opts["epochs"], opts["learning_rate"], opts["optimizer"]
    batch_size, patience, seed = opts["batch_size"], opts["patience"], opts["seed"]
    class_weight = opts["class_weight"]
    _check_settings(epochs, learning_rate, optimizer, batch_size, patience)
    aug = parse_augment(opts["augment"] if not isinstance(opts["augment"], Mapping)
                        else dict(opts["augment"]))
    unfreeze_spec = parse_unfreeze(opts["unfreeze_from"])
    if class_weight not in (None, "none", "balanced"):
        raise PipelineError(f"--class-weight {class_weight!r}: expected 'balanced' or 'none'")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise PipelineError(f"--seed {seed!r}: expected a whole number")
    report = Reporter(quiet=quiet)
    t_start = time.perf_counter()

    loaded = load_head(src.run_dir)
    if loaded.kind not in FOLDABLE:
        raise PipelineError(
            f"run {src.run_id} has a {loaded.kind!r} head, which cannot be turned into Keras "
            f"layers exactly, so it cannot be fine-tuned; fine-tune a run of one of: "
            f"{', '.join(FOLDABLE)} (e.g. `pipeline fit-head CACHE --head logreg`)")
    if class_weight is None:
        class_weight = loaded.params.get("class_weight", "none")

    from pipeline.finetune.data import check_dataset, image_paths, load_run_cache, load_splits
    from pipeline.finetune.model import find_base, rebuild_classifier, training_model
    from pipeline.finetune.unfreeze import unfreeze

    cache_info = src.config.get("cache", {})
    fs = load_run_cache(cache_info)
    rebuilt = rebuild_classifier(cache_info, loaded)
    classifier = rebuilt.classifier
    unfrozen = unfreeze(find_base(classifier), unfreeze_spec)
    settings_ = {
        "source_run": src.run_id, "source_head_sha256": src.config["head"].get("sha256"),
        "cache_key": fs.meta.get("key"), "unfreeze_from": str(unfreeze_spec),
        "learning_rate": float(learning_rate), "optimizer": optimizer,
        "augment": aug.as_dict(), "batch_size": batch_size, "patience": patience,
        "class_weight": class_weight, "seed": seed,
    }
    digest = hashlib.sha256(json.dumps(settings_, sort_keys=True).encode()).hexdigest()
    report.line(f"fine-tuning {src.run_id}: {rebuilt.base_name} + {loaded.kind} head "
                f"({rebuilt.folded.how}); {unfrozen.describe()}; augmentation {aug.describe()}")

    check_dataset(fs, image_paths(fs))
    reports = settings.reports_dir(reports_dir)
    with _run_folder(reports, digest, resume, cache_info, loaded.kind) as (run_dir, state):
        state.setdefault("digest", digest)
        state.setdefault("settings", settings_)
        state.setdefault("sessions", [])
        report.line(f"reading {len(fs)} images at {rebuilt.input_size} px "
                    f"(train/validation/test as in the cache)")
        splits = load_splits(fs, rebuilt.input_size, batch_size=32, verify=False)

        # The end-to-end model before any training must compute what the head computed.
        initial_proba = _predict(classifier, splits["validation"].x)
        head_proba = loaded.predict_proba(fs.features[fs.mask("validation")])
        initial_diff = float(np.max(np.abs(initial_proba - head_proba))) if len(head_proba) \
            else 0.0
        if initial_diff > 1e-3:
            report.warn(f"the rebuilt model differs from the head on validation by up to "
                        f"{initial_diff:.2g} before training (expected ~1e-6)")
        from pipeline.heads.metrics import classification_metrics

        initial = classification_metrics(splits["validation"].y, initial_proba)

        if not (run_dir / BEST_FILE).is_file():
            # The starting point competes too: if no epoch beats it on validation loss, the
            # head's own weights are kept ("kept epoch 0").
            _save_best(classifier, run_dir, {"epoch": 0, "val_loss": initial["log_loss"]})
        model = training_model(classifier, aug, seed=seed)
        _compile(model, optimizer, learning_rate)
        history, best, resumed_from = _train(
            model, classifier, splits, run_dir, state, epochs=epochs, batch_size=batch_size,
            patience=patience, class_weight=class_weight, n_classes=len(rebuilt.class_names),
            seed=seed, quiet=quiet, report=report)

        # Evaluate with the kept weights: validation, then the test split, once.
        if (run_dir / BEST_WEIGHTS).is_file():
            classifier.load_weights(run_dir / BEST_WEIGHTS)
        val_proba = _predict(classifier, splits["validation"].x)
        t0 = time.perf_counter()
        test_proba = _predict(classifier, splits["test"].x)
        predict_seconds = time.perf_counter() - t0
        fit_seconds = float(sum(history.get("seconds", [])))
        validation = dict(classification_metrics(splits["validation"].y, val_proba),
                          fit_seconds=fit_seconds)
        test = dict(classification_metrics(splits["test"].y, test_proba),
                    predict_seconds=predict_seconds)

        from pipeline.data.samples import file_sha256

        classifier.save(run_dir / MODEL_FILE)
        epochs_run = len(history.get("loss", []))
        best_epoch = best.get("epoch")
        _write_records(run_dir, src, loaded, rebuilt, unfrozen, aug, settings_, state,
                       file_sha256(run_dir / MODEL_FILE), validation, test, initial,
                       initial_diff, history, best_epoch, epochs, epochs_run)
        state["status"] = "done"
        _write_state(run_dir, state)
        shutil.rmtree(run_dir / BACKUP_DIR, ignore_errors=True)
        (run_dir / BEST_WEIGHTS).unlink(missing_ok=True)
        from pipeline.runs.leaderboard import write_leaderboard

        write_leaderboard(reports)
    seconds = time.perf_counter() - t_start
    report.line(f"{run_dir.name}: validation accuracy {validation['accuracy']:.4f} "
                f"(before fine-tuning {initial['accuracy']:.4f}), test accuracy "
                f"{test['accuracy']:.4f}, balanced {test['balanced_accuracy']:.4f}; "
                f"{epochs_run} epochs, kept epoch {best_epoch}"
                f"{' (no epoch beat the head on validation loss)' if best_epoch == 0 else ''}; "
                f"{seconds:.0f} s -> {run_dir}")
    return FinetuneResult(
        run_id=run_dir.name, run_dir=run_dir, source_run=src.run_id, validation=validation,
        test=test, initial_validation=initial, initial_max_abs_diff=initial_diff,
        history=history, best_epoch=best_epoch, epochs_run=epochs_run,
        resumed_from_epoch=resumed_from, seconds=seconds)


def _predict(model: Any, x: np.ndarray) -> np.ndarray:
    if len(x) == 0:
        return np.zeros((0, int(model.outputs[0].shape[-1])))
    return np.asarray(model.predict(x, batch_size=32, verbose=0), dtype=np.float64)


def _compile(model: Any, optimizer: str, learning_rate: float) -> None:
    """(Re)compile: needed after every change of ``trainable``."""
    opt = {"adam": keras.optimizers.Adam, "rmsprop": keras.optimizers.RMSprop,
           "sgd": keras.optimizers.SGD}[optimizer](learning_rate=learning_rate)
    # The model ends in a softmax: the loss takes probabilities.
    model.compile(optimizer=opt, loss=keras.losses.SparseCategoricalCrossentropy(),
                  metrics=["accuracy"], jit_compile=False)


# --- the run folder, its state and resuming ------------------------------------------------

def _write_state(run_dir: Path, state: dict[str, Any]) -> None:
    from pipeline.runs.store import write_json

    write_json(run_dir / STATE_FILE, state)


def _read_json(path: Path, default: Any) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return default


@contextlib.contextmanager
def _locked(run_dir: Path) -> Iterator[bool]:
    """A non-blocking exclusive lock on a run folder (dies with the process)."""
    fd = os.open(run_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


@contextlib.contextmanager
def _run_folder(reports: Path, digest: str, resume: bool, cache_info: dict[str, Any],
                kind: str) -> Iterator[tuple[Path, dict[str, Any]]]:
    """An unfinished run folder of the same settings (to resume), else a new one; locked."""
    from pipeline.runs.store import new_run_dir

    if resume and reports.is_dir():
        for path in sorted(reports.glob(f"*/{STATE_FILE}"), reverse=True):
            state = _read_json(path, {})
            if state.get("digest") != digest or state.get("status") == "done":
                continue
            with _locked(path.parent) as ok:
                if ok:
                    yield path.parent, state
                    return
    run_dir = new_run_dir(reports, str(cache_info.get("dataset") or "data"),
                          str(cache_info.get("base") or "base"), f"{kind}-finetune")
    with _locked(run_dir) as ok:
        assert ok
        state: dict[str, Any] = {"digest": digest, "status": "training"}
        _write_state(run_dir, state)
        yield run_dir, state


def _train(model: Any, classifier: Any, splits: dict[str, Any], run_dir: Path,
           state: dict[str, Any], *,
           epochs: int, batch_size: int, patience: int, class_weight: str | None,
           n_classes: int, seed: int, quiet: bool, report: Reporter
           ) -> tuple[dict[str, list[float]], dict[str, Any], int]:
    """``model.fit`` with the resumable callbacks; returns (history, best, resumed-from epoch)."""
    backup = run_dir / BACKUP_DIR
    meta = _read_json(backup / "training_metadata.json", {})
    done = int(meta.get("epoch", 0)) if (backup / "latest.weights.h5").exists() else 0
    history: dict[str, list[float]] = _read_json(run_dir / HISTORY_FILE, {})
    # Epochs logged after the last backup are redone: drop them from the history.
    history = {k: list(v)[:done] for k, v in history.items()}
    best = _read_json(run_dir / BEST_FILE, {})
    if state.get("status") == "trained":
        report.line(f"{run_dir.name}: training already finished; evaluating")
        return history, best, done
    if done:
        report.line(f"resuming {run_dir.name} after epoch {done}")
    state["sessions"].append({"start_epoch": done, "started": time.strftime("%Y-%m-%dT%H:%M:%S")})
    state["status"] = "training"
    _write_state(run_dir, state)
    # A model is built before fit, so BackupAndRestore can restore weights into it.
    weights = None
    if class_weight == "balanced":
        y = splits["train"].y
        counts = np.bincount(y, minlength=n_classes)
        weights = {c: float(len(y) / (np.count_nonzero(counts) * n))
                   for c, n in enumerate(counts) if n > 0}
    callbacks = [
        _EpochLog(run_dir / HISTORY_FILE, history),
        _KeepBest(classifier, run_dir, best, patience),
        keras.callbacks.BackupAndRestore(str(backup), double_checkpoint=True,
                                         delete_checkpoint=False),
    ]
    keras.utils.set_random_seed(seed + done)
    if done < epochs:
        model.fit(splits["train"].x, splits["train"].y,
                  validation_data=(splits["validation"].x, splits["validation"].y),
                  epochs=epochs, batch_size=batch_size, shuffle=True, callbacks=callbacks,
                  class_weight=weights, verbose=0 if quiet else 2)
    state["status"] = "trained"
    _write_state(run_dir, state)
    return callbacks[0].history, callbacks[1].best, done


class _EpochLog(keras.callbacks.Callback):
    """Appends each finished epoch's logs (and its wall time) to a JSON file."""

    def __init__(self, path: Path, history: dict[str, list[float]]):
        super().__init__()
        self.path = path
        self.history = history
        self._t0 = time.perf_counter()

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._t0 = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        from pipeline.runs.store import write_json

        for k in list(self.history):  # an epoch redone after a restart replaces its entry
            self.history[k] = self.history[k][:epoch]
        for k, v in {**(logs or {}), "seconds": time.perf_counter() - self._t0}.items():
            self.history.setdefault(k, []).append(float(v))
        write_json(self.path, self.history)


class _KeepBest(keras.callbacks.Callback):
    """Best-epoch checkpoint and early stopping on ``val_loss``, with state that survives a
    restart (``best.json`` + ``best.weights.h5``), unlike Keras' own callbacks whose counters
    start again at every ``fit``."""

    def __init__(self, classifier: Any, run_dir: Path, best: dict[str, Any], patience: int):
        super().__init__()
        self.classifier = classifier
        self.run_dir = run_dir
        self.best = dict(best)
        self.patience = patience

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        value = float((logs or {}).get("val_loss", math.nan))
        number = epoch + 1
        if math.isfinite(value) and value < self.best.get("val_loss", math.inf):
            self.best = {"epoch": number, "val_loss": value}
            _save_best(self.classifier, self.run_dir, self.best)
        if self.patience and number - int(self.best.get("epoch", 0)) >= self.patience:
            self.model.stop_training = True


def _save_best(classifier: Any, run_dir: Path, best: dict[str, Any]) -> None:
    """The classifier's weights (no optimizer state) and which epoch they are, replaced
    atomically one after the other."""
    from pipeline.runs.store import write_json

    tmp = run_dir / "best.tmp.weights.h5"
    classifier.save_weights(tmp)
    os.replace(tmp, run_dir / BEST_WEIGHTS)
    write_json(run_dir / BEST_FILE, best)


def _write_records(run_dir: Path, src: Any, loaded: Any, rebuilt: Any, unfrozen: Any,
                   aug: Augmentation, settings_: dict[str, Any], state: dict[str, Any],
                   model_sha: str, validation: dict[str, Any], test: dict[str, Any],
                   initial: dict[str, Any], initial_diff: float,
                   history: dict[str, list[float]], best_epoch: int | None, epochs: int,
                   epochs_run: int) -> None:
    """config.json and metrics.json in the heads stage's layout (so the run joins the
    leaderboard), plus the confusion matrices and the joined learning curve."""
    import pipeline
    from pipeline.finetune.report import plot_joined_curve
    from pipeline.heads.params import format_value
    from pipeline.runs.plots import plot_confusion
    from pipeline.runs.store import write_json

    from_label = loaded.kind + "".join(f" {k}={format_value(v)}"
                                       for k, v in loaded.params.items()
                                       if k in ("C", "learning_rate", "units"))
    params = {"from": from_label, "unfreeze_from": settings_["unfreeze_from"],
              "learning_rate": settings_["learning_rate"], "optimizer": settings_["optimizer"],
              "augment": aug.describe(), "epochs": epochs_run}
    config = {
        "run_id": run_dir.name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "stage": FINETUNE_STAGE,
        "cache": dict(src.config.get("cache", {})),
        "head": {"kind": f"{loaded.kind}+finetune", "family": "keras", "params": params,
                 "n_classes": len(rebuilt.class_names), "seed": settings_["seed"],
                 "file": MODEL_FILE, "sha256": model_sha},
        "selection": {"metric": "val_loss (early stopping)", "on": "validation",
                      "refit": False, "best_overall": False},
        "finetune": {
            **settings_, "source_run_dir": str(src.run_dir),
            "source_head": {"kind": loaded.kind, "params": loaded.params},
            "fold": rebuilt.folded.how, "input_size": rebuilt.input_size,
            "unfreeze": {"start": unfrozen.start, "first_layer": unfrozen.first_layer,
                         "n_layers": unfrozen.n_layers,
                         "n_trainable_layers": unfrozen.n_trainable_layers,
                         "n_trainable_params": unfrozen.n_trainable_params},
            "batchnorm": "inference mode (frozen)", "epochs_budget": epochs,
            "sessions": state.get("sessions", []), "digest": state.get("digest"),
        },
        "versions": {"pipeline": pipeline.__version__, "keras": keras.__version__},
    }
    head_history = src.metrics.get("history") if isinstance(src.metrics, dict) else None
    metrics = {
        "validation": validation, "test": test,
        "initial_validation": initial, "initial_max_abs_diff": initial_diff,
        "history": history, "best_epoch": best_epoch, "epochs_run": epochs_run,
        "resumed_from_epoch": max((s.get("start_epoch", 0) for s in state.get("sessions", [])),
                                  default=0),
        "head_history": head_history,
    }
    write_json(run_dir / "config.json", config)
    write_json(run_dir / "metrics.json", metrics)
    title = (f"{config['cache'].get('dataset')} / {config['cache'].get('base')} / "
             f"{loaded.kind} fine-tuned ({src.run_id})")
    plot_confusion(run_dir / "confusion_matrix.png",
                   {"validation": validation["confusion_matrix"],
                    "test": test["confusion_matrix"]}, rebuilt.class_names, title)
    plot_joined_curve(run_dir / "learning_curve.png", head_history, history, initial,
                      best_epoch, title)

