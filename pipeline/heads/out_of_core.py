"""Heads on caches larger than memory: linear heads trained out of core, a chunk at a time.

``fit-head`` normally loads the training split whole. When it would need more than the memory
budget (``--max-memory``, default :data:`DEFAULT_FRACTION` of this machine's RAM), the linear
heads (``logreg``, ``linear_svm``) train with scikit-learn's ``SGDClassifier.partial_fit`` on
chunks read from the HDF5 file (:meth:`pipeline.cache.store.FeatureRows.chunks`), after a
first pass that fits the standard scaler with ``partial_fit``; one line says so. Every other
head needs all rows in memory at once and is refused in one line naming the ones that do not.

The regularisation follows scikit-learn's correspondence ``alpha = 1 / (C * n_train)``;
``logreg`` is ``loss="log_loss"`` (native probabilities), ``linear_svm`` is ``loss="hinge"``
with probabilities from a sigmoid/softmax of its decision function. Memory: one chunk of
features (:data:`pipeline.cache.store.CHUNK_BYTES`) plus the per-row labels.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.cache.store import FeatureRows, open_feature_rows
from pipeline.errors import PipelineError
from pipeline.progress import Reporter

#: Head kinds that train out of core, and the SGD loss each one is.
OUT_OF_CORE = {"logreg": "log_loss", "linear_svm": "hinge"}
#: The default memory budget, as a fraction of the machine's RAM.
DEFAULT_FRACTION = 0.25
#: Passes over the training rows.
EPOCHS = 5
_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def ram_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def parse_memory(text: str | int | None) -> int:
    """``--max-memory`` in bytes: ``256M``, ``2G``, ``512K``, ``1000000`` or ``None`` (the
    default, :data:`DEFAULT_FRACTION` of RAM)."""
    if text is None:
        return int(DEFAULT_FRACTION * ram_bytes())
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*", str(text).upper())
    if not m or float(m.group(1)) <= 0:
        raise PipelineError(f"--max-memory {text}: expected a size such as 256M or 2G")
    return int(float(m.group(1)) * _UNITS[m.group(2)])


def size_text(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def training_bytes(rows: FeatureRows) -> int:
    """What the training split takes in memory as float32 rows (how the heads read it)."""
    return int(rows.mask("train").sum()) * int(np.prod(rows.feature_shape)) * 4


def plan_memory(paths: Sequence[Path], kinds: Sequence[str], max_memory: str | int | None,
                report: Reporter) -> list[Path]:
    """The caches whose training split does not fit the budget (their heads train out of
    core, said in one line); refuses, in one line, heads that cannot."""
    budget = parse_memory(max_memory)
    big = []
    for path in paths:
        rows = open_feature_rows(path, verify=False)
        need = training_bytes(rows)
        if need <= budget:
            continue
        bad = sorted({k for k in kinds if k not in OUT_OF_CORE})
        if bad:
            raise PipelineError(
                f"{path.name}: its training split needs {size_text(need)}, over --max-memory "
                f"{size_text(budget)}; {', '.join(bad)} need every row in memory: use the heads "
                f"that train out of core ({', '.join(OUT_OF_CORE)}) or raise --max-memory")
        report.line(f"{path.name}: training split {size_text(need)} > --max-memory "
                    f"{size_text(budget)}: training {', '.join(sorted(set(kinds)))} out of core "
                    "(SGDClassifier.partial_fit on chunks)")
        big.append(path)
    return big


def _class_weights(y: np.ndarray, n_classes: int, class_weight: str) -> np.ndarray:
    if class_weight != "balanced":
        return np.ones(n_classes)
    counts = np.bincount(y, minlength=n_classes).astype(float)
    return np.where(counts > 0, len(y) / (n_classes * np.maximum(counts, 1)), 0.0)


def fit_out_of_core(rows: FeatureRows, kind: str, params: dict[str, Any] | None = None, *,
                    seed: int = 0, class_weight: str = "none", epochs: int = EPOCHS) -> Any:
    """A scaler -> SGD pipeline fitted on the training split, a chunk at a time."""
    from sklearn.linear_model import SGDClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if kind not in OUT_OF_CORE:
        raise PipelineError(f"{kind} cannot train out of core; these can: "
                            f"{', '.join(OUT_OF_CORE)}")
    params = params or {}
    train = rows.mask("train")
    classes = np.arange(len(rows.class_names))
    weights = _class_weights(rows.labels[train], len(classes), class_weight)
    scaler = StandardScaler()
    for _, x in rows.chunks(train, flatten=True):
        scaler.partial_fit(x.astype(np.float32, copy=False))
    alpha = 1.0 / (float(params.get("C", 1.0)) * int(train.sum()))
    clf = SGDClassifier(loss=OUT_OF_CORE[kind], alpha=alpha, random_state=seed)
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        for idx, x in rows.chunks(train, flatten=True):
            order = rng.permutation(len(idx))
            y = rows.labels[idx][order]
            clf.partial_fit(scaler.transform(x[order]), y, classes=classes,
                            sample_weight=weights[y])
    return make_pipeline(scaler, clf)


def predict_proba(model: Any, x: np.ndarray) -> np.ndarray:
    """Class probabilities (a sigmoid/softmax of the decision function for the hinge loss)."""
    clf = model[-1]
    if clf.loss == "log_loss":
        return model.predict_proba(x)
    d = model.decision_function(x)
    if d.ndim == 1:
        p = 1.0 / (1.0 + np.exp(-d))
        return np.column_stack([1 - p, p])
    e = np.exp(d - d.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def evaluate(model: Any, rows: FeatureRows, split: str) -> dict[str, Any]:
    """The metrics of ``split``, predicted a chunk at a time."""
    from pipeline.heads.metrics import classification_metrics

    mask = rows.mask(split)
    proba = np.concatenate([predict_proba(model, x) for _, x in rows.chunks(mask, flatten=True)])
    return classification_metrics(rows.labels[mask], proba)


def fit_cache_out_of_core(path: str | os.PathLike, kind: str,
                          params: dict[str, Any] | None = None, *, seed: int = 0,
                          class_weight: str = "none") -> tuple[Any, dict[str, Any]]:
    """Fit ``kind`` on a cache's training split out of core; its validation metrics."""
    rows = open_feature_rows(path)  # integrity checked a chunk at a time
    model = fit_out_of_core(rows, kind, params, seed=seed, class_weight=class_weight)
    return model, evaluate(model, rows, "validation")


def sweep_out_of_core(path: str | os.PathLike, configs: Sequence[Any], *, metric: str,
                      seed: int = 0, class_weight: str = "none") -> list[dict[str, Any]]:
    """Fit each configuration (``.kind``, ``.params``: a sweep's HeadConfig) on one cache out
    of core; returns one ``{"config", "model", "validation", "test"}`` per configuration, the
    one best on validation ``metric`` first (only it is scored on test)."""
    rows = open_feature_rows(path)
    fitted = []
    for c in configs:
        model = fit_out_of_core(rows, c.kind, c.params, seed=seed, class_weight=class_weight)
        fitted.append({"config": c, "model": model,
                       "validation": evaluate(model, rows, "validation"), "test": None})
    fitted.sort(key=lambda f: -(f["validation"].get(metric) or 0.0))
    if fitted:
        fitted[0]["test"] = evaluate(fitted[0]["model"], rows, "test")
    return fitted
