"""The images behind a feature cache, for training end to end on exactly its split.

The cache is the truth: its ``ids`` (paths relative to ``info.dataset_root``), ``labels``
and ``split`` say which image belongs where, and its ``sha256`` column says what each file's
bytes were when the features were extracted. Before any training every file is hashed again;
a missing or changed file stops the run with one line, because the head's numbers (and any
comparison with them) would no longer mean anything.

Images are decoded and resized by the extraction reader itself (:mod:`pipeline.data.reader`),
so the fine-tuned model sees the very pixels the head's features were computed from.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.cache.store import SPLITS, FeatureSet, load_feature_set
from pipeline.data.locations import is_data_url, location_sha256
from pipeline.errors import PipelineError
from pipeline.runs.record import CacheRef


@dataclass
class SplitData:
    """The images of one split at the model's input size, in cache row order."""

    ids: list[str]
    x: np.ndarray  # (n, size, size, 3) float32 in [0, 255]
    y: np.ndarray  # (n,) int32 labels


def load_run_cache(cache: CacheRef | Mapping[str, Any],
                   cache_dir: str | os.PathLike | None = None) -> FeatureSet:
    """The feature cache a head run was fitted on (its record's ``cache``): at its recorded
    path, else found under ``cache_dir`` (default ``$PIPELINE_CACHE_DIR`` or ``./cache``) by
    file name or key; refused in one line if its key or samples digest differ from the run's."""
    cache = CacheRef.coerce(cache)
    path = cache.locate(cache_dir)
    fs = load_feature_set(path)
    why = cache.mismatch(fs.info)
    if why is not None:
        raise PipelineError(f"{path}: {why}; the cache was rebuilt since the head was fitted: "
                            "fit the head again on the current cache")
    if not fs.info.dataset_root:
        raise PipelineError(f"{path} does not record where its images are (dataset_root); "
                            "re-run `pipeline extract` with this version")
    return fs


def image_paths(fs: FeatureSet) -> list[str]:
    """``dataset_root / id`` for every row of the cache: a path, or a URL for a dataset read
    through fsspec (ids are ``/``-separated relative paths in both)."""
    root = str(fs.info.dataset_root)
    if is_data_url(root):
        return [f"{root.rstrip('/')}/{i}" for i in fs.ids]
    return [str(Path(root) / str(i)) for i in fs.ids]


def check_dataset(fs: FeatureSet, paths: list[str] | None = None) -> list[str]:
    """Hash every image again; raise one line if any is missing or differs from the cache."""
    paths = paths if paths is not None else image_paths(fs)
    problems: list[str] = []
    for sample_id, path, digest in zip(fs.ids, paths, fs.sha256, strict=True):
        try:
            actual = location_sha256(path)
        except FileNotFoundError:
            problems.append(f"{sample_id} (missing)")
            continue
        except OSError as e:
            problems.append(f"{sample_id} (unreadable: {e.strerror})")
            continue
        if actual != digest:
            problems.append(f"{sample_id} (changed)")
    if problems:
        shown = "; ".join(problems[:3]) + (f"; +{len(problems) - 3} more" if len(problems) > 3
                                           else "")
        raise PipelineError(
            f"dataset changed since extraction: {len(problems)} of {len(paths)} images under "
            f"{fs.info.dataset_root} no longer match the cache ({shown}); re-run "
            "`pipeline extract` and fit the head again")
    return paths


def read_images(paths: list[str], size: int, batch_size: int = 32,
                on_error: Callable[[int, str], None] | None = None) -> tuple[np.ndarray,
                                                                           np.ndarray]:
    """``(images (n, size, size, 3) float32, ok (n,) bool)`` through the extraction reader."""
    from pipeline.data.reader import read_batches

    out = np.zeros((len(paths), size, size, 3), dtype=np.float32)
    ok = np.zeros(len(paths), dtype=bool)
    if not paths:
        return out, ok
    for index, good, images in read_batches([str(p) for p in paths], [size], batch_size,
                                            on_error):
        out[index] = images[0]
        ok[index] = good
    return out, ok


def load_splits(fs: FeatureSet, size: int, batch_size: int = 32,
                verify: bool = True) -> dict[str, SplitData]:
    """The train/validation/test images of the cache (verified first unless ``verify=False``)."""
    paths = image_paths(fs)
    if verify:
        check_dataset(fs, paths)
    order = np.concatenate([np.flatnonzero(fs.mask(s)) for s in SPLITS])
    x, ok = read_images([paths[i] for i in order], size, batch_size)
    if not ok.all():
        bad = fs.ids[order[~ok][0]]
        raise PipelineError(f"{bad}: can no longer be decoded although its bytes match the "
                            "cache; check the image libraries (Pillow) installed")
    out, start = {}, 0
    for s in SPLITS:
        rows = np.flatnonzero(fs.mask(s))
        n = len(rows)
        out[s] = SplitData(ids=[str(i) for i in fs.ids[rows]], x=x[start:start + n],
                           y=fs.labels[rows].astype(np.int32))
        start += n
    return out
