"""Fit a sweep of head configurations on cached features and keep the best.

Protocol (what :func:`run_sweep` guarantees):

1. Each cache is loaded once; its train/validation/test rows are separated once.
2. Every configuration is fitted on **train** and scored on **validation** only.
   Configurations run in parallel threads of this process (no worker processes to start;
   the fits release the GIL), the dense heads too (they train in NumPy). Workers x threads
   never exceed the cores (:mod:`pipeline.heads.threads`). A logistic-regression grid over
   ``C`` is fitted as one warm-started path. Unless the metric is log-loss, the SVM grids are
   ranked by their uncalibrated decision values and only the chosen configuration is fitted
   with its probability calibration (its validation metrics are the calibrated head's).
3. Per cache and head kind, the configuration with the best validation ``metric`` is chosen
   (ties: lower validation log-loss, then the earlier configuration). Among those, the best per
   dataset is flagged ``best_overall``.
4. Only the chosen configurations ever see the **test** split, each exactly once – after an
   optional refit on train+validation (``refit=True``; Keras heads then train for the epoch
   count early stopping chose).
5. The result (:class:`SweepResult`) is returned; nothing is written here. The runs layer
   (:func:`pipeline.runs.fit_heads`) turns each chosen configuration into a run folder and
   refreshes the leaderboard.
6. Under cross-validation (``FitOptions.cv``; by default when validation holds fewer than 50
   rows of a class) steps 2-4 become: every configuration is scored by stratified K-fold CV on
   train+validation (the folds run through the same fitting path), the best mean wins, and the
   chosen configuration is refitted on train+validation before its one test
   (:mod:`pipeline.heads.cv`).
"""

from __future__ import annotations

import math
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.cache.catalog import resolve_cache
from pipeline.cache.store import SPLITS, FeatureSet, load_feature_set
from pipeline.context import Context
from pipeline.errors import PipelineError
from pipeline.fileio import text_sha256
from pipeline.heads.grid import HeadConfig, HeadGrid, expand_grids, make_grid
from pipeline.heads.metrics import (
    classification_metrics,
    resampled_metrics,
)
from pipeline.heads.options import FitOptions
from pipeline.heads.out_of_core import plan_memory, sweep_over_budget
from pipeline.heads.registry import get_head_spec
from pipeline.heads.results import (
    Candidate,
    ChosenRun,
    Split,
    SplitPredictions,
    SweepResult,
    best_of_kind,
    choose_per_kind,
)
from pipeline.heads.spec import Head
from pipeline.heads.threads import limited_threads, plan
from pipeline.progress import Reporter

#: The sweep run when no head is given: 11 configurations, a few seconds on ~1800x1280
#: training rows and 2 cores. The random forest is 100 trees trying log2(d) features per
#: split (about 8x cheaper than 200 trees on sqrt(d) on 1,280-wide rows; on the ELPV default
#: its test balanced accuracy was 0.77 against 0.79, mean of 3 seeds; it was not the chosen
#: head there, the SVMs and logistic regression lead).
DEFAULT_SWEEP: tuple[tuple[str, dict[str, Any]], ...] = (
    ("logreg", {"C": [0.01, 0.1, 1.0]}),
    ("linear_svm", {"C": [0.001, 0.01]}),
    ("rbf_svm", {"C": [1.0, 10.0]}),
    ("knn", {"n_neighbors": [5, 15]}),
    ("random_forest", {"n_estimators": [100], "max_features": ["log2"]}),
    ("dense", {}),
)


def default_sweep() -> list[HeadGrid]:
    return [make_grid(kind, values) for kind, values in DEFAULT_SWEEP]


HeadsArg = Sequence[HeadGrid | HeadConfig | str | Mapping[str, Any]] | None


def as_grids(heads: HeadsArg) -> list[HeadGrid]:
    """Normalise the ``heads`` argument: ``None`` is the default sweep; items may be
    :class:`HeadGrid`, :class:`HeadConfig`, a kind name, or ``{"kind": ..., param: values}``."""
    if heads is None:
        return default_sweep()
    if isinstance(heads, str | HeadGrid | HeadConfig | Mapping):
        heads = [heads]  # type: ignore[list-item]
    grids = []
    for h in heads:
        if isinstance(h, HeadGrid):
            grids.append(make_grid(h.kind, {k: list(v) for k, v in h.values.items()}))
        elif isinstance(h, HeadConfig):
            spec = get_head_spec(h.kind)
            grids.append(HeadGrid(h.kind, {k: (v,) for k, v in spec.resolve(h.params).items()}))
        elif isinstance(h, str):
            grids.append(make_grid(h))
        elif isinstance(h, Mapping):
            values = dict(h)
            kind = values.pop("kind", None)
            if not isinstance(kind, str):
                raise PipelineError(f"head entry {dict(h)!r} has no 'kind'")
            values = dict(values.pop("params", {}) or {}, **values)
            grids.append(make_grid(kind, values))
        else:
            raise PipelineError(f"cannot read head entry {h!r}; expected a kind name or grid")
    if not grids:
        raise PipelineError("no heads to fit")
    return grids


def resolve_caches(caches: str | os.PathLike | Iterable[str | os.PathLike],
                   cache_dir: str | os.PathLike | None = None) -> list[Path]:
    """Cache files from paths; a folder stands for every ``*.h5`` file in it; a name that is
    no path is looked up in ``cache_dir`` (default ``$PIPELINE_CACHE_DIR`` or ``./cache``) by
    file name or unique prefix, as ``pipeline cache info`` does."""
    if isinstance(caches, str | os.PathLike):
        caches = [caches]
    out: list[Path] = []
    for c in caches:
        p = Path(c)
        if p.is_dir():
            found = sorted(p.glob("*.h5"))
            if not found:
                raise PipelineError(f"{p}: folder holds no feature caches (*.h5)")
            out.extend(found)
        else:
            out.append(p if p.exists() else resolve_cache(p, cache_dir))
    if not out:
        raise PipelineError("no feature caches given")
    return list(dict.fromkeys(out))


def prepare(fs: FeatureSet) -> Split:
    """Split a loaded cache; empty splits or a single training class are errors."""
    path = fs.path or Path("<memory>")
    if len(fs.class_names) < 2:
        raise PipelineError(f"{path}: needs at least 2 classes, has {len(fs.class_names)}")
    x, y, digests, row_ids = {}, {}, {}, {}
    for s in SPLITS:
        if not np.any(fs.mask(s)):  # checked first: xy() cannot reshape an empty split
            raise PipelineError(f"{path}: the {s!r} split has no samples; re-extract with a "
                                f"non-zero {s} fraction (--split)")
        xs, ys = fs.xy(s)
        x[s], y[s] = np.ascontiguousarray(xs, dtype=np.float32), ys.astype(int)
        row_ids[s] = np.asarray([str(i) for i in fs.ids[fs.mask(s)]], dtype=object)
        digests[s] = text_sha256("\n".join(sorted(row_ids[s])))
    if len(np.unique(y["train"])) < 2:
        raise PipelineError(f"{path}: the training split holds only one class")
    return Split(path=path, info=fs.info, x=x, y=y, ids_digest=digests, ids=row_ids)


def split_metrics(y_true: np.ndarray, proba: np.ndarray) -> dict[str, Any]:
    """:func:`classification_metrics`, computed in NumPy: the metrics of the one resample
    that takes every row once (:func:`resampled_metrics`, the same definitions) plus the
    confusion matrix. A sweep scores every configuration; scikit-learn's metric functions
    validate their inputs on each call (about 10 ms of Python holding the GIL per split,
    against well under 1 ms here)."""
    y = np.asarray(y_true, dtype=np.int64)
    proba = np.asarray(proba, dtype=np.float64)
    n, k = proba.shape
    if n == 0:
        return classification_metrics(y, proba)
    one = {m: float(v[0]) for m, v in resampled_metrics(y, proba, np.arange(n)[None]).items()}
    pred = np.argmax(proba, axis=1)
    return {"n_samples": n, "accuracy": one["accuracy"],
            "balanced_accuracy": one["balanced_accuracy"], "f1_macro": one["f1_macro"],
            # Undefined (None) when a class is missing from the rows, as there.
            "roc_auc": one["roc_auc"] if math.isfinite(one["roc_auc"]) else None,
            "log_loss": one["log_loss"],
            "confusion_matrix": np.bincount(y * k + pred, minlength=k * k).reshape(k, k).tolist()}


def _fit_group(kind: str, params: list[dict[str, Any]], n_classes: int, seed: int,
               calibrate: bool, x_tr: np.ndarray, y_tr: np.ndarray, x_va: np.ndarray,
               y_va: np.ndarray) -> list[dict[str, Any]]:
    """Fit configurations of one kind on train (several: one warm-started path,
    :meth:`Head.fit_path`) and score each on validation; one outcome dict per configuration.

    ``calibrate=False`` (kinds whose probabilities need a calibration, see
    :attr:`HeadSpec.calibrated`): fitted for ranking only; the validation metrics then come
    from the uncalibrated scores (labels, ranks) and carry ``calibrated: False`` and no
    log-loss.
    """
    spec = get_head_spec(kind)
    try:
        heads = [spec.make(p, n_classes=n_classes, seed=seed, calibrate=calibrate)
                 for p in params]
        seconds = spec.cls.fit_path(heads, x_tr, y_tr, x_va, y_va)
    except Exception as e:  # one failing configuration must not sink the sweep
        if len(params) > 1:  # a failing path: each configuration on its own
            return [out for p in params for out in _fit_group(
                kind, [p], n_classes, seed, calibrate, x_tr, y_tr, x_va, y_va)]
        return [{"error": f"{type(e).__name__}: {e}".splitlines()[0]}]
    outs = []
    for head, fit_s in zip(heads, seconds, strict=True):
        t0 = time.perf_counter()
        try:
            scores = head.ranking_scores(x_va)
        except Exception as e:
            outs.append({"error": f"{type(e).__name__}: {e}".splitlines()[0]})
            continue
        predict_s = time.perf_counter() - t0
        validation = split_metrics(y_va, scores)
        if not head.calibrate:
            validation.update(log_loss=None, calibrated=False)
        outs.append({"head": head, "validation": validation, "proba": scores,
                     "fit_seconds": fit_s, "predict_seconds": predict_s})
    return outs


def _groups(candidates: list[Candidate], workers: int, calibrate: bool) -> list[list[int]]:
    """Candidate indices fitted together: a kind with a :attr:`HeadSpec.path_param` fits the
    configurations of a cache that differ only in it as one path (ascending; a calibrated
    kind only while ranking, ``calibrate=False``), dealt into
    up to ``workers`` interleaved paths of at least 2 so the workers share it evenly (the
    solver's work grows with the parameter); every other configuration alone. The costliest
    kinds come first, calibrated ones first among them (their chosen configuration is
    fitted again), else sweep order."""
    paths: dict[tuple, list[int]] = {}
    singles: list[list[int]] = []
    for i, c in enumerate(candidates):
        spec = get_head_spec(c.config.kind)
        key = None if spec.calibrated and calibrate else spec.path_param
        if key is None:
            singles.append([i])
            continue
        rest = repr(sorted((k, v) for k, v in c.config.params.items() if k != key))
        paths.setdefault((c.cache_index, c.config.kind, rest), []).append(i)
    groups = list(singles)
    for (_, kind, _), members in paths.items():
        key = get_head_spec(kind).path_param
        members.sort(key=lambda i: candidates[i].config.params[key])
        pieces = max(1, min(workers, len(members) // 2))
        groups.extend(members[j::pieces] for j in range(pieces))
    specs = [get_head_spec(candidates[g[0]].config.kind) for g in groups]
    order = sorted(range(len(groups)), key=lambda j: (specs[j].scaling != "superlinear",
                                                     not specs[j].calibrated))
    return [groups[j] for j in order]


def _fit_all(data: list[Split], candidates: list[Candidate], options: FitOptions,
             report: Reporter, *, defer: bool = False) -> None:
    """Fit every candidate on train, score it on validation (filled in place).

    Every configuration (the dense heads too: they train in NumPy, no TensorFlow) runs in
    a pool of threads of this process (no worker processes to start, the arrays shared as
    they are: libsvm, liblinear, the trees and BLAS release the GIL), the costliest kinds
    first; workers x threads never exceed the cores (:mod:`pipeline.heads.threads`).

    ``defer``: kinds whose probabilities need a calibration (:attr:`HeadSpec.calibrated`)
    are fitted for ranking only (:func:`_fit_group`); as soon as a kind's configurations on a
    cache are all scored, its best (:func:`_best`) is fitted again, calibrated, in the same
    pool while the others still run, and its outcome replaces the ranking fit's.
    """
    groups = _groups(candidates, plan(len(candidates), options.jobs)[0], not defer)
    workers, threads = plan(len(groups), options.jobs)
    left: dict[tuple[int, str], int] = {}
    for c in candidates:
        key = (c.cache_index, c.config.kind)
        left[key] = left.get(key, 0) + 1

    def run(task: tuple[list[int], bool]) -> list[dict[str, Any]]:
        g, calibrate = task
        c = candidates[g[0]]
        d = data[c.cache_index]
        return _fit_group(c.config.kind, [candidates[i].config.params for i in g],
                          len(d.class_names), options.seed, calibrate, d.x["train"],
                          d.y["train"], d.x["validation"], d.y["validation"])

    def then(task: tuple[list[int], bool], outs: list[dict[str, Any]]
             ) -> list[tuple[list[int], bool]]:
        g, calibrate = task
        for i, out in zip(g, outs, strict=True):
            candidates[i].record(out)
        c = candidates[g[0]]
        key = (c.cache_index, c.config.kind)
        if not calibrate or not defer:
            bar.advance(len(g))
            left[key] -= len(g)
        pool = [i for i, o in enumerate(candidates) if (o.cache_index, o.config.kind) == key
                and o.validation is not None]
        if not defer or left[key] or not pool:
            return []
        best = best_of_kind([candidates[i] for i in pool], options.metric)
        assert best.validation is not None
        if best.validation.get("calibrated") is not False:
            return []
        return [([next(i for i in pool if candidates[i] is best)], True)]

    report.line(f"fitting {len(candidates)} configurations on {len(data)} cache(s)")
    for i, kind in dict.fromkeys((c.cache_index, c.config.kind) for c in candidates
                                 if get_head_spec(c.config.kind).switches(
                                     len(data[c.cache_index].y["train"]), c.config.params)):
        report.line(get_head_spec(kind).switch_note(len(data[i].y["train"])))
    with report.progress(len(candidates), "configurations") as bar, \
            limited_threads(threads), _quiet_fits():
        _schedule([(g, not defer) for g in groups], workers, run, then)


def _schedule(tasks: list[Any], workers: int, run: Callable[[Any], Any],
              then: Callable[[Any, Any], list[Any]]) -> None:
    """``run`` every task on ``workers`` threads; as each finishes, ``then(task, result)``
    (in this thread) may add tasks, which start before the ones still waiting."""
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

    waiting = deque(tasks)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sweep") as pool:
        running: dict[Any, Any] = {}
        while waiting or running:
            while waiting and len(running) < workers:
                task = waiting.popleft()
                running[pool.submit(run, task)] = task
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                task = running.pop(future)
                waiting.extendleft(reversed(then(task, future.result())))


def _quiet_fits() -> Any:
    """scikit-learn's ConvergenceWarning silenced for the whole pool (opened once, here in
    the calling thread: warning filters are process-wide)."""
    from pipeline.heads.sklearn_heads import quiet_convergence

    return quiet_convergence()


def run_sweep(caches: str | os.PathLike | Iterable[str | os.PathLike], heads: HeadsArg = None,
              options: FitOptions | None = None, *, ctx: Context | None = None) -> SweepResult:
    """Fit every head configuration on every cache, select on validation, test the chosen.

    Nothing is written: :func:`pipeline.runs.fit_heads` runs this and saves the run folders.
    ``caches``: feature-cache files (or folders of them); ``heads``: grids (see
    :func:`as_grids`, ``None`` is :data:`DEFAULT_SWEEP`); ``options``: :class:`FitOptions`.
    """
    options = options or FitOptions()
    report = ctx.report if ctx is not None else Reporter()
    grids = as_grids(heads)
    configs = expand_grids(grids, {"class_weight": "balanced"} if options.balanced else None)
    paths = resolve_caches(caches, ctx.cache_dir if ctx is not None else None)
    over = plan_memory(paths, [c.kind for c in configs], options.max_memory, report)
    if over:  # too large for --max-memory: linear heads out of core, the rest refused
        return sweep_over_budget(paths, over, configs, options, report,
                                 lambda fitting: run_sweep(fitting, heads, options, ctx=ctx))
    data = [prepare(load_feature_set(p)) for p in paths]
    candidates = [Candidate(i, c) for i in range(len(data)) for c in configs]
    folds = _plan_cv(data, options, report)
    if any(folds):
        _fit_cv(data, candidates, folds, options, report)
    else:
        _fit_on_validation(data, candidates, options, report)
    runs = _select_and_test(data, candidates, options)
    for r in runs:
        if r.cv is not None and r.cv["mean"] is not None:
            report.line(f"{r.dataset}/{r.base} {r.config.label}: {r.cv['folds']}-fold cv "
                        f"{r.cv['metric']} {r.cv['mean']:.4f} +/- {r.cv['std']:.4f} (folds: "
                        f"{', '.join('-' if v is None else f'{v:.3f}' for v in r.cv['scores'])})")
    return SweepResult(metric=options.metric, candidates=candidates, runs=runs,
                       reports_dir=None, refit=options.refit or any(folds), splits=data)


def _fit_on_validation(data: list[Split], candidates: list[Candidate], options: FitOptions,
                       report: Reporter) -> None:
    """Fit on train and score on validation. Kinds whose probabilities need a calibration
    (:attr:`HeadSpec.calibrated`, the SVMs) are ranked uncalibrated unless the metric is
    log-loss (labels and decision values rank them), and only the chosen configuration of
    each is fitted calibrated: its validation metrics are those of that calibrated head."""
    _fit_all(data, candidates, options, report, defer=options.metric != "log_loss")


def _choose(data: list[Split], candidates: list[Candidate], metric: str
            ) -> tuple[list[Candidate], set[int]]:
    """Per cache and kind the validation-best candidate; the ids of the best per dataset."""
    chosen: list[Candidate] = []
    for i, d in enumerate(data):
        chosen += choose_per_kind([c for c in candidates if c.cache_index == i], d.path, metric)
    best_ids = set()
    for dataset in dict.fromkeys(data[c.cache_index].dataset for c in chosen):
        pool = [c for c in chosen if data[c.cache_index].dataset == dataset]
        best_ids.add(id(max(pool, key=lambda c: c.score(metric))))
    return chosen, best_ids


def _select_and_test(data: list[Split], candidates: list[Candidate],
                     options: FitOptions) -> list[ChosenRun]:
    """The chosen candidates, each (refitted if asked and) tested once: in the sweep's
    thread pool and thread budget, in the order of :func:`_choose`."""
    from concurrent.futures import ThreadPoolExecutor

    chosen, best_ids = _choose(data, candidates, options.metric)
    workers, threads = plan(len(chosen), options.jobs)
    with limited_threads(threads), _quiet_fits(), ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda c: _test(data[c.cache_index], c, options,
                                             best=id(c) in best_ids), chosen))


def _test(d: Split, c: Candidate, options: FitOptions, *, best: bool) -> ChosenRun:
    """Refit (if asked, and always under cross-validation) and evaluate one chosen candidate
    on the test split, once."""
    assert c.validation is not None
    validation = dict(c.validation, fit_seconds=c.fit_seconds,
                      predict_seconds=c.predict_seconds)
    head, test_extra = _final_head(d, c, options)
    t0 = time.perf_counter()
    proba = head.predict_proba(d.x["test"])  # the only place test rows are predicted
    test = dict(split_metrics(d.y["test"], proba),
                predict_seconds=time.perf_counter() - t0, **test_extra)
    assert c.proba is not None
    predictions = {"validation": SplitPredictions(d.ids["validation"], d.y["validation"],
                                                  c.proba),
                   "test": SplitPredictions(d.ids["test"], d.y["test"], proba)}
    return ChosenRun(run_id="", run_dir=None, cache=d.path, dataset=d.dataset, base=d.base,
                     config=c.config, validation=validation, test=test, best_overall=best,
                     head=head, candidate=c, predictions=predictions, cv=c.cv,
                     refit="refit_seconds" in test_extra, seed=options.seed)


def _final_head(d: Split, c: Candidate, options: FitOptions) -> tuple[Head, dict[str, Any]]:
    """The head the test sees: the train-only fit, or a refit on train+validation (with the
    epochs early stopping chose on validation, or the folds' median under CV)."""
    if c.cv is None and not options.refit:
        assert c.head is not None
        return c.head, {}
    if c.cv is not None:
        params = c.refit_params or c.config.params
    else:
        assert c.head is not None
        params = c.head.refit_params()
    head = get_head_spec(c.config.kind).make(params, n_classes=len(d.class_names),
                                             seed=options.seed)
    t0 = time.perf_counter()
    head.fit(np.concatenate([d.x["train"], d.x["validation"]]),
             np.concatenate([d.y["train"], d.y["validation"]]))
    return head, {"refit_seconds": time.perf_counter() - t0}


def _plan_cv(data: list[Split], options: FitOptions, report: Reporter) -> list[int]:
    """Per cache, the cross-validation folds (0: select on validation), each said in a line."""
    from pipeline.heads.cv import choose_folds

    folds = []
    for d in data:
        k, line = choose_folds(d, options.cv_folds)
        if line:
            report.line(line)
        folds.append(k)
    return folds


def _fit_cv(data: list[Split], candidates: list[Candidate], folds: list[int],
            options: FitOptions, report: Reporter) -> None:
    """Cross-validate the candidates of caches with folds; fit the others on train."""
    from pipeline.heads.cv import cross_validate

    def fit_all(stand_ins: list[Split], cands: list[Candidate]) -> None:
        _fit_all(stand_ins, cands, options, report)

    cv = [c for c in candidates if folds[c.cache_index]]
    cross_validate(data, cv, folds, options.metric, options.seed, fit_all)
    plain = [c for c in candidates if not folds[c.cache_index]]
    if plain:
        _fit_all(data, plain, options, report)
