"""What the report shows, read from run folders and the caches they name (no drawing here).

Everything is read, never recomputed from features: a run's ``config.json``/``metrics.json``
(:mod:`pipeline.runs.record`), its ``predictions.csv`` (validation and test probabilities) and
the :class:`~pipeline.cache.info.FeatureSetInfo` of its cache when the cache is still there
(else the fields the run recorded, and "-" for the rest).
"""

from __future__ import annotations

import csv
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.cache.info import FeatureSetInfo
from pipeline.errors import PipelineError
from pipeline.runs.record import RunMetrics, RunRecord
from pipeline.runs.thumbnails import FOLDER as THUMBS
from pipeline.runs.thumbnails import thumbnail_name, top_losses
from pipeline.runs.writer import PREDICTIONS

SPLITS = ("validation", "test")
_STAMP = re.compile(r"(\d{4})(\d{2})(\d{2})-(\d{2})(\d{2})(\d{2})")


def short_id(run_id: str) -> str:
    """``11-26 01:15`` for ``20261126-011500-...`` (the full id goes in a tooltip); a
    ``-N`` suffix that tells same-second runs apart is kept."""
    m = _STAMP.match(run_id)
    if not m:
        return run_id[:16] + ("…" if len(run_id) > 16 else "")
    tail = re.search(r"-(\d{1,3})$", run_id)
    return f"{m[2]}-{m[3]} {m[4]}:{m[5]}:{m[6]}" + (f" ({tail[1]})" if tail else "")


@dataclass
class Predictions:
    """One split of ``predictions.csv``: sample ids, true and predicted class indices, and
    the probabilities ``(n, n_classes)``."""

    ids: list[str]
    labels: np.ndarray
    proba: np.ndarray

    @property
    def predicted(self) -> np.ndarray:
        return np.argmax(self.proba, axis=1) if len(self.proba) else np.zeros(0, dtype=int)


def read_predictions(run_dir: Path, class_names: list[str]) -> dict[str, Predictions]:
    """The run's validation and test predictions by split ({} if the run has none); a file
    whose classes are not the run's is refused in one line."""
    path = run_dir / PREDICTIONS
    if not path.is_file():
        return {}
    index = {c: i for i, c in enumerate(class_names)}
    rows: dict[str, list[list[str]]] = {}
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, [])
        if header[4:] != [f"p_{c}" for c in class_names] or header[:4] != [
                "id", "split", "label", "predicted"]:
            raise PipelineError(f"{path}: columns do not match the run's classes "
                                f"{class_names}")
        for row in reader:
            rows.setdefault(row[1], []).append(row)
    out = {}
    for split, rs in rows.items():
        try:
            labels = np.array([index[r[2]] for r in rs], dtype=int)
            proba = np.array([[float(v) for v in r[4:]] for r in rs], dtype=np.float64)
        except (KeyError, ValueError) as e:
            raise PipelineError(f"{path}: unreadable {split} row ({e})") from None
        out[split] = Predictions([r[0] for r in rs], labels, proba.reshape(len(rs), -1))
    return out


@dataclass
class Run:
    """A run folder read for the report."""

    run_dir: Path
    record: RunRecord
    metrics: RunMetrics
    row: dict[str, Any] = field(default_factory=dict)
    _predictions: dict[str, Predictions] | None = field(default=None, repr=False)

    @property
    def run_id(self) -> str:
        return self.run_dir.name

    @property
    def class_names(self) -> list[str]:
        return list(self.record.cache.class_names or [])

    @property
    def predictions(self) -> dict[str, Predictions]:
        if self._predictions is None:
            self._predictions = read_predictions(self.run_dir, self.class_names)
        return self._predictions

    @property
    def label(self) -> str:
        return str(self.row.get("config") or self.record.head.kind)


def load_run(run_dir: str | os.PathLike, row: dict[str, Any] | None = None) -> Run:
    run_dir = Path(run_dir)
    return Run(run_dir, RunRecord.read(run_dir), RunMetrics.read(run_dir), dict(row or {}))


# -- per class ---------------------------------------------------------------------------


def per_class(p: Predictions, class_names: list[str]) -> list[dict[str, Any]]:
    """Precision, recall, F1 and support of each class (scikit-learn's definitions; a class
    never predicted has precision 0)."""
    from sklearn.metrics import precision_recall_fscore_support

    k = len(class_names)
    prec, rec, f1, sup = precision_recall_fscore_support(
        p.labels, p.predicted, labels=list(range(k)), zero_division=0)
    return [{"class": c, "precision": float(prec[i]), "recall": float(rec[i]),
             "f1": float(f1[i]), "support": int(sup[i])} for i, c in enumerate(class_names)]


def confusion(p: Predictions, k: int) -> np.ndarray:
    cm = np.zeros((k, k), dtype=int)
    np.add.at(cm, (p.labels, p.predicted), 1)
    return cm


def confused_pairs(p: Predictions, class_names: list[str], limit: int = 10
                   ) -> list[dict[str, Any]]:
    """The off-diagonal cells with most rows: true class, predicted class, count and share
    of the true class's rows."""
    cm = confusion(p, len(class_names))
    totals = cm.sum(axis=1)
    pairs = [{"true": class_names[i], "predicted": class_names[j], "count": int(cm[i, j]),
              "share": float(cm[i, j] / totals[i])}
             for i in range(len(cm)) for j in range(len(cm)) if i != j and cm[i, j]]
    return sorted(pairs, key=lambda d: (-d["count"], d["true"], d["predicted"]))[:limit]


def losses(run: Run, split: str) -> list[dict[str, Any]]:
    """The top-losses grid of one split: the misclassified rows, highest loss first, with
    their thumbnail (a path relative to the run folder, or ``None`` for a placeholder)."""
    p = run.predictions.get(split)
    if p is None:
        return []
    names = run.class_names
    out = []
    for i in top_losses(p.labels, p.proba):
        thumb = run.run_dir / THUMBS / thumbnail_name(split, p.ids[i])
        pred = int(p.predicted[i])
        out.append({"id": p.ids[i], "true": names[int(p.labels[i])], "predicted": names[pred],
                    "p_predicted": float(p.proba[i, pred]),
                    "p_true": float(p.proba[i, int(p.labels[i])]),
                    "thumbnail": f"{THUMBS}/{thumb.name}" if thumb.is_file() else None})
    return out


# -- caches ------------------------------------------------------------------------------


def cache_info(run: Run, cache_dir: str | os.PathLike | None) -> FeatureSetInfo | None:
    """The FeatureSetInfo of the run's cache, or ``None`` when it cannot be found or read
    (the report then shows what the run recorded)."""
    from pipeline.cache.store import read_info

    try:
        return read_info(run.record.cache.locate(cache_dir))
    except (PipelineError, OSError):
        return None


def _split_counts(info: FeatureSetInfo | None, run: Run) -> list[dict[str, Any]]:
    c = run.record.cache
    if info is None or not info.split_class_counts:
        return [{"split": s, "origin": "-", "counts": {}, "total": getattr(c, f"n_{s}", None)}
                for s in ("train", "validation", "test")]
    return [{"split": s, "origin": info.split_origin.get(s, "-"), "counts": counts,
             "total": sum(counts.values())} for s, counts in info.split_class_counts.items()]


def cache_summary(run: Run, info: FeatureSetInfo | None) -> dict[str, Any]:
    """One dataset/cache card of the index page."""
    c = run.record.cache
    stats = info.extraction if info is not None else None
    speed = stats.images_per_s if stats is not None and stats.images_per_s else None
    return {
        "key": c.key or run.run_id, "dataset": c.dataset, "base": c.base, "layer": c.layer,
        "input_size": c.input_size, "pooling": c.pooling, "weights": c.weights,
        "feature_shape": "×".join(str(n) for n in c.feature_shape) if c.feature_shape else None,
        "file": c.file_name, "found": info is not None,
        "images_per_s": speed, "extracted_at": info.extracted_at if info else None,
        "n_samples": info.n_samples if info else None,
        "classes": list(c.class_names or []), "splits": _split_counts(info, run)}


# -- sweeps ------------------------------------------------------------------------------


def _numeric(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def sweep_points(run: Run) -> dict[str, Any] | None:
    """The validation score of every configuration the run was chosen among, against the
    grid parameter that varied (``None`` when fewer than two configurations were scored)."""
    sel = run.record.selection
    metric = sel.metric or "balanced_accuracy"
    cands = [c for c in sel.candidates if isinstance(c.get("validation"), dict)
             and _numeric(c["validation"].get(metric))]
    if len(cands) < 2:
        return None
    keys = sorted({k for c in cands for k in (c.get("params") or {})})
    varied = [k for k in keys if len({repr((c.get("params") or {}).get(k)) for c in cands}) > 1]
    param = next((k for k in varied if all(_numeric((c.get("params") or {}).get(k))
                                           for c in cands)), None)
    chosen = run.record.head.params or {}
    if sel.refit and sel.refit_params:
        chosen = sel.refit_params
    points = []
    for i, c in enumerate(cands):
        params = c.get("params") or {}
        x = params.get(param) if param else i
        label = " ".join(f"{k}={params.get(k)}" for k in varied) or str(i)
        is_chosen = all(params.get(k) == chosen.get(k) for k in varied) if varied else False
        points.append({"x": x, "y": float(c["validation"][metric]), "label": label,
                       "chosen": is_chosen})
    points.sort(key=lambda d: (d["x"] if param else 0, d["label"]))
    return {"kind": run.record.head.kind, "base": run.record.cache.base,
            "dataset": run.record.cache.dataset, "param": param, "metric": metric,
            "points": points, "categorical": param is None}
