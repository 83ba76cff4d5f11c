"""Finding feature sets in a cache folder: list, resolve a name, summarise."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pipeline import settings
from pipeline.cache.store import SUFFIX, read_meta
from pipeline.errors import PipelineError


def list_caches(cache_dir: str | os.PathLike | None = None) -> list[tuple[Path, dict[str, Any]]]:
    """Every complete feature set under the cache folder, with its metadata."""
    root = settings.cache_dir(cache_dir)
    out = []
    for path in sorted(root.glob(f"*{SUFFIX}")):
        try:
            out.append((path, read_meta(path)))
        except PipelineError:
            out.append((path, {}))
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


def summary(path: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """One row of ``pipeline cache ls``."""
    return {
        "file": path.name,
        "dataset": meta.get("dataset", "?"),
        "base": meta.get("base", "?"),
        "pooling": meta.get("pooling"),
        "layer": meta.get("layer"),
        "input_size": meta.get("input_size"),
        "weights": meta.get("weights"),
        "rows": meta.get("n_samples"),
        "feature_shape": meta.get("feature_shape"),
        "dtype": meta.get("dtype"),
        "size_mb": round(path.stat().st_size / 2**20, 2),
        "extracted_at": meta.get("extracted_at"),
        "ok": bool(meta),
    }
