"""Fit a sweep of head configurations on cached features and keep the best.

Protocol (what :func:`fit_heads` guarantees):

1. Each cache is loaded once; its train/validation/test rows are separated once.
2. Every configuration is fitted on **train** and scored on **validation** only.
   scikit-learn configurations run in parallel worker processes (joblib/loky; large arrays are
   shared as memory maps); Keras configurations run one after another in this process, where
   TensorFlow already uses every core.
3. Per cache and head kind, the configuration with the best validation ``metric`` is chosen
   (ties: lower validation log-loss, then the earlier configuration). Among those, the best per
   dataset is flagged ``best_overall``.
4. Only the chosen configurations ever see the **test** split, each exactly once – after an
   optional refit on train+validation (``refit=True``; Keras heads then train for the epoch
   count early stopping chose).
5. Each chosen configuration becomes a run folder (see :mod:`pipeline.runs.store`), and the
   leaderboard files in the reports folder are refreshed.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.cache.store import SPLITS, FeatureSet, load_feature_set
from pipeline.errors import PipelineError
from pipeline.heads.base import (
    Head,
    HeadConfig,
    HeadGrid,
    expand_grids,
    get_head_spec,
    make_grid,
)
from pipeline.heads.metrics import (
    DEFAULT_METRIC,
    check_metric,
    classification_metrics,
    score_key,
)

#: The sweep run when no head is given: 11 configurations, well under a minute on ~1800x1280
#: training rows and 2 cores.
DEFAULT_SWEEP: tuple[tuple[str, dict[str, Any]], ...] = (
    ("logreg", {"C": [0.01, 0.1, 1.0]}),
    ("linear_svm", {"C": [0.001, 0.01]}),
    ("rbf_svm", {"C": [1.0, 10.0]}),
    ("knn", {"n_neighbors": [5, 15]}),
    ("random_forest", {"n_estimators": [200]}),
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


def resolve_caches(caches: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
    """Cache files from paths; a folder stands for every ``*.h5`` file in it."""
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
            out.append(p)
    if not out:
        raise PipelineError("no feature caches given")
    return list(dict.fromkeys(out))


@dataclass
class Split:
    """The rows of one cache separated by split, with what reports need about the cache."""

    path: Path
    meta: dict[str, Any]
    x: dict[str, np.ndarray]
    y: dict[str, np.ndarray]
    ids_digest: dict[str, str]

    @property
    def class_names(self) -> list[str]:
        return list(self.meta["class_names"])

    @property
    def dataset(self) -> str:
        return str(self.meta.get("dataset") or self.path.stem)

    @property
    def base(self) -> str:
        return str(self.meta.get("base") or "features")


def prepare(fs: FeatureSet) -> Split:
    """Split a loaded cache; empty splits or a single training class are errors."""
    path = fs.path or Path("<memory>")
    if len(fs.class_names) < 2:
        raise PipelineError(f"{path}: needs at least 2 classes, has {len(fs.class_names)}")
    x, y, digests = {}, {}, {}
    for s in SPLITS:
        if not np.any(fs.mask(s)):  # checked first: xy() cannot reshape an empty split
            raise PipelineError(f"{path}: the {s!r} split has no samples; re-extract with a "
                                f"non-zero {s} fraction (--split)")
        xs, ys = fs.xy(s)
        x[s], y[s] = np.ascontiguousarray(xs, dtype=np.float32), ys.astype(int)
        ids = sorted(str(i) for i in fs.ids[fs.mask(s)])
        digests[s] = hashlib.sha256("\n".join(ids).encode()).hexdigest()
    if len(np.unique(y["train"])) < 2:
        raise PipelineError(f"{path}: the training split holds only one class")
    return Split(path=path, meta=fs.meta, x=x, y=y, ids_digest=digests)


@dataclass
class Candidate:
    """One configuration fitted on one cache and scored on validation."""

    cache_index: int
    config: HeadConfig
    validation: dict[str, Any] | None = None
    fit_seconds: float = math.nan
    predict_seconds: float = math.nan
    error: str | None = None
    head: Head | None = field(default=None, repr=False)

    def score(self, metric: str) -> tuple[float, float]:
        if self.validation is None:
            return (-math.inf, -math.inf)
        return (score_key(self.validation, metric), score_key(self.validation, "log_loss"))


@dataclass
class RunRecord:
    """A chosen configuration: its run folder and validation/test metrics."""

    run_id: str
    run_dir: Path | None
    cache: Path
    dataset: str
    base: str
    config: HeadConfig
    validation: dict[str, Any]
    test: dict[str, Any]
    best_overall: bool = False
    head: Head | None = field(default=None, repr=False)
    #: The train-only fit it was chosen from (its history drives the learning curve).
    candidate: Candidate | None = field(default=None, repr=False)


@dataclass
class SweepResult:
    """What :func:`fit_heads` returns: every candidate, the chosen runs, the overall best."""

    metric: str
    candidates: list[Candidate]
    runs: list[RunRecord]
    reports_dir: Path | None
    refit: bool = False

    @property
    def best(self) -> RunRecord:
        """The overall best run (of the first dataset, if the sweep covered several)."""
        return next(r for r in self.runs if r.best_overall)

    def best_per_dataset(self) -> dict[str, RunRecord]:
        return {r.dataset: r for r in self.runs if r.best_overall}


def _fit_candidate(kind: str, params: dict[str, Any], n_classes: int, seed: int,
                   x_tr: np.ndarray, y_tr: np.ndarray, x_va: np.ndarray,
                   y_va: np.ndarray) -> dict[str, Any]:
    """Fit one configuration on train and score it on validation (runs in a worker)."""
    try:
        head = get_head_spec(kind).make(params, n_classes=n_classes, seed=seed)
        t0 = time.perf_counter()
        head.fit(x_tr, y_tr, x_va, y_va)
        t1 = time.perf_counter()
        proba = head.predict_proba(x_va)
        t2 = time.perf_counter()
    except Exception as e:  # one failing configuration must not sink the sweep
        return {"error": f"{type(e).__name__}: {e}".splitlines()[0]}
    return {"head": head, "validation": classification_metrics(y_va, proba),
            "fit_seconds": t1 - t0, "predict_seconds": t2 - t1}


def _fit_indexed(i: int, *args: Any) -> tuple[int, dict[str, Any]]:
    return i, _fit_candidate(*args)


def _progress(quiet: bool) -> Any:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=Console(stderr=True), disable=quiet,
                    transient=False)


def fit_heads(
    caches: str | os.PathLike | Iterable[str | os.PathLike],
    heads: HeadsArg = None,
    *,
    metric: str = DEFAULT_METRIC,
    refit: bool = False,
    class_weight: str | None = None,
    jobs: int | None = None,
    seed: int = 0,
    reports_dir: str | os.PathLike | None = None,
    save: bool = True,
    quiet: bool = False,
    extra_config: Mapping[str, Any] | None = None,
) -> SweepResult:
    """Fit every head configuration on every cache, select on validation, test the chosen.

    ``caches``: feature-cache files (or folders of them) from ``pipeline extract``.
    ``heads``: grids (see :func:`as_grids`); ``None`` runs :data:`DEFAULT_SWEEP`.
    ``metric``: the validation metric configurations are chosen by
    (``balanced_accuracy`` by default – it is not fooled by class imbalance).
    ``refit``: refit the chosen configurations on train+validation before testing.
    ``class_weight``: ``"balanced"`` for every head that supports it (a grid value wins).
    ``jobs``: parallel worker processes for scikit-learn configurations (default: all cores).
    ``save``: write run folders and the leaderboard under ``reports_dir``; ``extra_config`` is
    stored in each run's ``config.json`` (e.g. the experiment, with its ``[finetune]`` table).
    """
    from pipeline.settings import reports_dir as default_reports

    metric = check_metric(metric)
    if class_weight not in (None, "none", "balanced"):
        raise PipelineError(f"class_weight {class_weight!r}: expected 'balanced' or 'none'")
    if jobs is not None and (jobs == 0 or jobs < -1):
        raise PipelineError(f"jobs={jobs}: expected a positive number of workers or -1 (all)")
    grids = as_grids(heads)
    configs = expand_grids(grids, {"class_weight": class_weight} if class_weight else None)
    paths = resolve_caches(caches)
    data = [prepare(load_feature_set(p)) for p in paths]
    reports = default_reports(reports_dir) if save else None

    candidates = [Candidate(i, c) for i in range(len(data)) for c in configs]
    sk = [c for c in candidates if get_head_spec(c.config.kind).family != "keras"]
    ks = [c for c in candidates if get_head_spec(c.config.kind).family == "keras"]
    n_jobs = jobs or (os.cpu_count() or 1)

    def args(c: Candidate) -> tuple:
        d = data[c.cache_index]
        return (c.config.kind, c.config.params, len(d.class_names), seed,
                d.x["train"], d.y["train"], d.x["validation"], d.y["validation"])

    def record(c: Candidate, out: dict[str, Any]) -> None:
        c.error = out.get("error")
        c.head = out.get("head")
        c.validation = out.get("validation")
        c.fit_seconds = out.get("fit_seconds", math.nan)
        c.predict_seconds = out.get("predict_seconds", math.nan)

    from joblib import Parallel, delayed

    with _progress(quiet) as progress:
        task = progress.add_task(f"fitting {len(candidates)} configurations on "
                                 f"{len(data)} cache(s)", total=len(candidates))
        outs: Iterable[tuple[int, dict[str, Any]]] = ()
        if sk:
            # The generator dispatches in a background thread, so the Keras configurations
            # below train here while the workers fit the scikit-learn ones.
            par = Parallel(n_jobs=min(n_jobs, len(sk)), backend="loky",
                           return_as="generator_unordered")
            outs = par(delayed(_fit_indexed)(i, *args(c)) for i, c in enumerate(sk))
        for c in ks:
            record(c, _fit_candidate(*args(c)))
            progress.advance(task)
        for i, out in outs:
            record(sk[i], out)
            progress.advance(task)
        progress.update(task, description="fitted")

    runs = _select_and_test(data, candidates, metric, refit, seed, quiet)
    if save and reports is not None:
        _write_runs(reports, data, runs, candidates, metric, refit, extra_config or {})
        from pipeline.runs.leaderboard import write_leaderboard

        write_leaderboard(reports)
    return SweepResult(metric=metric, candidates=candidates, runs=runs, reports_dir=reports,
                       refit=refit)


def _select_and_test(data: list[Split], candidates: list[Candidate], metric: str, refit: bool,
                     seed: int, quiet: bool) -> list[RunRecord]:
    chosen: list[Candidate] = []
    for i, d in enumerate(data):
        mine = [c for c in candidates if c.cache_index == i]
        ok = [c for c in mine if c.validation is not None]
        if not ok:
            errors = "; ".join(sorted({c.error or "?" for c in mine}))
            raise PipelineError(f"{d.path}: every head configuration failed ({errors})")
        for kind in dict.fromkeys(c.config.kind for c in ok):
            pool = [c for c in ok if c.config.kind == kind]
            # max() keeps the first of equal scores, so ties go to the earlier configuration.
            chosen.append(max(pool, key=lambda c: c.score(metric)))
    best_ids = set()
    for dataset in dict.fromkeys(data[c.cache_index].dataset for c in chosen):
        pool = [c for c in chosen if data[c.cache_index].dataset == dataset]
        best_ids.add(id(max(pool, key=lambda c: c.score(metric))))

    runs = []
    for c in chosen:
        d = data[c.cache_index]
        head = c.head
        assert head is not None and c.validation is not None
        validation = dict(c.validation, fit_seconds=c.fit_seconds,
                          predict_seconds=c.predict_seconds)
        test_extra: dict[str, Any] = {}
        if refit:
            spec = get_head_spec(c.config.kind)
            head = spec.make(head.refit_params(), n_classes=len(d.class_names), seed=seed)
            t0 = time.perf_counter()
            head.fit(np.concatenate([d.x["train"], d.x["validation"]]),
                     np.concatenate([d.y["train"], d.y["validation"]]))
            test_extra["refit_seconds"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        proba = head.predict_proba(d.x["test"])  # the only place test rows are predicted
        test = dict(classification_metrics(d.y["test"], proba),
                    predict_seconds=time.perf_counter() - t0, **test_extra)
        runs.append(RunRecord(run_id="", run_dir=None, cache=d.path, dataset=d.dataset,
                              base=d.base, config=c.config,
                              validation=validation, test=test,
                              best_overall=id(c) in best_ids, head=head, candidate=c))
    return runs


def _write_runs(reports: Path, data: list[Split], runs: list[RunRecord],
                candidates: list[Candidate], metric: str, refit: bool,
                extra: Mapping[str, Any]) -> None:
    import sklearn

    import pipeline
    from pipeline.runs.plots import plot_confusion, plot_learning_curve
    from pipeline.runs.store import new_run_dir, save_head, write_json

    now = time.time()
    by_path = {d.path: d for d in data}
    for r in runs:
        d = by_path[r.cache]
        assert r.head is not None
        run_dir = new_run_dir(reports, d.dataset, d.base, r.config.slug, now=now)
        r.run_dir, r.run_id = run_dir, run_dir.name
        pool = [c for c in candidates
                if data[c.cache_index] is d and c.config.kind == r.config.kind]
        head_info = save_head(r.head, run_dir)
        config = {
            "run_id": r.run_id,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(now)),
            "cache": {
                "path": str(Path(d.path).resolve()), "key": d.meta.get("key"),
                "dataset": d.dataset, "dataset_source": d.meta.get("dataset_source"),
                "base": d.base,
                **{k: d.meta.get(k) for k in ("weights", "weights_id", "layer", "pooling",
                                              "input_size", "preprocessing", "dtype",
                                              "feature_shape", "class_names")},
                **{f"n_{s}": len(d.y[s]) for s in SPLITS},
                "split_ids_sha256": d.ids_digest,
            },
            "head": head_info,
            "selection": {
                "metric": metric, "on": "validation", "refit": refit,
                "refit_params": r.head.params if refit else None,
                "best_overall": r.best_overall,
                "candidates": [{"params": c.config.params, "validation": c.validation,
                                "fit_seconds": c.fit_seconds, "error": c.error}
                               for c in pool],
                "n_configurations_total": sum(1 for c in candidates
                                              if data[c.cache_index] is d),
            },
            "versions": {"pipeline": pipeline.__version__, "scikit-learn": sklearn.__version__},
            **({"experiment": dict(extra)} if extra else {}),
        }
        metrics: dict[str, Any] = {"validation": r.validation, "test": r.test}
        # For refitted epoch heads the curves are those of the validation-monitored fit.
        trained = r.candidate.head if r.candidate is not None else None
        history = (trained.history if trained is not None else None) or r.head.history
        if history:
            metrics["history"] = history
            metrics["best_epoch"] = getattr(trained, "best_epoch", None)
        write_json(run_dir / "config.json", config)
        write_json(run_dir / "metrics.json", metrics)
        title = f"{d.dataset} / {d.base} / {r.config.label}"
        plot_confusion(run_dir / "confusion_matrix.png",
                       {"validation": r.validation["confusion_matrix"],
                        "test": r.test["confusion_matrix"]}, d.class_names, title)
        if history and ("val_loss" in history or r.head.family == "keras"):
            plot_learning_curve(run_dir / "learning_curve.png", history, title,
                                best_epoch=metrics.get("best_epoch"))

