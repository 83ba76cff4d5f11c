"""Finding feature sets in a cache folder: list, resolve a name, summarise, remove, prune.

Removing takes a feature set's lock without waiting (an extraction of it running is a
one-line refusal) and removes the file with its work folder, temporary files and lock.
Pruning is given the paths to keep (the CLI collects those the runs reference): the cache
layer knows nothing of runs.
"""

from __future__ import annotations

import datetime as _dt
import os
import shutil
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import Any

from pipeline import settings
from pipeline.cache.info import FeatureSetInfo
from pipeline.cache.store import SUFFIX, read_info
from pipeline.cache.writer import litter, lock_path, work_path
from pipeline.errors import PipelineError
from pipeline.fileio import file_lock


def list_caches(cache_dir: str | os.PathLike | None = None
                ) -> list[tuple[Path, FeatureSetInfo | None]]:
    """Every complete feature set under the cache folder, with its record (``None`` when
    it cannot be read)."""
    root = settings.cache_dir(cache_dir)
    out: list[tuple[Path, FeatureSetInfo | None]] = []
    for path in sorted(root.glob(f"*{SUFFIX}")):
        try:
            out.append((path, read_info(path)))
        except PipelineError:
            out.append((path, None))
    return out


def resolve_cache(name: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> Path:
    """A cache given by path, by file name in the cache folder, or by unique name prefix."""
    path = Path(name)
    if path.exists():
        return path
    root = settings.cache_dir(cache_dir)
    if (root / path.name).is_file():
        return root / path.name
    matches = sorted(root.glob(f"{path.name}*{SUFFIX}")) if root.is_dir() else []
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise PipelineError(f"{name}: matches {len(matches)} caches in {root}: "
                            f"{', '.join(m.name for m in matches[:4])}; be more specific")
    raise PipelineError(f"{name}: no such feature cache (see `pipeline cache ls`)")


def summary(path: Path, info: FeatureSetInfo | None) -> dict[str, Any]:
    """One row of ``pipeline cache ls``."""
    return {
        "file": path.name,
        "dataset": info.dataset if info and info.dataset else "?",
        "base": info.base if info and info.base else "?",
        "pooling": info and info.pooling,
        "layer": info and info.layer,
        "input_size": info and info.input_size,
        "weights": info and info.weights,
        "rows": info and info.n_samples,
        "feature_shape": info and info.feature_shape,
        "dtype": info and info.dtype,
        "size_mb": round(path.stat().st_size / 2**20, 2),
        "extracted_at": info and info.extracted_at,
        "ok": info is not None,
    }


def remove_caches(paths: Iterable[Path]) -> list[Path]:
    """Remove each feature set with its work folder, temporary files and lock; returns the
    feature-set files removed. One whose extraction is running is refused in one line."""
    removed = []
    for path in paths:
        try:
            with file_lock(lock_path(path), blocking=False) as taken:
                if not taken:
                    raise PipelineError(f"{path}: an extraction of it is running; remove it "
                                        "when that ends")
                for p in litter(path):
                    p.unlink(missing_ok=True)
                shutil.rmtree(work_path(path), ignore_errors=True)
                path.unlink(missing_ok=True)
                lock_path(path).unlink(missing_ok=True)
        except OSError as e:
            raise PipelineError(f"cannot remove {path} ({e.strerror or e})") from None
        removed.append(path)
    return removed


def prune_candidates(cache_dir: str | os.PathLike | None = None, *,
                     keep: Collection[Path] = (), older_than: _dt.date | None = None
                     ) -> list[Path]:
    """The feature sets to prune: those not in ``keep`` (matched by resolved path or file
    name) and, with ``older_than``, last written before that day (UTC)."""
    names = {Path(k).name for k in keep}
    resolved = {Path(k).resolve() for k in keep}
    out = []
    for path, _ in list_caches(cache_dir):
        if path.name in names or path.resolve() in resolved:
            continue
        written = _dt.datetime.fromtimestamp(path.stat().st_mtime, _dt.UTC).date()
        if older_than is None or written < older_than:
            out.append(path)
    return out
