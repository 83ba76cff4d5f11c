"""The run record: what ``config.json`` and ``metrics.json`` of a run folder hold, typed.

In the spirit of Hugging Face datasets' ``DatasetInfo``: dataclasses with a schema version,
``to_dict``/``from_dict`` and ``write``/``read``. Every part keeps keys it does not know in
``extra`` and writes them back, so a record read and written again loses nothing.

Versions of ``config.json``:

* 1 (no ``schema_version``): written before the record existed; head runs had no ``stage``.
  Migrated on read (``stage`` filled in); nothing else changed shape.
* 2: this module.

A record of a newer version than this code knows is refused with one line.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Self

from pipeline.errors import PipelineError
from pipeline.fileio import json_sha256, read_json, write_json
from pipeline.heads.grid import HeadConfig
from pipeline.heads.metrics import DEFAULT_METRIC
from pipeline.heads.params import format_params

SCHEMA_VERSION = 2
CONFIG = "config.json"
METRICS = "metrics.json"
#: ``RunRecord.stage`` of a head run (``pipeline fit-head``) and of a fine-tuned run.
HEADS_STAGE = "heads"
FINETUNE_STAGE = "finetune"
#: The metrics the leaderboard shows for validation (``val_*``) and test (``test_*``).
METRIC_NAMES = ("balanced_accuracy", "accuracy", "f1_macro", "roc_auc", "log_loss")


@dataclass
class _Part:
    """A part of a record: known keys as fields, unknown keys kept in ``extra``."""

    extra: dict[str, Any] = field(default_factory=dict, kw_only=True)

    #: Fields holding another part: name -> its class (set by subclasses).
    _PARTS: ClassVar[dict[str, type[_Part]]] = {}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None, where: str = "record") -> Self:
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise PipelineError(f"{where}: expected a table, found {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known: dict[str, Any] = {k: v for k, v in data.items() if k in names}
        for name, part in cls._PARTS.items():
            if known.get(name) is None:
                known.pop(name, None)  # absent or null: the field's default
            else:
                known[name] = part.from_dict(known[name], f"{where}: {name}")
        return cls(**known, extra={k: v for k, v in data.items() if k not in names})

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "extra" or (value is None and f.name in self._PARTS):
                continue
            out[f.name] = value.to_dict() if isinstance(value, _Part) else value
        out.update(self.extra)
        return out


@dataclass
class CacheRef(_Part):
    """The feature cache a run was fitted on: where it was, its key and what it holds."""

    path: str | None = None
    key: str | None = None
    #: The cache's file name: where to look for it under a cache folder when ``path`` is gone.
    file: str | None = None
    #: The cache's ``samples_digest`` (which images, labels and splits its rows are).
    samples_digest: str | None = None
    dataset: str | None = None
    dataset_source: str | None = None
    base: str | None = None
    weights: str | None = None
    weights_id: str | None = None
    layer: str | None = None
    pooling: str | None = None
    input_size: int | None = None
    preprocessing: Any = None
    dtype: str | None = None
    feature_shape: list[int] | None = None
    class_names: list[str] = field(default_factory=list)
    n_train: int | None = None
    n_validation: int | None = None
    n_test: int | None = None
    #: Per split, the sha256 of its sorted sample ids (the split is part of the identity).
    split_ids_sha256: dict[str, str] | None = None

    @classmethod
    def coerce(cls, value: CacheRef | Mapping[str, Any] | None) -> CacheRef:
        """A :class:`CacheRef` from itself or from the ``cache`` table of ``config.json``."""
        return value if isinstance(value, CacheRef) else cls.from_dict(value, "cache")

    def to_dict(self) -> dict[str, Any]:
        # Fields added in version 2 are written only when known, so an older record read and
        # written again is unchanged.
        return {k: v for k, v in super().to_dict().items()
                if v is not None or k not in ("file", "samples_digest")}

    @property
    def file_name(self) -> str | None:
        """The cache's file name (recorded, else the last part of the recorded path)."""
        return self.file or (Path(self.path).name if self.path else None)

    def mismatch(self, info: Any) -> str | None:
        """Why a feature set (its ``FeatureSetInfo``) is not this cache, or ``None``."""
        for name, want, have in (("cache key", self.key, getattr(info, "key", None)),
                                 ("samples digest", self.samples_digest,
                                  getattr(info, "samples_digest", None))):
            if want and have != want:
                return f"its {name} {str(have)[:12]}... is not the run's {want[:12]}..."
        return None

    def locate(self, cache_dir: str | os.PathLike | None = None) -> Path:
        """The cache file this run was fitted on: the recorded path if it still holds it,
        else ``cache_dir`` (default ``$PIPELINE_CACHE_DIR`` or ``./cache``) searched by file
        name, then by key. A file that is there but holds other rows is refused."""
        from pipeline import settings
        from pipeline.cache.store import SUFFIX, read_info

        root = settings.cache_dir(cache_dir)
        name = self.file_name
        tried = [Path(self.path)] if self.path else []
        if name:
            tried.append(root / name)
        tried += sorted(p for p in root.glob(f"*{SUFFIX}") if p not in tried) \
            if self.key and root.is_dir() else []
        refused: list[str] = []
        for path in tried:
            if not path.is_file():
                continue
            try:
                why = self.mismatch(read_info(path))
            except PipelineError as e:
                why = str(e)
            if why is None:
                return path
            if path.name == name:
                refused.append(f"{path}: {why}")
        if refused:
            raise PipelineError(f"{refused[0]}; the cache was rebuilt since the run was made: "
                                "fit the head again on the current cache")
        raise PipelineError(f"the run's feature cache {name or '?'} (key "
                            f"{str(self.key)[:12]}...) is neither at {self.path} nor under "
                            f"{root}; pass --cache-dir or set $PIPELINE_CACHE_DIR to the folder "
                            "that holds it")


@dataclass
class HeadFile(_Part):
    """The fitted head (or fine-tuned model) of a run and the sha256 it is verified against."""

    kind: str | None = None
    family: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    n_classes: int | None = None
    seed: int = 0
    file: str | None = None
    sha256: str | None = None


@dataclass
class Selection(_Part):
    """How the run was chosen; the test split is never looked at.

    ``on`` is ``"validation"`` (each configuration fitted on train, scored on validation) or
    ``"cv"`` (stratified ``cv_folds``-fold cross-validation on train+validation; the chosen
    configuration then refitted on train+validation: ``refit`` is true).
    """

    metric: str | None = None
    on: str = "validation"
    refit: bool = False
    refit_params: dict[str, Any] | None = None
    best_overall: bool = False
    #: Every configuration of the same kind tried on the same cache, with its validation
    #: metrics (under CV: the means over the folds, and ``cv`` with the per-fold scores) -
    #: the points of a sweep curve.
    candidates: list[dict[str, Any]] = field(default_factory=list)
    n_configurations_total: int | None = None
    #: The folds when ``on == "cv"``.
    cv_folds: int | None = None

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        if out.get("cv_folds") is None:
            out.pop("cv_folds", None)  # a run selected on validation reads as before
        return out


@dataclass
class FinetuneInfo(_Part):
    """The fine-tuning section of a fine-tuned run (``stage == "finetune"``)."""

    source_run: str | None = None
    source_run_dir: str | None = None
    source_head_sha256: str | None = None
    source_head: dict[str, Any] | None = None
    cache_key: str | None = None
    unfreeze_from: str | None = None
    learning_rate: float | None = None
    optimizer: str | None = None
    augment: Any = None
    batch_size: int | None = None
    patience: int | None = None
    class_weight: str | None = None
    seed: int | None = None
    fold: str | None = None
    input_size: int | None = None
    unfreeze: dict[str, Any] | None = None
    batchnorm: str | None = None
    epochs_budget: int | None = None
    sessions: list[dict[str, Any]] = field(default_factory=list)
    digest: str | None = None


def _label(kind: str | None, params: dict[str, Any]) -> str:
    """``rbf_svm C=10`` – the kind with the parameters that differ from its defaults."""
    try:
        return HeadConfig(str(kind), params).label
    except PipelineError:  # a kind not registered in this installation
        return f"{kind} {format_params(params)}"


@dataclass
class RunMetrics(_Part):
    """``metrics.json``: validation and test metrics, per-epoch history, fine-tuning extras."""

    validation: dict[str, Any] = field(default_factory=dict)
    test: dict[str, Any] = field(default_factory=dict)
    history: dict[str, list[float]] | None = None
    best_epoch: int | None = None
    # Fine-tuned runs only:
    initial_validation: dict[str, Any] | None = None
    initial_max_abs_diff: float | None = None
    epochs_run: int | None = None
    resumed_from_epoch: int | None = None
    head_history: dict[str, list[float]] | None = None
    #: Chosen by cross-validation: ``{"folds", "metric", "mean", "std", "scores"}`` of the
    #: selection metric (``validation`` then holds the means over the folds of every metric).
    cv: dict[str, Any] | None = None
    #: 95% percentile-bootstrap intervals of the test metrics, ``{metric: [low, high]}``
    #: (1000 resamples of the test rows, seeded); absent on runs made before them.
    test_ci: dict[str, list[float]] | None = None

    def to_dict(self) -> dict[str, Any]:
        # Only what the run has: a head run's file holds no fine-tuning keys.
        keep = {"best_epoch"} if self.history is not None else set()
        return {k: v for k, v in super().to_dict().items() if v is not None or k in keep}

    def write(self, run_dir: str | os.PathLike) -> Path:
        return write_json(Path(run_dir) / METRICS, self.to_dict())

    @classmethod
    def read(cls, run_dir: str | os.PathLike) -> RunMetrics:
        """The run's metrics (empty if the run has no ``metrics.json``)."""
        path = Path(run_dir) / METRICS
        return cls.from_dict(read_json(path), str(path)) if path.is_file() else cls()


@dataclass
class RunRecord(_Part):
    """``config.json`` of a run folder."""

    run_id: str = ""
    created: str = ""
    stage: str = HEADS_STAGE
    cache: CacheRef = field(default_factory=CacheRef)
    head: HeadFile = field(default_factory=HeadFile)
    selection: Selection = field(default_factory=Selection)
    versions: dict[str, str] = field(default_factory=dict)
    #: The experiment the run was made by (``pipeline run``), with its ``[finetune]`` table.
    experiment: dict[str, Any] | None = None
    finetune: FinetuneInfo | None = None
    schema_version: int = SCHEMA_VERSION

    _PARTS: ClassVar[dict[str, type[_Part]]] = {
        "cache": CacheRef, "head": HeadFile, "selection": Selection, "finetune": FinetuneInfo}

    @property
    def is_finetuned(self) -> bool:
        return self.stage == FINETUNE_STAGE

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None, where: str = CONFIG) -> RunRecord:
        """The record of a ``config.json`` document; older versions are migrated."""
        if not isinstance(data, Mapping):
            raise PipelineError(f"{where}: not a run record")
        data = migrate(data, where)
        return super().from_dict(data, where)

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        if out.get("experiment") is None:
            out.pop("experiment", None)  # only runs made by an experiment have one
        return {"schema_version": out.pop("schema_version"), **out}

    def write(self, run_dir: str | os.PathLike) -> Path:
        """Write ``config.json`` into ``run_dir`` atomically."""
        return write_json(Path(run_dir) / CONFIG, self.to_dict())

    @classmethod
    def read(cls, run_dir: str | os.PathLike) -> RunRecord:
        """The record of a run folder; a missing or unreadable one is a one-line error."""
        path = Path(run_dir) / CONFIG
        if not path.is_file():
            raise PipelineError(f"{run_dir}: not a run folder (no {CONFIG})")
        return cls.from_dict(read_json(path), str(path))

    def identity(self, run_dir: Path) -> str:
        """Equal for runs of an identical configuration: same cache (key), stage, head kind
        and parameters, seed and selection (and fine-tuning settings). A run whose cache key
        is unknown is its own."""
        if not self.cache.key:
            return f"run:{run_dir.name}"
        h, s = self.head, self.selection
        return json_sha256({
            "cache": self.cache.key, "stage": self.stage, "kind": h.kind,
            "params": h.params or {}, "seed": h.seed, "metric": s.metric, "refit": s.refit,
            "finetune": self.finetune.digest if self.finetune is not None else None,
            # Only when set, so the identity of runs selected on validation is unchanged.
            **({"cv": s.cv_folds} if s.cv_folds else {})})

    def leaderboard_row(self, run_dir: Path, metrics: RunMetrics) -> dict[str, Any]:
        """The row ``pipeline runs`` shows for this run (see :mod:`pipeline.runs.leaderboard`)."""
        c, h, s = self.cache, self.head, self.selection
        val, test = metrics.validation or {}, metrics.test or {}
        row: dict[str, Any] = {
            "run_id": run_dir.name, "created": self.created or None,
            "dataset": c.dataset, "base": c.base, "layer": c.layer,
            "input_size": c.input_size, "pooling": c.pooling, "weights": c.weights,
            "head": h.kind,
            "params": format_params(h.params or {}), "config": _label(h.kind, h.params or {}),
            "selection_metric": s.metric, "best_overall": bool(s.best_overall),
            "refit": bool(s.refit), "selection": s.on, "cv_folds": s.cv_folds,
            "cv_std": (metrics.cv or {}).get("std"),
            "fit_seconds": val.get("fit_seconds"), "predict_seconds": test.get("predict_seconds"),
            "n_train": c.n_train, "n_validation": c.n_validation, "n_test": c.n_test,
            "cache_key": c.key, "cache_file": c.file_name, "cache_path": c.path,
            "run_dir": str(run_dir), "identity": self.identity(run_dir),
        }
        for m in METRIC_NAMES:
            row[f"val_{m}"] = val.get(m)
            row[f"test_{m}"] = test.get(m)
        low, high = _interval((metrics.test_ci or {}).get(DEFAULT_METRIC))
        row.update({"test_ci": f"{low:.3f}-{high:.3f}" if low is not None else None,
                    "test_ci_low": low, "test_ci_high": high,
                    "test_ci_by_metric": metrics.test_ci,
                    "test_split": (c.split_ids_sha256 or {}).get("test")})
        return row


def _interval(ci: Any) -> tuple[float, float] | tuple[None, None]:
    """``[low, high]`` of a recorded interval as numbers (anything else: no interval)."""
    if isinstance(ci, list | tuple) and len(ci) == 2 and all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in ci):
        return float(ci[0]), float(ci[1])
    return None, None


def migrate(data: Mapping[str, Any], where: str = CONFIG) -> dict[str, Any]:
    """A ``config.json`` document brought to :data:`SCHEMA_VERSION` (a copy)."""
    out = dict(data)
    version = out.get("schema_version", 1)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise PipelineError(f"{where}: schema_version {version!r} is not a version number")
    if version > SCHEMA_VERSION:
        raise PipelineError(f"{where}: run record version {version} is newer than this "
                            f"pipeline reads ({SCHEMA_VERSION}); upgrade pipeline to read it")
    if version == 1:
        # Version 1 head runs had no stage; fine-tuned runs already said "finetune".
        out.setdefault("stage", HEADS_STAGE)
    out["schema_version"] = SCHEMA_VERSION
    return out
