"""Resumable work: finished batches as small shard files beside the cache.

Each finished batch is saved as ``shard-*.npz`` (content hashes + features) under a temporary
name and renamed into place, so a shard is either whole or absent. A run killed at any moment
loses at most the batch in flight; the next run loads the shards and extracts only the rest.
Shards hold plain arrays and are read with ``allow_pickle=False``.
"""

from __future__ import annotations

import os
import shutil
import uuid
import zipfile
from pathlib import Path

import numpy as np


class WorkDir:
    def __init__(self, path: Path):
        self.path = path

    def save(self, sha256: list[str], features: np.ndarray) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        name = f"shard-{uuid.uuid4().hex}"
        tmp = self.path / f".{name}.tmp.npz"
        np.savez(tmp, sha256=np.array(sha256, dtype="S64"), features=features)
        os.replace(tmp, self.path / f"{name}.npz")

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
