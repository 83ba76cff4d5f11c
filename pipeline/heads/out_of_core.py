"""Heads on caches larger than memory: linear heads trained out of core, a chunk at a time.

:func:`pipeline.heads.sweep.run_sweep` first asks :func:`plan_memory` which caches would need
more than the memory budget (``FitOptions.max_memory``, ``--max-memory``; default half of
RAM) if swept in memory (:func:`in_memory_bytes`). Those caches are never loaded whole: the
kinds whose spec declares ``memory="chunks"`` (``logreg``, ``linear_svm``) train on ranges of
rows read from the HDF5 file in a random order each epoch, one line saying so; any other kind
asked for is refused in one line naming the ones that can. Validation and test rows are
predicted a range at a time as well, so memory holds one range of features (about
:func:`chunk_bytes` of the budget) plus per-row labels, ids and probabilities.

The fits are the in-memory heads' models, trained by minibatch Adam on the same objective
(L2 penalty ``1 / (C * n_train)`` on the mean loss, as scikit-learn's ``C``), so that the
saved head is an ordinary ``logreg``/``linear_svm`` run: a ``StandardScaler`` (fitted with
``partial_fit``) in front of a ``LogisticRegression`` (softmax, or sigmoid for two classes) or
a Platt-calibrated ``LinearSVC`` (one-vs-rest squared hinge; the sigmoid fitted on a held-out,
seeded :data:`CALIBRATION_SHARE` of the training rows, which the SVM does not see); their
``max_iter`` is not used (:func:`epochs` passes instead). Runs are
saved, ranked, predicted and exported like in-memory ones; their metrics say
``"trained": "out_of_core"``. Cross-validated selection (``--cv``) is not done out of core:
configurations are chosen on validation (said in one line when ``--cv K`` was asked for).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np

from pipeline.cache.store import CHUNK_BYTES, SPLITS, FeatureRows, open_feature_rows
from pipeline.errors import PipelineError
from pipeline.fileio import text_sha256
from pipeline.heads.metrics import classification_metrics
from pipeline.heads.options import FitOptions
from pipeline.heads.registry import get_head_spec, list_heads
from pipeline.heads.results import (
    Candidate,
    ChosenRun,
    Split,
    SplitPredictions,
    SweepResult,
    choose_per_kind,
)
from pipeline.heads.spec import Head
from pipeline.progress import Reporter

if TYPE_CHECKING:
    from pipeline.heads.grid import HeadConfig

#: Passes over the training rows (more on small ones, to make at least :data:`MIN_STEPS`).
EPOCHS = 5
MIN_STEPS = 300
MAX_EPOCHS = 50
#: Rows per Adam step, and its step size (divided by sqrt(1 + epoch)).
BATCH = 64
LEARNING_RATE = 0.01
#: Share of the training rows ``linear_svm`` holds out to fit its Platt sigmoid on.
CALIBRATION_SHARE = 0.2
#: How many copies of one range of rows a fit holds at once (as read, float32, scaled, ...):
#: a range is at most the budget divided by this.
COPIES = 8


def out_of_core_kinds() -> list[str]:
    """The head kinds that can train out of core (their spec's ``memory`` is "chunks")."""
    return [s.kind for s in list_heads() if s.memory == "chunks"]


def in_memory_bytes(rows: FeatureRows) -> int:
    """What an in-memory sweep holds of a cache's features: the file's features as read, their
    float32 train/validation/test copies, and one scaled copy of the training rows."""
    d = int(np.prod(rows.feature_shape))
    return len(rows) * (rows.row_bytes + 4 * d) + int(rows.mask("train").sum()) * 4 * d


def size_text(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def chunk_bytes(budget: int) -> int:
    """Features read at once out of core: the budget's share for one range (see
    :data:`COPIES`), at most :data:`pipeline.cache.store.CHUNK_BYTES`."""
    return max(1, min(CHUNK_BYTES, budget // COPIES))


def plan_memory(paths: Sequence[Path], kinds: Sequence[str], max_memory: int | str | None,
                report: Reporter) -> list[Path]:
    """The caches whose in-memory sweep would exceed the budget (their heads train out of
    core, said in one line each); refuses, in one line, heads that cannot."""
    budget = FitOptions(max_memory=max_memory).memory_budget
    able = out_of_core_kinds()
    over = []
    for path in paths:
        rows = open_feature_rows(path, verify=False)  # rows only: verified when swept
        need = in_memory_bytes(rows)
        if need <= budget:
            continue
        bad = sorted({k for k in kinds if k not in able})
        if bad:
            raise PipelineError(
                f"{path.name}: its features need {size_text(need)} in memory, over "
                f"--max-memory {size_text(budget)}; {', '.join(bad)} "
                f"need{'s' if len(bad) == 1 else ''} every row in memory: fit only heads "
                f"that train out of core ({', '.join(able)}) or raise --max-memory")
        report.line(f"{path.name}: features need {size_text(need)} in memory > --max-memory "
                    f"{size_text(budget)}: training {', '.join(dict.fromkeys(kinds))} out of "
                    f"core (minibatches from ranges of at most "
                    f"{size_text(chunk_bytes(budget))} read from the file)")
        over.append(path)
    return over


def _ranges(rows: FeatureRows, mask: np.ndarray, max_bytes: int,
            rng: np.random.Generator | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(row indices, float32 flattened features)`` of the rows in ``mask``, a range of the
    file (:meth:`~pipeline.cache.store.FeatureRows.chunk_rows` rows) at a time: in file order,
    or with ``rng`` the ranges in a random order (files are often in class order)."""
    step = rows.chunk_rows(max_bytes)
    starts = np.arange(0, len(rows), step)
    with h5py.File(rows.path, "r") as f:
        data = f["features"]
        for a in (starts if rng is None else rng.permutation(starts)):
            idx = a + np.flatnonzero(mask[a:a + step])
            if len(idx):
                x = data[a:idx[-1] + 1][idx - a]
                yield idx, x.reshape(len(idx), -1).astype(np.float32, copy=False)


class _Adam:
    """Adam steps on a list of float32 arrays, updated in place."""

    def __init__(self, params: list[np.ndarray]):
        self.params = params
        self.m = [np.zeros_like(p) for p in params]
        self.v = [np.zeros_like(p) for p in params]
        self.t = 0

    def step(self, grads: list[np.ndarray], lr: float) -> None:
        self.t += 1
        c1, c2 = 1 - 0.9 ** self.t, 1 - 0.999 ** self.t
        for p, g, m, v in zip(self.params, grads, self.m, self.v, strict=True):
            m += 0.1 * (g - m)
            v += 0.001 * (g * g - v)
            p -= lr * (m / c1) / (np.sqrt(v / c2) + 1e-8)


def _loss_grad(loss: str, z: np.ndarray, y: np.ndarray) -> np.ndarray:
    """d(loss)/d(logits) per row: softmax cross-entropy (a sigmoid for one output), or the
    one-vs-rest squared hinge."""
    n = np.arange(len(y))
    if loss == "log_loss":
        if z.shape[1] == 1:
            return 0.5 * (1.0 + np.tanh(0.5 * z)) - y[:, None]  # sigmoid, no overflow
        p = np.exp(z - z.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        p[n, y] -= 1.0
        return p
    t = np.where(y[:, None] == 1, 1.0, -1.0) if z.shape[1] == 1 else -np.ones_like(z)
    if z.shape[1] > 1:
        t[n, y] = 1.0
    return -2.0 * t * np.maximum(0.0, 1.0 - t * z)


def epochs(n_train: int) -> int:
    """Passes over ``n_train`` rows: :data:`EPOCHS`, or enough for :data:`MIN_STEPS` steps."""
    return min(MAX_EPOCHS, max(EPOCHS, math.ceil(MIN_STEPS * BATCH / max(1, n_train))))


def _class_weights(y: np.ndarray, n_classes: int, class_weight: str) -> np.ndarray:
    if class_weight != "balanced":
        return np.ones(n_classes, dtype=np.float32)
    counts = np.bincount(y, minlength=n_classes).astype(np.float32)
    return np.where(counts > 0, len(y) / (n_classes * np.maximum(counts, 1)), 0.0)


def _train(rows: FeatureRows, mask: np.ndarray, loss: str, params: dict[str, Any], scaler: Any,
           *, seed: int, max_bytes: int) -> tuple[np.ndarray, np.ndarray]:
    """``(coef (outputs, d), intercept)`` minimising the mean ``loss`` + ``||W||^2 / (2 C n)``
    by minibatch Adam over ranges of rows (one output for two classes). A step takes the
    gradient of :data:`BATCH` rows however few rows a range holds (a small budget reads small
    ranges): gradients are summed across ranges until a batch is complete."""
    k = len(rows.class_names)
    outputs = 1 if k == 2 else k
    y_all = rows.labels.astype(np.int64)
    n = int(mask.sum())
    alpha = np.float32(1.0 / (float(params.get("C", 1.0)) * n))
    weights = _class_weights(y_all[mask], k, str(params.get("class_weight", "none")))
    w = np.zeros((int(np.prod(rows.feature_shape)), outputs), dtype=np.float32)
    b = np.zeros(outputs, dtype=np.float32)
    adam, rng = _Adam([w, b]), np.random.default_rng(seed)
    gw, gb, seen = np.zeros_like(w), np.zeros_like(b), 0
    for epoch in range(epochs(n)):
        lr = LEARNING_RATE / math.sqrt(1 + epoch)
        for idx, x in _ranges(rows, mask, max_bytes, rng):
            z = scaler.transform(x)
            for piece in np.array_split(rng.permutation(len(idx)), -(-len(idx) // BATCH)):
                xb, yb = z[piece], y_all[idx[piece]]
                g = (_loss_grad(loss, xb @ w + b, yb) * weights[yb][:, None]).astype(np.float32)
                gw += xb.T @ g
                gb += g.sum(axis=0)
                seen += len(piece)
                if seen >= BATCH:
                    adam.step([gw / seen + alpha * w, gb / seen], lr)
                    gw[:], gb[:], seen = 0.0, 0.0, 0
    if seen:
        adam.step([gw / seen + alpha * w, gb / seen], lr)
    return w.T.astype(np.float64), b.astype(np.float64)


def _scaler(rows: FeatureRows, mask: np.ndarray, max_bytes: int) -> Any:
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler()
    for _, x in _ranges(rows, mask, max_bytes):
        # a few rows at a time: partial_fit's float64 temporaries are 2-4x what it is given
        for block in np.array_split(x, -(-len(x) // BATCH)):
            scaler.partial_fit(block)
    return scaler


def _linear_estimator(kind: str, params: dict[str, Any], coef: np.ndarray,
                      intercept: np.ndarray, seed: int, n_epochs: int) -> Any:
    """The in-memory kind's estimator, with the coefficients trained out of core."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.svm import LinearSVC

    cw = "balanced" if params.get("class_weight") == "balanced" else None
    if kind == "logreg":
        est: Any = LogisticRegression(C=params["C"], max_iter=params["max_iter"],
                                      class_weight=cw, random_state=seed)
    else:
        est = LinearSVC(C=params["C"], max_iter=params["max_iter"], class_weight=cw,
                        random_state=seed)
    n_classes = max(2, len(coef))
    est.coef_, est.intercept_ = coef, intercept
    est.classes_ = np.arange(n_classes)
    est.n_features_in_ = coef.shape[1]
    est.n_iter_ = np.array([n_epochs]) if kind == "logreg" else n_epochs
    return est


def _calibrated(svm: Any, scaler: Any, rows: FeatureRows, mask: np.ndarray,
                max_bytes: int) -> Any:
    """``svm`` behind Platt sigmoids fitted on the decision values of the rows in ``mask``
    (the in-memory head's ``CalibratedClassifierCV`` structure, so it saves and exports
    alike)."""
    from sklearn.calibration import (
        CalibratedClassifierCV,
        _CalibratedClassifier,
        _SigmoidCalibration,
    )

    parts = [(idx, svm.decision_function(scaler.transform(x)))
             for idx, x in _ranges(rows, mask, max_bytes)]
    idx = np.concatenate([p[0] for p in parts])
    d = np.concatenate([p[1] for p in parts]).reshape(len(idx), -1)
    y = rows.labels[idx]
    targets = [1] if d.shape[1] == 1 else range(d.shape[1])
    calibrators = [_SigmoidCalibration().fit(d[:, j], (y == c).astype(int))
                   for j, c in enumerate(targets)]
    model = CalibratedClassifierCV(svm, method="sigmoid", ensemble=False)
    model.calibrated_classifiers_ = [_CalibratedClassifier(
        svm, calibrators, classes=svm.classes_, method="sigmoid")]
    model.classes_ = svm.classes_
    model.n_features_in_ = svm.n_features_in_
    return model


def fit_head(rows: FeatureRows, kind: str, params: dict[str, Any] | None = None, *,
             mask: np.ndarray | None = None, seed: int = 0,
             max_bytes: int = CHUNK_BYTES) -> Head:
    """A fitted ``kind`` head (a :class:`~pipeline.heads.spec.Head`, as in memory) trained out
    of core on the rows in ``mask`` (default: the training split)."""
    from sklearn.pipeline import Pipeline

    spec = get_head_spec(kind)
    if spec.memory != "chunks":
        raise PipelineError(f"{kind} cannot train out of core; these can: "
                            f"{', '.join(out_of_core_kinds())}")
    head = spec.make(params, n_classes=len(rows.class_names), seed=seed)
    mask = rows.mask("train") if mask is None else mask
    if len(np.unique(rows.labels[mask])) < 2:
        raise PipelineError(f"head {kind!r}: the training rows hold only one class")
    fit_mask = mask
    if kind == "linear_svm":  # hold out the rows its sigmoid is fitted on
        held = np.random.default_rng(seed).random(len(mask)) < CALIBRATION_SHARE
        fit_mask, calib_mask = mask & ~held, mask & held
    scaler = _scaler(rows, fit_mask, max_bytes)
    coef, intercept = _train(rows, fit_mask, "log_loss" if kind == "logreg" else "hinge",
                             head.params, scaler, seed=seed, max_bytes=max_bytes)
    model = _linear_estimator(kind, head.params, coef, intercept, seed,
                              epochs(int(fit_mask.sum())))
    if kind == "linear_svm":
        model = _calibrated(model, scaler, rows, calib_mask, max_bytes)
    head.pipeline = Pipeline([("scale", scaler), ("model", model)])  # type: ignore[attr-defined]
    head.n_features = int(coef.shape[1])  # type: ignore[attr-defined]
    return head


def predict_rows(head: Head, rows: FeatureRows, mask: np.ndarray,
                 max_bytes: int = CHUNK_BYTES) -> np.ndarray:
    """``head``'s probabilities for the rows in ``mask`` (in file order), a range at a time."""
    parts = [head.predict_proba(x) for _, x in _ranges(rows, mask, max_bytes)]
    if not parts:
        return np.zeros((0, len(rows.class_names)))
    return np.concatenate(parts)


def evaluate(head: Head, rows: FeatureRows, split: str,
             max_bytes: int = CHUNK_BYTES) -> dict[str, Any]:
    """The metrics of ``split``, predicted a range at a time."""
    mask = rows.mask(split)
    return classification_metrics(rows.labels[mask], predict_rows(head, rows, mask, max_bytes))


def fit_cache_out_of_core(path: str | Path, kind: str, params: dict[str, Any] | None = None,
                          *, seed: int = 0, max_bytes: int = CHUNK_BYTES
                          ) -> tuple[Head, dict[str, Any]]:
    """Fit ``kind`` on a cache's training split out of core; its validation metrics."""
    rows = open_feature_rows(path)  # integrity checked a chunk at a time
    head = fit_head(rows, kind, params, seed=seed, max_bytes=max_bytes)
    return head, evaluate(head, rows, "validation", max_bytes)


# --- the sweep over caches that do not fit ----------------------------------------------------


def sweep_over_budget(paths: Sequence[Path], over: Sequence[Path], configs: Sequence[HeadConfig],
                      options: FitOptions, report: Reporter,
                      in_memory: Callable[[list[Path]], SweepResult]) -> SweepResult:
    """The sweep of ``paths`` when the caches ``over`` exceed the budget: those out of core,
    the others by ``in_memory`` (the ordinary sweep), merged into one result (cache order of
    ``paths``; the best run per dataset chosen among all of them)."""
    if options.cv_folds:
        report.line(f"--cv {options.cv_folds}: not done out of core; configurations on "
                    f"{', '.join(p.name for p in over)} are chosen on validation")
    budget = chunk_bytes(options.memory_budget)
    data, candidates, runs = [], [], []
    for i, path in enumerate(over):
        rows = open_feature_rows(path)  # verified a chunk at a time
        data.append(_split(rows))
        mine = [Candidate(i, c) for c in configs]
        with report.progress(len(mine), "configurations") as bar:
            for c in mine:
                c.record(_fit_one(rows, c.config, options.seed, budget))
                bar.advance(1)
        candidates += mine
        runs += [_test(rows, data[-1], c, options, budget)
                 for c in choose_per_kind(mine, path, options.metric)]
    parts = [(list(over), SweepResult(metric=options.metric, candidates=candidates, runs=runs,
                                      reports_dir=None, refit=options.refit, splits=data))]
    fitting = [p for p in paths if p not in over]
    if fitting:
        parts.append((fitting, in_memory(fitting)))
    return _merge(list(paths), parts, options.metric)


def _split(rows: FeatureRows) -> Split:
    """The sweep's :class:`~pipeline.heads.sweep.Split` of a cache, without its features
    (``x`` is empty): the same checks as an in-memory sweep's."""
    if len(rows.class_names) < 2:
        raise PipelineError(f"{rows.path}: needs at least 2 classes, has "
                            f"{len(rows.class_names)}")
    y, ids, digests = {}, {}, {}
    for s in SPLITS:
        m = rows.mask(s)
        if not m.any():
            raise PipelineError(f"{rows.path}: the {s!r} split has no samples; re-extract with "
                                f"a non-zero {s} fraction (--split)")
        y[s] = rows.labels[m].astype(int)
        ids[s] = np.asarray([str(i) for i in rows.ids[m]], dtype=object)
        digests[s] = text_sha256("\n".join(sorted(ids[s])))
    if len(np.unique(y["train"])) < 2:
        raise PipelineError(f"{rows.path}: the training split holds only one class")
    return Split(path=rows.path, info=rows.info, x={}, y=y, ids_digest=digests, ids=ids)


def _fit_one(rows: FeatureRows, config: HeadConfig, seed: int, max_bytes: int
             ) -> dict[str, Any]:
    """One configuration fitted on train and scored on validation (a failure is its error)."""
    try:
        t0 = time.perf_counter()
        head = fit_head(rows, config.kind, config.params, seed=seed, max_bytes=max_bytes)
        t1 = time.perf_counter()
        mask = rows.mask("validation")
        proba = predict_rows(head, rows, mask, max_bytes)
        t2 = time.perf_counter()
    except Exception as e:  # one failing configuration must not sink the sweep
        return {"error": f"{type(e).__name__}: {e}".splitlines()[0]}
    metrics = dict(classification_metrics(rows.labels[mask], proba), trained="out_of_core")
    return {"head": head, "validation": metrics, "proba": proba, "fit_seconds": t1 - t0,
            "predict_seconds": t2 - t1}


def _test(rows: FeatureRows, d: Split, c: Candidate, options: FitOptions,
          max_bytes: int) -> ChosenRun:
    """Refit on train+validation if asked, then the one evaluation on test, out of core."""
    assert c.head is not None and c.validation is not None and c.proba is not None
    head, extra = c.head, {}
    if options.refit:
        t0 = time.perf_counter()
        head = fit_head(rows, c.config.kind, c.config.params, seed=options.seed,
                        mask=rows.mask("train") | rows.mask("validation"), max_bytes=max_bytes)
        extra["refit_seconds"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    proba = predict_rows(head, rows, rows.mask("test"), max_bytes)
    test = dict(classification_metrics(d.y["test"], proba),
                predict_seconds=time.perf_counter() - t0, trained="out_of_core", **extra)
    validation = dict(c.validation, fit_seconds=c.fit_seconds,
                      predict_seconds=c.predict_seconds)
    predictions = {"validation": SplitPredictions(d.ids["validation"], d.y["validation"],
                                                  c.proba),
                   "test": SplitPredictions(d.ids["test"], d.y["test"], proba)}
    return ChosenRun(run_id="", run_dir=None, cache=d.path, dataset=d.dataset, base=d.base,
                     config=c.config, validation=validation, test=test, head=head,
                     candidate=c, predictions=predictions, refit=options.refit,
                     seed=options.seed)


def _merge(paths: list[Path], parts: list[tuple[list[Path], SweepResult]],
           metric: str) -> SweepResult:
    """Sweeps of disjoint sets of caches as one (``cache_index`` into ``paths``); the best run
    per dataset is chosen again among all of them."""
    where = {p: i for i, p in enumerate(paths)}
    splits: list[Any] = [None] * len(paths)
    candidates, runs = [], []
    for part_paths, result in parts:
        for c in result.candidates:
            c.cache_index = where[part_paths[c.cache_index]]
        for j, s in enumerate(result.splits):
            splits[where[part_paths[j]]] = s
        candidates += result.candidates
        runs += result.runs
    runs.sort(key=lambda r: r.cache_index)
    best: dict[str, ChosenRun] = {}
    for r in runs:
        assert r.candidate is not None
        if r.dataset not in best or r.candidate.score(metric) > best[r.dataset].candidate.score(
                metric):  # type: ignore[union-attr]
            best[r.dataset] = r
        r.best_overall = False
    for r in best.values():
        r.best_overall = True
    return SweepResult(metric=metric, candidates=candidates, runs=runs, reports_dir=None,
                       refit=any(res.refit for _, res in parts), splits=splits)
