"""Stage 3: fine-tune base + head end to end, starting from a fitted head run.

:func:`finetune` runs four steps, each a function of its own:

1. :func:`~pipeline.finetune.prepare.prepare`: resolve the head run and load its head
   (hash-verified); open its feature cache and hash every image again (one clear error if any
   changed); rebuild base + head as one Keras model (a linear head is folded into a Dense
   layer) and compare it with the head's ``predict_proba`` on validation before any training
   (``initial_max_abs_diff``); unfreeze the requested top of the base (BatchNorm stays in
   inference mode).
2. :func:`train`: seeded batches with exact augmentation (flips, quarter turns) drawn per
   image (:mod:`~pipeline.finetune.feed`), from cached activations of the frozen bottom
   when possible (:mod:`~pipeline.finetune.activations`, :mod:`~pipeline.finetune.setup`);
   warm-up + cosine schedule, AdamW, label smoothing; early stopping on the heads'
   validation metric (``metric``) keeping the best epoch's weights (the starting point
   counts as epoch 0: if no epoch beats it, the head's weights stay). Each
   finished epoch is backed up in the run folder (``keras.callbacks.BackupAndRestore``), so
   running the same command again after a crash or kill resumes from the last finished epoch
   (``epochs`` is a budget and not part of a run's identity: the same settings with a larger
   budget continue an unfinished run; ``resume=False`` always starts a new folder).
3. :func:`~pipeline.finetune.evaluate.evaluate`: validation and the test split once, with
   the kept weights.
4. :func:`~pipeline.finetune.record.record`: the run folder (``model.keras``, config, metrics
   with the heads stage's metric names, confusion matrices, the joined learning curve) and
   the leaderboard.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras

from pipeline.context import Context
from pipeline.fileio import utc_timestamp
from pipeline.finetune.callbacks import EpochLog, KeepBest, Validate
from pipeline.finetune.evaluate import evaluate
from pipeline.finetune.options import DEFAULT_LEARNING_RATE, OPTIMIZERS, FinetuneOptions
from pipeline.finetune.prepare import Prepared, prepare
from pipeline.finetune.record import record
from pipeline.finetune.run_folder import MODEL_FILE, RunFolder, open_run_folder
from pipeline.finetune.setup import Setup, compile_model, setup
from pipeline.finetune.source import RunRef, resolve_run

__all__ = ["DEFAULT_LEARNING_RATE", "OPTIMIZERS", "FinetuneResult", "Trained",
           "find_learning_rate", "finetune", "train"]


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
    metric: str = "balanced_accuracy"  # the validation metric that chose the kept epoch

    @property
    def model_path(self) -> Path:
        return self.run_dir / MODEL_FILE


@dataclass
class Trained:
    """The learning curve so far, the kept epoch, and where this session started."""

    history: dict[str, list[float]]
    best: dict[str, Any]  # {"epoch", "metric", "value", "val_loss"}; epoch 0 = the head
    resumed_from_epoch: int = 0

    @property
    def best_epoch(self) -> int | None:
        return self.best.get("epoch")

    @property
    def epochs_run(self) -> int:
        return len(self.history.get("loss", []))

    @property
    def fit_seconds(self) -> float:
        return float(sum(self.history.get("seconds", [])))


def finetune(run: str | os.PathLike = "best", options: FinetuneOptions | None = None, *,
             ctx: Context | None = None, resume: bool = True, **kwargs: Any
             ) -> FinetuneResult:
    """Fine-tune the base and head of a head run end to end; returns the new run.

    ``run``: a head run id (or unique prefix), a row number of ``pipeline runs`` (``"#3"``),
    ``"best"`` (the best head run on the leaderboard that can be fine-tuned) or a run folder.
    Options (:class:`~pipeline.finetune.options.FinetuneOptions`) are given as an object (taken
    whole) and/or as keyword arguments (``epochs=5``, ``lr=1e-4``, ...; these win); every option
    not given comes from the ``[finetune]`` table of the experiment the head run was made by
    (``pipeline run``), else from its default. ``reports_dir=``, ``cache_dir=`` and ``quiet=``
    keywords build the ``ctx`` when none is given. The head run's cache is found at its recorded
    path, else under ``ctx.cache_dir`` (by file name, then key), so a moved reports folder and
    cache still fine-tune.

    ``resume``: continue an unfinished run with the same settings (its folder holds the last
    finished epoch) instead of starting anew. Example::

        from pipeline.finetune import finetune
        r = finetune("best", epochs=5, unfreeze_from=0.3, reports_dir="reports")
        r.test["accuracy"], r.run_dir
    """
    reports_dir, quiet = kwargs.pop("reports_dir", None), bool(kwargs.pop("quiet", False))
    cache_dir = kwargs.pop("cache_dir", None)
    ctx = ctx or Context.create(reports_dir=reports_dir, cache_dir=cache_dir, quiet=quiet)
    t_start = time.perf_counter()
    (options or FinetuneOptions()).with_given(kwargs)  # given values: checked before any work
    src = resolve_run(run, ctx.reports_dir, head_runs_only=True, report=ctx.report)
    _locate_cache(src, ctx)
    prepared = prepare(src, _options(src, options, kwargs), ctx)
    with open_run_folder(ctx.reports_dir, prepared.digest, prepared.settings, resume=resume,
                         name_parts=_name_parts(prepared)) as folder:
        trained = train(prepared, folder, ctx)
        evaluated = evaluate(prepared, trained, folder)
        record(prepared, trained, evaluated, folder, ctx)
    result = FinetuneResult(
        run_id=folder.run_id, run_dir=folder.path, source_run=src.run_id,
        validation=evaluated.validation, test=evaluated.test,
        initial_validation=prepared.initial,
        initial_max_abs_diff=prepared.initial_max_abs_diff, history=trained.history,
        best_epoch=trained.best_epoch, epochs_run=trained.epochs_run,
        resumed_from_epoch=trained.resumed_from_epoch,
        seconds=time.perf_counter() - t_start, metric=prepared.options.metric)
    _summary(result, ctx)
    return result


def find_learning_rate(run: str | os.PathLike = "best",
                       options: FinetuneOptions | None = None, *, ctx: Context | None = None,
                       **kwargs: Any) -> Any:
    """The LR finder alone (``pipeline finetune RUN --find-lr``): the range test with the
    options a fine-tuning run of ``run`` would use; ``lr_find.png`` and ``lr_find.json`` go
    into the head run's folder. Returns a :class:`~pipeline.finetune.lr_find.LrFind`."""
    from pipeline.finetune.lr_find import find_lr

    ctx = ctx or Context.create(reports_dir=kwargs.pop("reports_dir", None),
                                cache_dir=kwargs.pop("cache_dir", None),
                                quiet=bool(kwargs.pop("quiet", False)))
    (options or FinetuneOptions()).with_given(kwargs)
    src = resolve_run(run, ctx.reports_dir, head_runs_only=True, report=ctx.report)
    _locate_cache(src, ctx)
    prepared = prepare(src, _options(src, options, kwargs), ctx)
    return find_lr(prepared, setup(prepared, ctx), src.run_dir, ctx)


def _locate_cache(src: RunRef, ctx: Context) -> None:
    """Point the run's cache record at where the cache is now (its recorded path, else found
    under ``ctx.cache_dir`` by file name or key; refused if it holds other rows)."""
    cache = src.record.cache
    path = cache.locate(ctx.cache_dir)
    if cache.path is None or path != Path(cache.path):
        ctx.report.line(f"cache of {src.run_id}: {path} (recorded at {cache.path})")
        cache.path = str(path.resolve())


def _options(src: RunRef, options: FinetuneOptions | None, given: dict[str, Any]
             ) -> FinetuneOptions:
    """Given > the head run's experiment [finetune] table > default (an options object is
    taken whole, without the table)."""
    if options is None:
        table = (src.record.experiment or {}).get("finetune")
        options = FinetuneOptions.from_mapping(table, f"run {src.run_id}: experiment [finetune]")
    return options.with_given(given)


def _name_parts(prepared: Prepared) -> tuple[str, ...]:
    cache = prepared.cache_info
    return (str(cache.dataset or "data"), str(cache.base or "base"),
            f"{prepared.loaded.kind}-finetune")


def _summary(result: FinetuneResult, ctx: Context) -> None:
    best = result.best_epoch
    ctx.report.line(
        f"{result.run_id}: validation accuracy {result.validation['accuracy']:.4f} (before "
        f"fine-tuning {result.initial_validation['accuracy']:.4f}), test accuracy "
        f"{result.test['accuracy']:.4f}, balanced {result.test['balanced_accuracy']:.4f}; "
        f"{result.epochs_run} epochs, kept epoch {best}"
        f"{' (no epoch beat the head on validation ' + result.metric + ')' if best == 0 else ''}; "
        f"{result.seconds:.0f} s -> {result.run_dir}")


def train(prepared: Prepared, folder: RunFolder, ctx: Context) -> Trained:
    """Train (or resume training) in ``folder`` until the epoch budget or early stopping."""
    opts = prepared.options
    keep = KeepBest(folder.path, patience=opts.patience, target=prepared.classifier,
                    metric=opts.metric)
    if not keep.best:
        # The starting point competes too: if no epoch beats it on the validation metric,
        # the head's own weights are kept ("kept epoch 0").
        value = prepared.initial.get(keep.metric)
        keep.checkpoint(0, math.nan if value is None else float(value),
                        float(prepared.initial["log_loss"]))
    done = folder.epochs_done()
    log = EpochLog(folder.history_path, epochs_done=done)
    if folder.state.get("status") == "trained":
        ctx.report.line(f"{folder.run_id}: training already finished; evaluating")
        return Trained(log.history, keep.best, done)
    run = setup(prepared, ctx)
    rate = _learning_rate(prepared, run, folder, ctx)
    compile_model(run.model, opts, rate, run.feed.steps)
    if done:
        ctx.report.line(f"resuming {folder.run_id} after epoch {done}")
    folder.state["sessions"].append({"start_epoch": done, "started": utc_timestamp(),
                                     "cached_activations": run.cached})
    folder.state["status"] = "training"
    folder.write_state()
    if done < opts.epochs:
        callbacks = [Validate(run.predict_validation, prepared.splits["validation"].y), log,
                     keep]
        _fit(run, opts, folder, callbacks, done, quiet=ctx.quiet)
    folder.state["status"] = "trained"
    folder.write_state()
    return Trained(log.history, keep.best, done)


def _learning_rate(prepared: Prepared, run: Setup, folder: RunFolder, ctx: Context) -> float:
    """The options' rate, or for ``auto`` the LR finder's suggestion (found once per run
    folder and kept in its state, so a resumed run trains on the same rate)."""
    rate = prepared.options.learning_rate
    if rate != "auto":
        return float(rate)
    found = folder.state.get("learning_rate_found")
    if found is None:
        from pipeline.finetune.lr_find import find_lr

        found = find_lr(prepared, run, folder.path, ctx).suggestion
        folder.state["learning_rate_found"] = found
        folder.write_state()
    prepared.settings["learning_rate_found"] = found
    ctx.report.line(f"learning rate: {found:.3g} (LR finder)")
    return float(found)


def _fit(run: Setup, opts: FinetuneOptions, folder: RunFolder, callbacks: list[Any],
         done: int, *, quiet: bool) -> None:
    """``model.fit`` on the feed's epochs from ``done``, with the resumable callbacks and the
    epoch backup."""
    backup = keras.callbacks.BackupAndRestore(str(folder.backup_dir), double_checkpoint=True,
                                              delete_checkpoint=False)
    keras.utils.set_random_seed(opts.seed + done)
    run.model.fit(run.feed.forever(done), steps_per_epoch=run.feed.steps, epochs=opts.epochs,
                  shuffle=False, callbacks=[*callbacks, backup], verbose=0 if quiet else 2)
