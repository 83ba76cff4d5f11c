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
