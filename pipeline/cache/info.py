"""The feature-set record: what an HDF5 feature set holds and how it was made.

In the spirit of Hugging Face datasets' ``DatasetInfo``: one dataclass with a schema version,
written as JSON into the file's ``attrs["info"]`` and read back typed. Files written before
the record existed keep the same fields as free JSON in ``attrs["meta"]``; they are migrated
on read. A record from a newer schema, or a file whose metadata cannot be read, is refused
with one line saying how to rebuild it.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any, Self

import h5py

from pipeline.errors import PipelineError
from pipeline.fileio import dumps_json

#: Version of the record below; files without one hold the previous free ``meta`` JSON.
SCHEMA_VERSION = 1
#: Version of the HDF5 layout (datasets features/ids/sha256/labels/split/skipped). It is part
#: of every options key, so changing it renames every cache file.
FORMAT_VERSION = 1
INFO_ATTR = "info"
LEGACY_ATTR = "meta"
# Mirrored as plain attributes for h5ls/h5dump users; the record is the source of truth.
MIRRORED = ("base", "pooling", "layer", "input_size", "key", "format_version", "schema_version")
REBUILD = "rebuild it with `pipeline extract DATA --base BASE` (same options)"


def rebuild_hint(info: FeatureSetInfo | None) -> str:
    """How to rebuild a feature set: its own dataset and base when the record names them."""
    if info is None or not info.dataset_source or not info.base:
        return REBUILD
    return f"rebuild it with `pipeline extract {info.dataset_source} --base {info.base}` " \
        "(same options)"


@dataclass(frozen=True)
class ExtractionStats:
    """How the extraction that wrote a feature set went (not part of any key)."""

    new_rows: int = 0
    reused_rows: int = 0
    seconds: float = 0.0
    images_per_s: float = 0.0
    forward_seconds: float = 0.0
    batch_size: int | None = None


@dataclass(frozen=True)
class FeatureSetInfo:
    """Everything about a feature set except its rows.

    ``class_names`` is required; the extractor fields are those of
    ``Extractor.describe()``; ``n_samples``, ``feature_shape``, ``dtype``,
    ``features_sha256``, ``rows_digest`` and ``format_version`` are filled in by the writer
    from the rows.
    """

    class_names: list[str]
    # the dataset
    dataset: str | None = None
    dataset_source: str | None = None
    dataset_root: str | None = None  # where the images were; not part of any key
    dataset_options: dict[str, Any] = field(default_factory=dict)
    #: Short hash of what the dataset is (its resolved source path, or the builtin name and
    #: options): part of the file name, so two datasets never share a cache file.
    dataset_identity: str | None = None
    # the extractor (Extractor.describe())
    base: str | None = None
    weights: str | None = None
    weights_id: str | None = None
    weights_source: str | None = None
    layer: str | None = None
    pooling: str | None = None
    input_size: int | None = None
    preprocessing: str | None = None
    resize: str | None = None
    #: What ran the forward pass of the rows extracted last (tensorflow | onnxruntime |
    #: openvino) and in which precision. Not part of the key for float32 (the runtimes agree
    #: within float tolerance); files from before runtimes existed were TensorFlow's.
    runtime: str = "tensorflow"
    precision: str = "float32"
    # keys and splits
    dtype: str | None = None
    options_key: str | None = None
    key: str | None = None
    samples_digest: str | None = None
    split_fractions: list[float] | None = None
    split_seed: int | None = None
    #: Per split: "given" by the dataset, "carved" out of its train split, or "assigned".
    split_origin: dict[str, str] = field(default_factory=dict)
    #: ``{split: {class name: rows}}`` of the rows in the file.
    split_class_counts: dict[str, dict[str, int]] = field(default_factory=dict)
    # provenance
    versions: dict[str, str] = field(default_factory=dict)
    extracted_at: str | None = None  # UTC, ISO 8601
    extraction: ExtractionStats | None = None
    # filled in from the rows by the writer
    n_samples: int = 0
    feature_shape: list[int] = field(default_factory=list)
    features_sha256: str | None = None
    #: Digest of the rows (ids, content hashes, labels, splits, class names), checked on
    #: every load; files written before it existed have none.
    rows_digest: str | None = None
    n_skipped: int = 0
    format_version: int = FORMAT_VERSION
    schema_version: int = SCHEMA_VERSION
    # where the new rows were computed: None for the local engine; for Ray
    # {"name": "ray", "address", "nodes", "workers", "cpus_per_worker", "gpus_per_worker",
    # "devices", "ray"} (pipeline/engines/ray_engine.py engine_record)
    engine: dict[str, Any] | None = None

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, strict: bool = False) -> Self:
        """A record from plain values. Unknown keys are ignored (as ``DatasetInfo`` does) or,
        with ``strict``, a ``ValueError``; ``class_names`` is required."""
        names = cls.field_names()
        unknown = sorted(set(data) - set(names))
        if strict and unknown:
            raise ValueError(f"unknown feature-set metadata fields {unknown}; expected {names}")
        if "class_names" not in data:
            raise ValueError("feature-set metadata must hold class_names")
        values = {k: v for k, v in data.items() if k in names}
        stats = values.get("extraction")
        if isinstance(stats, dict):
            stat_names = {f.name for f in dataclasses.fields(ExtractionStats)}
            values["extraction"] = ExtractionStats(**{k: v for k, v in stats.items()
                                                      if k in stat_names})
        values["class_names"] = list(values["class_names"])
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values (the extraction stats as a nested dict)."""
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> Self:
        return dataclasses.replace(self, **changes)

    def write(self, f: h5py.File) -> None:
        """Store the record in an open, writable HDF5 file."""
        data = self.to_dict()
        f.attrs[INFO_ATTR] = dumps_json(data, indent=None)
        for key in MIRRORED:
            if data.get(key) is not None:
                f.attrs[key] = data[key]

    @classmethod
    def read(cls, f: h5py.File, path: str | os.PathLike | None = None) -> Self:
        """The record of an open HDF5 feature set, migrating the previous format."""
        where = path if path is not None else f.filename
        raw, legacy = f.attrs.get(INFO_ATTR), False
        if raw is None:
            raw, legacy = f.attrs.get(LEGACY_ATTR), True
        if raw is None:
            raise PipelineError(f"{where}: not a feature cache written by pipeline (no metadata)")
        try:
            data = json.loads(raw)
        except ValueError:
            raise PipelineError(f"{where}: corrupt feature cache metadata; {REBUILD}") from None
        if not isinstance(data, dict):
            raise PipelineError(f"{where}: corrupt feature cache metadata; {REBUILD}")
        return cls._from_stored(data, legacy, where)

    @classmethod
    def _from_stored(cls, data: dict[str, Any], legacy: bool, where: Any) -> Self:
        version = 0 if legacy else data.get("schema_version")
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise PipelineError(f"{where}: feature-set record of schema {version!r}, newer than "
                                f"this pipeline reads ({SCHEMA_VERSION}); upgrade pipeline or "
                                f"{REBUILD}")
        if version == 0:
            data = migrate_legacy(data)
        try:
            return cls.from_dict(data)
        except (TypeError, ValueError):
            raise PipelineError(f"{where}: unreadable feature-set metadata; {REBUILD}") from None


def migrate_legacy(meta: dict[str, Any]) -> dict[str, Any]:
    """The free ``meta`` JSON of format-version-1 files, as a schema-1 record: the fields are
    the same, only the schema version is new."""
    return dict(meta, schema_version=SCHEMA_VERSION)
