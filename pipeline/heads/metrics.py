"""Classification metrics of a head on one split, and the metric used for selection.

All metrics are computed from predicted probabilities over the full class list, so a split in
which some class is absent still gets a well-defined confusion matrix and log-loss.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

#: Metrics a sweep can select on; ``log_loss`` is minimised, the others maximised.
SELECTION_METRICS = ("balanced_accuracy", "accuracy", "f1_macro", "roc_auc", "log_loss")
DEFAULT_METRIC = "balanced_accuracy"
LOWER_IS_BETTER = frozenset({"log_loss", "fit_seconds", "predict_seconds"})


def classification_metrics(y_true: np.ndarray, proba: np.ndarray) -> dict[str, Any]:
    """Accuracy, balanced accuracy, macro F1, ROC-AUC, log-loss and the confusion matrix.

    ``roc_auc`` is the usual AUC for two classes and the macro one-vs-rest AUC for more; it is
    ``None`` when a class is missing from ``y_true`` (AUC is undefined then).
    """
    from sklearn import metrics as skm  # imported on use: the CLI reads this module early

    y_true = np.asarray(y_true, dtype=int)
    proba = np.asarray(proba, dtype=np.float64)
    n_classes = proba.shape[1]
    labels = list(range(n_classes))
    y_pred = np.argmax(proba, axis=1)
    clipped = np.clip(proba, 1e-15, 1.0)
    clipped /= clipped.sum(axis=1, keepdims=True)
    out: dict[str, Any] = {
        "n_samples": len(y_true),
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "balanced_accuracy": _balanced_accuracy(y_true, y_pred, labels),
        "f1_macro": float(skm.f1_score(y_true, y_pred, labels=labels, average="macro",
                                       zero_division=0)),
        "roc_auc": None,
        "log_loss": float(skm.log_loss(y_true, clipped, labels=labels)),
        "confusion_matrix": skm.confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }
    if len(np.unique(y_true)) == n_classes:
        if n_classes == 2:
            out["roc_auc"] = float(skm.roc_auc_score(y_true, proba[:, 1]))
        else:
            out["roc_auc"] = float(skm.roc_auc_score(y_true, clipped, multi_class="ovr",
                                                     average="macro", labels=labels))
    return out


def _balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray, labels: list[int]) -> float:
    # Mean recall over the classes present in y_true (sklearn's definition, without warnings).
    recalls = [float(np.mean(y_pred[y_true == c] == c)) for c in labels if np.any(y_true == c)]
    return float(np.mean(recalls)) if recalls else math.nan


def score_key(metrics: dict[str, Any], metric: str) -> float:
    """A number where larger is better, for ranking by ``metric`` (missing values rank last)."""
    value = metrics.get(metric)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return -math.inf
    return -float(value) if metric in LOWER_IS_BETTER else float(value)


#: Bootstrap settings of the confidence intervals on test metrics.
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_LEVEL = 0.95
#: The metrics :func:`bootstrap_ci` gives intervals for.
CI_METRICS = ("balanced_accuracy", "accuracy", "f1_macro", "roc_auc", "log_loss")


def _prepared(y_true: np.ndarray, proba: np.ndarray) -> tuple[np.ndarray, np.ndarray,
                                                               np.ndarray]:
    """Labels, predicted classes, and probabilities clipped and renormalised as
    :func:`classification_metrics` does."""
    y = np.asarray(y_true, dtype=np.int64)
    proba = np.asarray(proba, dtype=np.float64)
    clipped = np.clip(proba, 1e-15, 1.0)
    clipped /= clipped.sum(axis=1, keepdims=True)
    return y, np.argmax(proba, axis=1), clipped


def _counts(idx: np.ndarray, n: int) -> np.ndarray:
    """``(resamples, n)``: how often each row is drawn in each resample."""
    offsets = (np.arange(len(idx)) * n)[:, None]
    return np.bincount((idx + offsets).ravel(), minlength=len(idx) * n).reshape(len(idx), n)


def _auc_rows(counts: np.ndarray, scores: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """ROC-AUC of each resample (Mann-Whitney, ties count one half) from the row counts, in
    one pass over the rows sorted by score; NaN where a resample has only one class."""
    order = np.argsort(scores, kind="stable")
    s = scores[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])  # tie groups of equal scores
    c = counts[:, order]
    pos = np.add.reduceat(c * positive[order], starts, axis=1)
    neg = np.add.reduceat(c, starts, axis=1) - pos
    below = np.cumsum(neg, axis=1) - neg
    n_pos, n_neg = pos.sum(axis=1), neg.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        auc = (pos * (below + 0.5 * neg)).sum(axis=1) / (n_pos * n_neg)
    return np.where((n_pos > 0) & (n_neg > 0), auc, np.nan)


def resampled_metrics(y_true: np.ndarray, proba: np.ndarray, idx: np.ndarray,
                      metrics: tuple[str, ...] = CI_METRICS) -> dict[str, np.ndarray]:
    """Each metric on each resample: ``idx`` is ``(resamples, n)`` row indices. The same
    definitions as :func:`classification_metrics` (NaN where a metric is undefined)."""
    y, pred, clipped = _prepared(y_true, proba)
    n, n_classes = clipped.shape
    counts = _counts(idx, n).astype(np.float64)
    size = counts.sum(axis=1)
    correct = (y == pred).astype(np.float64)
    out: dict[str, np.ndarray] = {}
    if "accuracy" in metrics:
        out["accuracy"] = counts @ correct / size
    if "log_loss" in metrics:
        out["log_loss"] = counts @ -np.log(clipped[np.arange(n), y]) / size
    recalls, f1s, aucs = [], [], []
    for k in range(n_classes):
        is_k = y == k
        tp = counts @ (correct * is_k)
        n_k, fp = counts @ is_k.astype(np.float64), counts @ ((pred == k) & ~is_k).astype(float)
        with np.errstate(divide="ignore", invalid="ignore"):
            recalls.append(np.where(n_k > 0, tp / n_k, np.nan))
        denom = 2 * tp + fp + (n_k - tp)
        f1s.append(np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0))
        if "roc_auc" in metrics and (n_classes > 2 or k == 1):
            scores = (proba if n_classes == 2 else clipped)[:, k]
            aucs.append(_auc_rows(counts, np.asarray(scores, dtype=np.float64), is_k))
    if "balanced_accuracy" in metrics:
        # Mean recall over the classes present in each resample (as _balanced_accuracy).
        r = np.stack(recalls)
        present = np.isfinite(r)
        out["balanced_accuracy"] = np.where(present, r, 0.0).sum(axis=0) / present.sum(axis=0)
    if "f1_macro" in metrics:
        out["f1_macro"] = np.mean(np.stack(f1s), axis=0)
    if "roc_auc" in metrics:
        # Undefined (NaN) when a resample lacks a class, as classification_metrics says None.
        out["roc_auc"] = np.mean(np.stack(aucs), axis=0)
    return out


def resample_indices(n: int, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0
                     ) -> np.ndarray:
    """``(resamples, n)`` row indices drawn with replacement (seeded)."""
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def _blocks(n: int, resamples: int, seed: int) -> list[np.ndarray]:
    """The resample indices in blocks of about two million entries (memory stays small)."""
    idx = resample_indices(n, resamples, seed)
    step = max(1, 2_000_000 // max(n, 1))
    return [idx[i:i + step] for i in range(0, resamples, step)]


def _interval(values: np.ndarray, level: float) -> list[float] | None:
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return None
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return [float(low), float(high)]


def bootstrap_ci(y_true: np.ndarray, proba: np.ndarray, *, seed: int = 0,
                 resamples: int = BOOTSTRAP_RESAMPLES, level: float = BOOTSTRAP_LEVEL,
                 metrics: tuple[str, ...] = CI_METRICS) -> dict[str, list[float]]:
    """``{metric: [low, high]}``: percentile bootstrap intervals over the rows (resampled with
    replacement, ``resamples`` times, seeded). A metric undefined on every resample (e.g.
    ROC-AUC with one class) gets no interval."""
    n = len(y_true)
    if n == 0:
        return {}
    parts = [resampled_metrics(y_true, proba, idx, metrics) for idx in _blocks(n, resamples, seed)]
    out = {}
    for m in metrics:
        interval = _interval(np.concatenate([p[m] for p in parts]), level)
        if interval is not None:
            out[m] = interval
    return out


def paired_bootstrap_diff(y_true: np.ndarray, proba_a: np.ndarray, proba_b: np.ndarray, *,
                          metric: str = DEFAULT_METRIC, seed: int = 0,
                          resamples: int = BOOTSTRAP_RESAMPLES, level: float = BOOTSTRAP_LEVEL
                          ) -> list[float] | None:
    """The ``level`` interval of ``metric(a) - metric(b)`` over paired resamples of the same
    rows (both models are scored on each resample): 0 inside it means the rows cannot tell
    the two apart."""
    n = len(y_true)
    if n == 0:
        return None
    diffs = [resampled_metrics(y_true, proba_a, idx, (metric,))[metric]
             - resampled_metrics(y_true, proba_b, idx, (metric,))[metric]
             for idx in _blocks(n, resamples, seed)]
    return _interval(np.concatenate(diffs), level)
