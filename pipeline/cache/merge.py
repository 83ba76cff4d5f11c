"""The final merge of a feature set, in bounded memory.

Rows come from two places: the old file under the final name (reused rows) and the work
shards (rows computed by this run or by an interrupted one, by any engine). The new file
holds them in the order of its samples, which neither source follows. The merge therefore
goes in two streaming passes, holding one chunk of features at a time:

1. stage: read each source once, in its own order (the old file a chunk at a time, each
   shard once), appending every needed row to a raw staging file beside the cache and
   remembering where each content hash went;
2. write: for each chunk of output rows, read their rows back from the staging file
   (positioned reads, one per run of consecutive rows) and append them to the HDF5 file,
   whose features checksum is computed as the chunks go.

The staging file is a hidden temporary (``.<file>.<random>.staging.tmp``) removed when the
merge ends, and by the next writer of the cache if the run was killed.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from pipeline.cache import store
from pipeline.cache.store import FeatureRows, write_feature_rows
from pipeline.cache.work import WorkShards
from pipeline.errors import PipelineError


class RowSources:
    """Where each known content hash's features are: the old file or a shard."""

    def __init__(self, shards: WorkShards):
        self.shards = shards
        self.old: FeatureRows | None = None
        self.in_old: dict[str, int] = {}
        self.in_shards: dict[str, str] = {}

    def add_old(self, rows: FeatureRows) -> None:
        self.old = rows
        for i, s in enumerate(rows.sha256.tolist()):
            self.in_old.setdefault(s, i)

    def add_shard(self, name: str, sha256: Sequence[str]) -> None:
        for s in sha256:
            self.in_shards.setdefault(s, name)

    def index_shards(self) -> None:
        for name, shas in self.shards.index():
            self.add_shard(name, shas.tolist())

    def __contains__(self, sha256: str) -> bool:
        return sha256 in self.in_old or sha256 in self.in_shards

    def __len__(self) -> int:
        return len(self.in_old.keys() | self.in_shards.keys())


def merge_into(path: Path, sources: RowSources, *, order: Sequence[str],
               feature_shape: Sequence[int], dtype: Any, **file: Any) -> Path:
    """Write the feature set at ``path`` with one row per hash of ``order`` (every one must
    be in ``sources``); ``file`` holds the other arguments of
    :func:`~pipeline.cache.store.write_feature_rows` (ids, labels, split, info, ...)."""
    shape, dtype = tuple(int(d) for d in feature_shape), np.dtype(dtype)
    row_bytes = int(np.prod(shape)) * dtype.itemsize
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".staging.tmp", dir=path.parent)
    staging = Path(name)
    try:
        with os.fdopen(fd, "wb") as f:
            at = stage(f, sources, order, shape, dtype)
        with open(staging, "rb") as f:
            chunks = gathered(f.fileno(), [at[s] for s in order], shape, dtype, row_bytes)
            return write_feature_rows(path, feature_shape=shape, dtype=dtype, chunks=chunks,
                                      sha256=order, **file)
    finally:
        staging.unlink(missing_ok=True)


def stage(f: BinaryIO, sources: RowSources, order: Sequence[str], shape: tuple[int, ...],
          dtype: np.dtype) -> dict[str, int]:
    """Append every row ``order`` needs to ``f``, reading each source once; returns each
    hash's row in ``f``."""
    need, at = set(order), {}

    def take(shas: Sequence[str], x: np.ndarray) -> None:
        keep = [k for k, s in enumerate(shas) if s in need and s not in at]
        if keep:
            f.write(np.ascontiguousarray(x[keep], dtype=dtype).data)
            for k in keep:
                at[shas[k]] = len(at)

    old = sources.old
    if old is not None:
        rows = np.array(sorted({sources.in_old[s] for s in need if s in sources.in_old}),
                        dtype=np.int64)
        if len(rows):
            for idx, x in old.chunks(rows):
                take(old.sha256[idx].tolist(), x.reshape(len(x), *shape))
    for name in sorted({sources.in_shards[s] for s in need - at.keys()}):
        got = sources.shards.read(name)
        if got is None:
            raise PipelineError(f"work shard {name} of {sources.shards!r} can no longer be "
                                "read; run the extraction again (its rows are recomputed)")
        take(got[0].tolist(), got[1].reshape(len(got[1]), *shape))
    return at


def gathered(fd: int, positions: Sequence[int], shape: tuple[int, ...], dtype: np.dtype,
             row_bytes: int) -> Iterator[np.ndarray]:
    """The staged rows at ``positions``, in that order, a chunk at a time."""
    step = max(1, store.CHUNK_BYTES // max(1, row_bytes))
    for start in range(0, len(positions), step):
        idx = np.asarray(positions[start:start + step], dtype=np.int64)
        yield read_rows(fd, idx, row_bytes).view(dtype).reshape(len(idx), *shape)


def read_rows(fd: int, idx: np.ndarray, row_bytes: int) -> np.ndarray:
    """Rows ``idx`` of a raw file of fixed-size rows, one positioned read per run of
    consecutive rows."""
    order = np.argsort(idx, kind="stable")
    ranked = idx[order]
    out = np.empty((len(idx), row_bytes), np.uint8)
    done = 0
    for run in np.split(ranked, np.flatnonzero(np.diff(ranked) != 1) + 1):
        data = os.pread(fd, len(run) * row_bytes, int(run[0]) * row_bytes)
        if len(data) != len(run) * row_bytes:
            raise OSError(f"staging file ended early at row {int(run[0])}")
        out[order[done:done + len(run)]] = np.frombuffer(data, np.uint8).reshape(len(run), -1)
        done += len(run)
    return out

