"""Resumable work: finished batches as small shard files beside the cache.

Each finished batch is saved as ``shard-*.npz`` (content hashes + features) under a unique
temporary name and renamed into place, so a shard is either whole or absent. A run killed at
any moment loses at most the batch in flight; the next run loads the shards and extracts only
the rest. Shards hold plain arrays and are read with ``allow_pickle=False``.
"""

from __future__ import annotations

import shutil
import uuid
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pipeline.fileio import atomic_path


class WorkShards:
    """The shard folder of one feature set (``<cache>.work/``)."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def save(self, sha256: Sequence[str], features: np.ndarray) -> Path:
        """Save one finished batch as a new shard; returns its path."""
        target = self.path / f"shard-{uuid.uuid4().hex}.npz"
        with atomic_path(target, suffix=".npz") as tmp, open(tmp, "wb") as f:
            np.savez(f, sha256=np.array(list(sha256), dtype="S64"), features=features)
        return target

    def load(self) -> dict[str, np.ndarray]:
        """Features of every finished row, by content hash (unreadable shards are ignored)."""
        rows: dict[str, np.ndarray] = {}
        if not self.path.is_dir():
            return rows
        for shard in sorted(self.path.glob("shard-*.npz")):
            try:
                with np.load(shard, allow_pickle=False) as z:
                    shas, feats = z["sha256"].astype(str), z["features"]
            except (OSError, ValueError, KeyError, zipfile.BadZipFile):
                continue
            rows.update(zip(shas, feats, strict=True))
        return rows

    def clear(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
