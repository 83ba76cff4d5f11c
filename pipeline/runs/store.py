"""Run folders on disk: make one, save and load its head, list them.

Layout of ``<reports>/<run_id>/``::

    config.json             the run record (:class:`~pipeline.runs.record.RunRecord`): cache
                            (path, key, dataset, base ...), head kind, parameters and file
                            sha256, how it was selected
    metrics.json            validation and test metrics (+ per-epoch history for epoch heads)
    head.skops|head.keras   the fitted head (scikit-learn heads in skops' format, no pickle)
    confusion_matrix.png    validation and test confusion matrices
    learning_curve.png      accuracy and loss per epoch, train and validation (epoch heads)

Trust model: loading a run folder never runs code from it. Every file a record names must
be a plain file directly inside the run folder (no absolute path, no ``..``, no symlink out)
whose sha256 matches the recorded one (a missing or empty hash is refused, not skipped) --
that catches damage and mix-ups; what protects against a *hostile* folder (which can rewrite
the hash too) is the formats: scikit-learn heads are skops files whose every type is checked
against an allow-list before anything is built (pickles are refused), and Keras heads and
models are ``.keras`` zips loaded with ``safe_mode=True`` (no Lambda, only Keras modules).
"""

from __future__ import annotations

import datetime as _dt
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import PipelineError
from pipeline.fileio import file_sha256, utc_stamp
from pipeline.heads.registry import get_head_spec
from pipeline.heads.spec import Head
from pipeline.runs.record import CONFIG, METRICS, CacheRef, HeadFile, RunMetrics, RunRecord


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(text)).strip("_") or "x"


def new_run_dir(reports: Path, *parts: str, now: float | None = None) -> Path:
    """Create and return a fresh, uniquely named run folder ``<UTC time>-<parts...>[-n]``."""
    when = _dt.datetime.fromtimestamp(now, _dt.UTC) if now is not None else None
    name = "-".join([utc_stamp(when), *(_slug(p) for p in parts if p)])[:150]
    reports.mkdir(parents=True, exist_ok=True)
    for i in range(1, 10_000):
        path = reports / (name if i == 1 else f"{name}-{i}")
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path
    raise PipelineError(f"{reports}: cannot find a free run folder name for {name}")


def save_head(head: Head, run_dir: Path) -> HeadFile:
    """Save ``head`` into ``run_dir``; returns the ``head`` part of the run record."""
    path = head.save(run_dir)
    return HeadFile(kind=head.kind, family=head.family, params=head.params,
                    n_classes=head.n_classes, seed=head.seed, file=path.name,
                    sha256=file_sha256(path))


@dataclass
class LoadedHead:
    """A fitted head loaded from a run folder, ready to predict or to hand to fine-tuning.

    ``export()`` gives what is needed to rebuild it elsewhere: for every scikit-learn head the
    fitted ``pipeline`` and ``scaler_mean``/``scaler_scale``; for ``logreg``/``linear_svm`` also
    ``coef``/``intercept`` and ``dense_kernel``/``dense_bias`` (a Dense layer on the raw features,
    scaler folded in); for Keras heads the ``model`` (outputs logits).

    ``config`` is the run record as a plain dict (``record.to_dict()``); ``record`` the typed
    record (``None`` when the head was not loaded from a folder).
    """

    run_dir: Path
    head: Head
    class_names: list[str]
    config: Mapping[str, Any] = field(default_factory=dict)
    metrics: Mapping[str, Any] = field(default_factory=dict)
    record: RunRecord | None = None

    @property
    def kind(self) -> str:
        return self.head.kind

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.head.params)

    @property
    def cache(self) -> CacheRef:
        """The feature cache the head was fitted on."""
        if self.record is not None:
            return self.record.cache
        return CacheRef.coerce(self.config.get("cache"))

    @property
    def feature_shape(self) -> tuple[int, ...]:
        return tuple(self.cache.feature_shape or ())

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
                    cache=self.cache.to_dict())


_SHA256 = re.compile(r"[0-9a-f]{64}")


def inside_run(run_dir: Path, name: Any, what: str = "file") -> Path:
    """``run_dir / name`` for a file name a run record gives, refused unless it is a plain
    file directly inside the run folder: no absolute path, no ``..``, no sub-folder, no
    symlink (which could point anywhere)."""
    where = run_dir / CONFIG
    if not isinstance(name, str) or not name:
        raise PipelineError(f"{where}: names no {what}; refusing to load the run")
    if Path(name).is_absolute() or Path(name).name != name or name in (".", ".."):
        raise PipelineError(f"{where}: the {what} {name!r} is not a file name inside the run "
                            "folder; refusing to load anything outside it")
    path = run_dir / name
    if path.is_symlink():
        raise PipelineError(f"{path}: the {what} is a symbolic link; refusing to follow it "
                            "out of the run folder")
    if not path.is_file():
        raise PipelineError(f"{run_dir}: {what} {name!r} is missing")
    return path


def verified_file(run_dir: Path, info: HeadFile, what: str = "head file") -> Path:
    """The run's head (or model) file, refused if it is not a plain file inside the run
    folder, if the record has no sha256 for it, or if the sha256 differs."""
    run_dir = Path(run_dir)
    if not info.kind:
        raise PipelineError(f"{run_dir / CONFIG}: incomplete run record (no head kind)")
    path = inside_run(run_dir, info.file, what)
    name, digest = path.name, info.sha256
    if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
        raise PipelineError(f"{run_dir / CONFIG}: no valid sha256 recorded for the {what} "
                            f"{name!r}; refusing to load an unchecked file")
    actual = file_sha256(path)
    if actual != digest:
        raise PipelineError(f"{path}: sha256 {actual[:12]}... does not match the recorded "
                            f"{digest[:12]}...; refusing to load a modified {what}")
    return path


def load_head(run_dir: str | os.PathLike) -> LoadedHead:
    """Load the fitted head of a run folder, refusing a file whose sha256 does not match."""
    run_dir = Path(run_dir)
    record = RunRecord.read(run_dir)
    info, class_names = record.head, list(record.cache.class_names or [])
    if not class_names:
        raise PipelineError(f"{run_dir / CONFIG}: incomplete run record")
    spec = get_head_spec(str(info.kind))
    if str(info.file or "").endswith(".joblib"):
        raise PipelineError(f"{run_dir}: its head is a pickle (head.joblib, written by an older "
                            "version) and pickles are never loaded; refit it with "
                            "`pipeline fit-head`")
    want = Path(spec.cls.filename).suffix
    if Path(str(info.file or "")).suffix != want:
        raise PipelineError(f"{run_dir / CONFIG}: a {info.kind!r} head is stored as a {want} "
                            f"file, the record names {info.file!r}; refusing to load it")
    path = verified_file(run_dir, info)
    params = spec.resolve(info.params or {})
    head = spec.cls.load(path, str(info.kind), params, n_classes=len(class_names))
    head.seed = int(info.seed or 0)
    metrics = RunMetrics.read(run_dir)
    return LoadedHead(run_dir=run_dir, head=head, class_names=class_names,
                      config=record.to_dict(), metrics=metrics.to_dict(), record=record)


def iter_runs(reports: str | os.PathLike) -> Iterator[tuple[Path, RunRecord, RunMetrics]]:
    """``(run_dir, record, metrics)`` of every readable, finished run folder under ``reports``."""
    reports = Path(reports)
    if not reports.is_dir():
        return
    for cfg in sorted(reports.glob(f"*/{CONFIG}")):
        if not (cfg.parent / METRICS).is_file():
            continue  # a run being written
        try:
            record = RunRecord.read(cfg.parent)
            metrics = RunMetrics.read(cfg.parent)
        except PipelineError:
            continue  # unreadable, or not a run folder
        if record.head.kind:
            yield cfg.parent, record, metrics
