"""Resumable work: finished batches as small shard files, one format for every engine.

Each finished batch is saved as ``shard-<first hash>-<last hash>-<rows>-<digest>.npz``
(content hashes + features; the name says which hash range it covers, how many rows it holds
and a digest of exactly which hashes), written whole or not at all: locally under a unique
temporary name renamed into place, on object storage (any fsspec URL) as one PUT. A retried
batch therefore overwrites its shard instead of adding a duplicate. A run killed at any moment
loses at most the batches in flight; the next run indexes the shards and extracts only the
rest. Shards hold plain arrays and are read with ``allow_pickle=False``.

Why ``.npz`` rather than Parquet: it needs nothing beyond numpy (the local engine must not
depend on pyarrow), keeps any feature shape and dtype (float16, spatial maps) without a
schema mapping, and a shard's hashes are read without its features (one zip member).
"""

from __future__ import annotations

import hashlib
import io
import shutil
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.fileio import atomic_path

SHARD_GLOB = "shard-*.npz"
#: What a shard that cannot be read fails with (it is then ignored: its rows are recomputed).
UNREADABLE = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile)


def is_url(location: str | Path) -> bool:
    return "://" in str(location) and not str(location).startswith("file://")


def shard_name(sha256: Sequence[str]) -> str:
    """The name of the shard holding these rows: hash range, row count, digest of the hashes
    (the same rows always get the same name)."""
    ordered = sorted(sha256)
    digest = hashlib.sha256("".join(ordered).encode()).hexdigest()[:12]
    return f"shard-{ordered[0][:16]}-{ordered[-1][:16]}-{len(ordered)}-{digest}.npz"


def encode_shard(sha256: Sequence[str], features: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, sha256=np.array(list(sha256), dtype="S64"), features=features)
    return buf.getvalue()


class WorkShards:
    """The shards of one feature set: ``<cache>.work/`` beside it, or any folder or fsspec
    URL (``--work-dir``)."""

    def __init__(self, location: str | Path):
        text = str(location)
        self.url = text if is_url(text) else None
        self.path = Path(text.removeprefix("file://")) if self.url is None else Path()
        self._fs: Any = None

    def __repr__(self) -> str:
        return f"WorkShards({self.url or str(self.path)!r})"

    @property
    def fs(self) -> Any:
        if self._fs is None:
            import fsspec  # object storage: only with a URL (the `ray` extra installs it)

            self._fs, _ = fsspec.core.url_to_fs(self.url)
        return self._fs

    def _where(self, name: str) -> str:
        return f"{self.url.rstrip('/')}/{name}" if self.url else str(self.path / name)

    def save(self, sha256: Sequence[str], features: np.ndarray) -> str:
        """Save one finished batch as a shard (whole or not at all); returns its name."""
        name = shard_name(sha256)
        if self.url is None:
            with atomic_path(self.path / name, suffix=".npz") as tmp, open(tmp, "wb") as f:
                np.savez(f, sha256=np.array(list(sha256), dtype="S64"), features=features)
        else:
            self.fs.pipe(self._where(name), encode_shard(sha256, features))  # one PUT
        return name

    def names(self) -> list[str]:
        """Names of the finished shards, sorted."""
        if self.url is None:
            return sorted(p.name for p in self.path.glob(SHARD_GLOB)) if self.path.is_dir() \
                else []
        if not self.fs.exists(self.url):
            return []
        found = self.fs.glob(self._where(SHARD_GLOB))
        return sorted(str(p).rsplit("/", 1)[-1] for p in found)

    def _open(self, name: str) -> Any:
        return open(self.path / name, "rb") if self.url is None \
            else self.fs.open(self._where(name), "rb")

    def hashes(self, name: str) -> np.ndarray | None:
        """The content hashes of one shard (its features left unread); ``None`` when it
        cannot be read."""
        try:
            with self._open(name) as f, np.load(f, allow_pickle=False) as z:
                return z["sha256"].astype(str)
        except UNREADABLE:
            return None

    def read(self, name: str) -> tuple[np.ndarray, np.ndarray] | None:
        """``(hashes, features)`` of one shard; ``None`` when it cannot be read."""
        try:
            with self._open(name) as f, np.load(f, allow_pickle=False) as z:
                shas, feats = z["sha256"].astype(str), z["features"]
        except UNREADABLE:
            return None
        return (shas, feats) if len(shas) == len(feats) else None

    def index(self) -> Iterator[tuple[str, np.ndarray]]:
        """``(name, hashes)`` of every readable shard (unreadable ones are skipped)."""
        for name in self.names():
            shas = self.hashes(name)
            if shas is not None:
                yield name, shas

    def clear(self) -> None:
        if self.url is None:
            shutil.rmtree(self.path, ignore_errors=True)
        elif self.fs.exists(self.url):
            self.fs.rm(self.url, recursive=True)
