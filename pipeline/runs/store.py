"""Run folders: one fitted head with its configuration, metrics and plots.

Layout of ``<reports>/<run_id>/``::

    config.json             cache (path, key, dataset, base ...), head kind and parameters,
                            the head file's sha256, how it was selected
    metrics.json            validation and test metrics (+ per-epoch history for epoch heads)
    head.joblib|head.keras  the fitted head
    confusion_matrix.png    validation and test confusion matrices
    learning_curve.png      accuracy and loss per epoch, train and validation (epoch heads)

A head file is loaded only after its sha256 matches the one recorded in ``config.json`` (a
joblib file is a pickle: loading an altered one could run arbitrary code). Keras heads are
additionally loaded with ``safe_mode=True``.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.data.samples import file_sha256
from pipeline.errors import PipelineError
from pipeline.heads.base import Head, get_head_spec

CONFIG = "config.json"
METRICS = "metrics.json"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(text)).strip("_") or "x"


def new_run_dir(reports: Path, *parts: str, now: float | None = None) -> Path:
    """Create and return a fresh, uniquely named run folder ``<time>-<parts...>[-n]``."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now if now is not None else time.time()))
    name = "-".join([stamp, *(_slug(p) for p in parts if p)])[:150]
    reports.mkdir(parents=True, exist_ok=True)
    for i in range(1, 10_000):
        path = reports / (name if i == 1 else f"{name}-{i}")
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path
    raise PipelineError(f"{reports}: cannot find a free run folder name for {name}")


def _json_default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, tuple | set):
        return list(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def json_safe(o: Any) -> Any:
    """JSON-safe: NaN/inf become null, numpy scalars and tuples plain Python."""
    if isinstance(o, dict):
        return {str(k): json_safe(v) for k, v in o.items()}
    if isinstance(o, list | tuple):
        return [json_safe(v) for v in o]
    if isinstance(o, np.generic):
        o = o.item()
    if isinstance(o, float) and not math.isfinite(o):
        return None
    return o


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` atomically as JSON (non-finite numbers become null)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(json_safe(data), indent=2, default=_json_default,
                              allow_nan=False) + "\n")
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise PipelineError(f"{path}: missing") from None
    except ValueError:
        raise PipelineError(f"{path}: not valid JSON") from None


def save_head(head: Head, run_dir: Path) -> dict[str, Any]:
    """Save ``head`` into ``run_dir``; returns the ``head`` section of ``config.json``."""
    path = head.save(run_dir)
    return {"kind": head.kind, "family": head.family, "params": head.params,
            "n_classes": head.n_classes, "seed": head.seed, "file": path.name,
            "sha256": file_sha256(path)}


@dataclass
class LoadedHead:
    """A fitted head loaded from a run folder, ready to predict or to hand to fine-tuning.

    ``export()`` gives what is needed to rebuild it elsewhere: for every scikit-learn head the
    fitted ``pipeline`` and ``scaler_mean``/``scaler_scale``; for ``logreg``/``linear_svm`` also
    ``coef``/``intercept`` and ``dense_kernel``/``dense_bias`` (a Dense layer on the raw features,
    scaler folded in); for Keras heads the ``model`` (outputs logits).
    """

    run_dir: Path
    head: Head
    class_names: list[str]
    config: dict[str, Any]
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return self.head.kind

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.head.params)

    @property
    def feature_shape(self) -> tuple[int, ...]:
        return tuple(self.config["cache"].get("feature_shape") or ())

    def _rows(self, features: np.ndarray) -> np.ndarray:
        x = np.asarray(features)
        x = x.reshape(len(x), -1)
        want = int(np.prod(self.feature_shape)) if self.feature_shape else x.shape[1]
        if x.shape[1] != want:
            raise PipelineError(f"run {self.run_dir.name}: features have {x.shape[1]} values per "
                                f"row, the head expects {want} (shape {self.feature_shape})")
        return x

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """Class probabilities ``(n, n_classes)`` for features of shape ``(n, *feature_shape)``."""
        return self.head.predict_proba(self._rows(features))

    def predict(self, features: np.ndarray) -> np.ndarray:
        return np.argmax(self.predict_proba(features), axis=1)

    def export(self) -> dict[str, Any]:
        return dict(self.head.export(), class_names=self.class_names,
                    cache=self.config.get("cache", {}))


def load_head(run_dir: str | os.PathLike) -> LoadedHead:
    """Load the fitted head of a run folder, refusing a file whose sha256 does not match."""
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG).is_file():
        raise PipelineError(f"{run_dir}: not a run folder (no {CONFIG})")
    config = read_json(run_dir / CONFIG)
    try:
        info = config["head"]
        kind, name, digest = info["kind"], info["file"], info["sha256"]
        class_names = list(config["cache"]["class_names"])
    except (KeyError, TypeError):
        raise PipelineError(f"{run_dir / CONFIG}: incomplete run record") from None
    path = run_dir / name
    if Path(name).name != name or not path.is_file():
        raise PipelineError(f"{run_dir}: head file {name!r} is missing")
    actual = file_sha256(path)
    if actual != digest:
        raise PipelineError(f"{path}: sha256 {actual[:12]}... does not match the recorded "
                            f"{str(digest)[:12]}...; refusing to load a modified head file")
    spec = get_head_spec(kind)
    params = spec.resolve(info.get("params") or {})
    head = spec.cls.load(path, kind, params, n_classes=len(class_names))
    head.seed = int(info.get("seed", 0))
    metrics = read_json(run_dir / METRICS) if (run_dir / METRICS).is_file() else {}
    return LoadedHead(run_dir=run_dir, head=head, class_names=class_names, config=config,
                      metrics=metrics)


def iter_runs(reports: str | os.PathLike) -> Iterator[tuple[Path, dict[str, Any], dict[str, Any]]]:
    """``(run_dir, config, metrics)`` of every readable run folder under ``reports``."""
    reports = Path(reports)
    if not reports.is_dir():
        return
    for cfg in sorted(reports.glob(f"*/{CONFIG}")):
        try:
            config = json.loads(cfg.read_text())
            metrics = json.loads((cfg.parent / METRICS).read_text())
        except (OSError, ValueError):
            continue  # a run being written, or not a run folder
        if isinstance(config, dict) and isinstance(metrics, dict) and "head" in config:
            yield cfg.parent, config, metrics
