"""The HDF5 feature-set file: one file per (dataset, base, feature options).

Layout (format version 1)::

    features   (N, *feature_shape)  float32|float16; spatial maps chunked + lzf-compressed
    ids        (N,)  utf-8 str      sample id = path relative to the dataset root
    sha256     (N,)  ascii S64      content hash of the image bytes
    labels     (N,)  int32          index into info.class_names
    split      (N,)  ascii S10      "train" | "validation" | "test"
    skipped/ids, skipped/reasons    files that could not be decoded (never get a row)
    attrs["info"]                   the record (:class:`~pipeline.cache.info.FeatureSetInfo`):
                                    class names, base, weights identity, layer, pooling,
                                    input size, preprocessing, dtype, versions, key, timings ...

A file is written to a temporary name and renamed into place only when complete, so a
file under its final name is always whole. ``info.rows_digest`` (ids, content hashes, labels,
splits, class names) and ``info.features_sha256`` are stored at write time and checked on
every load, so a flipped byte is refused, never read as data.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import h5py
import numpy as np

from pipeline.cache.info import FORMAT_VERSION, FeatureSetInfo, rebuild_hint
from pipeline.cache.key import dataset_digest
from pipeline.data.splits import SPLITS
from pipeline.errors import PipelineError
from pipeline.fileio import atomic_path

__all__ = ["COMPRESSIONS", "FORMAT_VERSION", "SPLITS", "SUFFIX", "FeatureRows", "FeatureSet",
           "features_digest", "integrity_problems", "load_feature_set", "open_feature_rows",
           "read_info", "read_meta", "verify_feature_set", "write_feature_rows",
           "write_feature_set"]

SUFFIX = ".h5"


class _Rows:
    """What a feature set's rows answer without their features."""

    ids: np.ndarray
    split: np.ndarray
    info: FeatureSetInfo

    @property
    def class_names(self) -> list[str]:
        return list(self.info.class_names)

    def __len__(self) -> int:
        return len(self.ids)

    def mask(self, split: str) -> np.ndarray:
        if split not in SPLITS:
            raise PipelineError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
        return self.split == split


@dataclass
class FeatureSet(_Rows):
    """Features of one dataset under one base, with everything aligned row by row."""

    features: np.ndarray
    labels: np.ndarray
    ids: np.ndarray
    sha256: np.ndarray
    split: np.ndarray
    info: FeatureSetInfo
    skipped: list[tuple[str, str]] = field(default_factory=list)
    path: Path | None = None

    @property
    def meta(self) -> MappingProxyType[str, Any]:
        """The record as a read-only dict (for code that still reads ``meta["key"]``)."""
        return MappingProxyType(self.info.to_dict())

    @property
    def feature_shape(self) -> tuple[int, ...]:
        return tuple(self.features.shape[1:])

    def xy(self, split: str, flatten: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Features and labels of one split; spatial maps are flattened to rows by default."""
        m = self.mask(split)
        x = self.features[m]
        if flatten:
            x = x.reshape(len(x), int(np.prod(self.feature_shape)))
        return x, self.labels[m]


def features_digest(features: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(features).tobytes()).hexdigest()


def write_feature_set(
    path: str | os.PathLike,
    *,
    features: np.ndarray,
    labels: Sequence[int] | np.ndarray,
    ids: Sequence[str],
    sha256: Sequence[str],
    split: Sequence[str],
    meta: Mapping[str, Any] | None = None,
    info: FeatureSetInfo | None = None,
    skipped: Sequence[tuple[str, str]] = (),
    compression: str = "auto",
) -> Path:
    """Write a complete feature set atomically (temporary file, then rename).

    The record is ``info``, or ``meta`` as plain values (it must hold ``class_names``;
    unknown fields are a ``ValueError``). The row count, feature shape, dtype, a digest of
    the features and the format version are filled in here.

    ``compression``: ``auto`` (lzf for rows over 16 KiB, i.e. spatial maps, raw otherwise),
    ``lzf``, ``gzip`` or ``none``.
    """
    if (meta is None) == (info is None):
        raise ValueError("give the record as exactly one of meta= or info=")
    info = info if info is not None else FeatureSetInfo.from_dict(meta, strict=True)
    features = np.asarray(features)
    if len(features) != len(ids):
        raise ValueError("features, labels, ids, sha256 and split must have the same length")
    return write_feature_rows(path, feature_shape=features.shape[1:], dtype=features.dtype,
                              chunks=[features], labels=labels, ids=ids, sha256=sha256,
                              split=split, info=info, skipped=skipped, compression=compression)


def write_feature_rows(
    path: str | os.PathLike,
    *,
    feature_shape: Sequence[int],
    dtype: Any,
    chunks: Iterable[np.ndarray],
    labels: Sequence[int] | np.ndarray,
    ids: Sequence[str],
    sha256: Sequence[str],
    split: Sequence[str],
    info: FeatureSetInfo,
    skipped: Sequence[tuple[str, str]] = (),
    compression: str = "auto",
) -> Path:
    """:func:`write_feature_set` with the features given as consecutive row chunks, in row
    order (so memory holds one chunk, never every row); the features checksum is computed as
    the chunks go, equal to the one of the whole array. Same file, same record."""
    n, shape, dtype = len(ids), tuple(int(d) for d in feature_shape), np.dtype(dtype)
    if not (len(labels) == len(sha256) == len(split) == n):
        raise ValueError("features, labels, ids, sha256 and split must have the same length")
    bad = sorted(set(split) - set(SPLITS))
    if bad:
        raise ValueError(f"unknown split names {bad}; expected {SPLITS}")
    layout = _layout(n, shape, dtype.itemsize, compression)
    digest = hashlib.sha256()
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        data = f.create_dataset("features", shape=(n, *shape), dtype=dtype, **layout)
        at = 0
        for chunk in chunks:
            chunk = np.ascontiguousarray(chunk, dtype=dtype)
            if chunk.shape[1:] != shape or at + len(chunk) > n:
                raise ValueError(f"feature chunk {chunk.shape} at row {at} does not fit "
                                 f"{n} rows of shape {shape}")
            data[at:at + len(chunk)] = chunk
            digest.update(chunk.data)
            at += len(chunk)
        if at != n:
            raise ValueError(f"{at} feature rows for {n} ids")
        _strings(f, "ids", ids)
        f.create_dataset("sha256", data=np.array(list(sha256), dtype="S64"))
        f.create_dataset("labels", data=np.asarray(labels, dtype=np.int32))
        f.create_dataset("split", data=np.array(list(split), dtype="S10"))
        _strings(f, "skipped/ids", [s[0] for s in skipped])
        _strings(f, "skipped/reasons", [s[1] for s in skipped])
        info.replace(format_version=FORMAT_VERSION, n_samples=n,
                     features_sha256=digest.hexdigest(),
                     rows_digest=dataset_digest(ids, sha256, labels, split,
                                                list(info.class_names)),
                     feature_shape=list(shape), dtype=str(dtype)).write(f)
    return Path(path)


def _strings(f: h5py.File, name: str, values: Sequence[str]) -> None:
    """Variable-length UTF-8 strings. A file name that is not valid UTF-8 (decoded by Python
    with surrogate escapes) is stored as its bytes on disk and read back the same, so its id
    still names the file (read with ``asstr(errors="surrogateescape")``)."""
    data = [str(v).encode("utf-8", "surrogateescape") for v in values]
    f.create_dataset(name, data=np.array(data, dtype=object), dtype=h5py.string_dtype("utf-8"))


COMPRESSIONS = ("auto", "lzf", "gzip", "none")
# Pooled vectors barely compress (lzf kept 57-70% of ELPV's Lite0 features) and decompressing
# made whole-set reads 25x slower than np.load (benchmarks/run.py, cache reads); spatial maps
# after ReLU are mostly zeros and big, so there compression pays.
AUTO_COMPRESS_ROW_BYTES = 16 * 1024


def _layout(n: int, shape: tuple[int, ...], itemsize: int, compression: str) -> dict[str, Any]:
    if compression not in COMPRESSIONS:
        raise PipelineError(f"unknown compression {compression!r}; expected one of "
                            f"{', '.join(COMPRESSIONS)}")
    row_bytes = int(np.prod(shape)) * itemsize
    if compression == "auto":
        compression = "lzf" if row_bytes > AUTO_COMPRESS_ROW_BYTES else "none"
    if compression == "none" or n == 0:
        return {}
    chunk_rows = max(1, min(n, (1 << 20) // max(1, row_bytes)))
    return {"chunks": (chunk_rows, *shape), "compression": compression}


def read_info(path: str | os.PathLike) -> FeatureSetInfo:
    """The record of a feature-set file, without loading the features."""
    with _open(path) as f:
        return FeatureSetInfo.read(f, path)


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    """:func:`read_info` as plain values."""
    return read_info(path).to_dict()


def load_feature_set(path: str | os.PathLike, *, mmap_features: bool = False) -> FeatureSet:
    """Load a feature-set file written by :func:`write_feature_set` (or by ``extract``).

    Every load checks the rows (ids, content hashes, labels, splits, class names) against the
    digest stored when the file was written, and the features against their checksum; a file
    that fails is a one-line :class:`PipelineError` saying how to rebuild it.
    """
    fs = _read(Path(path))
    problems = integrity_problems(fs)
    if problems:
        raise PipelineError(f"{path}: corrupt feature cache ({'; '.join(problems)}); "
                            f"{rebuild_hint(fs.info)}")
    return fs


def integrity_problems(fs: FeatureSet) -> list[str]:
    """The stored digests that the rows or the features no longer match (files written before
    the rows digest existed are checked on their features only)."""
    problems = []
    if fs.info.rows_digest is not None and rows_digest(fs) != fs.info.rows_digest:
        problems.append("ids, labels, content hashes or splits do not match their stored digest")
    if fs.info.features_sha256 is not None and \
            features_digest(fs.features) != fs.info.features_sha256:
        problems.append("features do not match their stored checksum")
    return problems


def rows_digest(fs: FeatureSet | FeatureRows) -> str:
    return dataset_digest(fs.ids, fs.sha256, fs.labels, fs.split, fs.class_names)


def _decoded(values: np.ndarray) -> np.ndarray:
    """Fixed-width byte strings as text; a byte that is not ASCII survives as an escape (it
    then fails the rows digest instead of crashing the read)."""
    return np.array([bytes(v).decode("utf-8", "surrogateescape") for v in values], dtype=str)


def _read(path: Path) -> FeatureSet:
    """The rows and record of a file, without the integrity checks."""
    rows = _read_rows(path)
    with _open(path) as f:
        try:
            features = f["features"][()]
        except (KeyError, OSError, ValueError, TypeError) as e:
            raise PipelineError(f"{path}: not a complete feature cache ({e}); "
                                f"{rebuild_hint(rows.info)}") from None
    if len(features) != len(rows.ids):
        raise PipelineError(f"{path}: corrupt feature cache (datasets of different lengths); "
                            f"{rebuild_hint(rows.info)}")
    return FeatureSet(features=features, labels=rows.labels, ids=rows.ids, sha256=rows.sha256,
                      split=rows.split, info=rows.info, skipped=rows.skipped, path=path)


#: About how many bytes of features one chunked read or write holds.
CHUNK_BYTES = 8 << 20


@dataclass
class FeatureRows(_Rows):
    """A feature set's rows without its features (ids, hashes, labels, splits, record), and
    its features read in chunks of bounded size: for files larger than memory."""

    labels: np.ndarray
    ids: np.ndarray
    sha256: np.ndarray
    split: np.ndarray
    info: FeatureSetInfo
    skipped: list[tuple[str, str]]
    path: Path
    n_features: int = 0

    @property
    def feature_shape(self) -> tuple[int, ...]:
        return tuple(self.info.feature_shape)

    @property
    def row_bytes(self) -> int:
        return int(np.prod(self.feature_shape)) * np.dtype(self.info.dtype or "float32").itemsize

    def chunk_rows(self, max_bytes: int | None = None) -> int:
        """Rows per chunk so that one chunk of features holds about ``max_bytes`` (default
        :data:`CHUNK_BYTES`)."""
        return max(1, (max_bytes or CHUNK_BYTES) // max(1, self.row_bytes))

    def chunks(self, rows: np.ndarray | None = None, *, max_bytes: int | None = None,
               flatten: bool = False) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(row indices, features)`` in file order, a chunk at a time; ``rows`` (a boolean
        mask or sorted indices) keeps only those rows."""
        step = self.chunk_rows(max_bytes)
        keep = None if rows is None else np.asarray(rows)
        if keep is not None and keep.dtype == bool:
            keep = np.flatnonzero(keep)
        with _open(self.path) as f:
            data = f["features"]
            for start in range(0, len(self), step):
                idx = np.arange(start, min(start + step, len(self)))
                if keep is not None:
                    idx = idx[np.isin(idx, keep)]
                    if not len(idx):
                        continue
                x = data[idx[0]:idx[-1] + 1][idx - idx[0]]
                yield idx, (x.reshape(len(x), -1) if flatten else x)

    def features_problem(self) -> str | None:
        """Whether the features match their stored checksum, read a chunk at a time."""
        if self.info.features_sha256 is None:
            return None
        digest = hashlib.sha256()
        for _, x in self.chunks():
            digest.update(np.ascontiguousarray(x).data)
        if digest.hexdigest() != self.info.features_sha256:
            return "features do not match their stored checksum"
        return None


def open_feature_rows(path: str | os.PathLike, *, verify: bool = True) -> FeatureRows:
    """A feature-set file's rows, its features left on disk (read with
    :meth:`FeatureRows.chunks`). With ``verify`` (the default) the same integrity checks as
    :func:`load_feature_set` run first, reading the features a chunk at a time."""
    rows = _read_rows(Path(path))
    if not verify:
        return rows
    problems = []
    if rows.info.rows_digest is not None and rows_digest(rows) != rows.info.rows_digest:
        problems.append("ids, labels, content hashes or splits do not match their stored digest")
    problem = rows.features_problem()
    if problem:
        problems.append(problem)
    if problems:
        raise PipelineError(f"{path}: corrupt feature cache ({'; '.join(problems)}); "
                            f"{rebuild_hint(rows.info)}")
    return rows


def _read_rows(path: Path) -> FeatureRows:
    """Everything of a file but its features, without the integrity checks."""
    with _open(path) as f:
        info = FeatureSetInfo.read(f, path)
        try:
            n_features = len(f["features"])
            ids = f["ids"].asstr(errors="surrogateescape")[()]
            sha = _decoded(f["sha256"][()])
            labels = f["labels"][()].astype(np.int64)
            split = _decoded(f["split"][()])
            skipped = list(zip(f["skipped/ids"].asstr(errors="surrogateescape")[()],
                               f["skipped/reasons"].asstr(errors="surrogateescape")[()],
                               strict=True))
        except (KeyError, OSError, ValueError, TypeError) as e:
            raise PipelineError(f"{path}: not a complete feature cache ({e}); "
                                f"{rebuild_hint(info)}") from None
    if not (n_features == len(ids) == len(sha) == len(labels) == len(split)):
        raise PipelineError(f"{path}: corrupt feature cache (datasets of different lengths); "
                            f"{rebuild_hint(info)}")
    return FeatureRows(labels=labels, ids=np.asarray(ids, dtype=object), sha256=sha,
                       split=split, info=info, skipped=skipped, path=path,
                       n_features=n_features)


def verify_feature_set(path: str | os.PathLike) -> list[str]:
    """Problems found in a feature-set file; an empty list means it is whole and consistent:
    its rows and features match the digests stored when it was written."""
    try:
        fs = _read(Path(path))
    except PipelineError as e:
        return [str(e)]
    problems = integrity_problems(fs)
    if fs.info.format_version != FORMAT_VERSION:
        problems.append(f"format version {fs.info.format_version} != {FORMAT_VERSION}")
    if len(set(fs.ids)) != len(fs.ids):
        problems.append("duplicate sample ids")
    n_classes = len(fs.class_names)
    if len(fs.labels) and (fs.labels.min() < 0 or fs.labels.max() >= n_classes):
        problems.append("labels outside the class list")
    if set(fs.split.tolist()) - set(SPLITS):
        problems.append("unknown split names")
    if not np.isfinite(fs.features).all():
        problems.append("non-finite feature values")
    if any(len(h) != 64 for h in fs.sha256):
        problems.append("malformed content hashes")
    return problems


def _open(path: str | os.PathLike) -> h5py.File:
    path = Path(path)
    if not path.exists():
        raise PipelineError(f"{path}: no such feature cache")
    try:
        return h5py.File(path, "r")
    except OSError as e:
        raise PipelineError(f"{path}: not a readable HDF5 feature cache ({e})") from None
