"""Finding feature sets in a cache folder: list, resolve a name, summarise."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pipeline import settings
from pipeline.cache.info import FeatureSetInfo
from pipeline.cache.store import SUFFIX, read_info
from pipeline.errors import PipelineError


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
