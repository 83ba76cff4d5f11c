"""Thumbnails of a run's worst-predicted images, written into the run folder when it is made.

The report's top-losses grid (:mod:`pipeline.report`) shows the misclassified validation and
test images with the highest loss. The images themselves may be gone by the time the report
is drawn (a moved dataset, a temporary folder), so the run keeps small copies: at most
:data:`LIMIT` per split, at most :data:`SIZE` px on the longer side, JPEG, named by
:func:`thumbnail_name` under ``<run>/thumbnails/``. An image that cannot be read is skipped
(the report shows a placeholder); nothing is fetched from anywhere but the dataset folder.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.fileio import atomic_path

#: Sub-folder of the run folder holding the thumbnails.
FOLDER = "thumbnails"
#: Longer side of a thumbnail, in pixels.
SIZE = 128
#: Misclassified images kept per split (highest loss first).
LIMIT = 24


def thumbnail_name(split: str, sample_id: str) -> str:
    """The file name of a sample's thumbnail (a digest: sample ids may hold any path)."""
    return hashlib.sha256(f"{split}\0{sample_id}".encode()).hexdigest()[:20] + ".jpg"


def top_losses(labels: np.ndarray, proba: np.ndarray, limit: int = LIMIT) -> list[int]:
    """Row indices of the misclassified rows, highest loss (-log p(true class)) first."""
    labels = np.asarray(labels, dtype=int)
    proba = np.asarray(proba, dtype=np.float64)
    if not len(labels):
        return []
    p_true = proba[np.arange(len(labels)), labels]
    wrong = np.flatnonzero(np.argmax(proba, axis=1) != labels)
    order = np.argsort(p_true[wrong], kind="stable")  # lowest p(true) = highest loss
    return [int(i) for i in wrong[order][:limit]]


def _source(root: Path, sample_id: str) -> Path | None:
    """``root / sample_id`` if it stays inside ``root`` (ids are relative paths)."""
    path = (root / sample_id).resolve()
    return path if path.is_relative_to(root) and path.is_file() else None


def _write_one(source: Path, dest: Path) -> bool:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(source) as img:
            img.thumbnail((SIZE, SIZE))
            small = img.convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError):
        return False
    with atomic_path(dest) as tmp:
        small.save(tmp, format="JPEG", quality=85)
    return True


def write_thumbnails(run_dir: str | os.PathLike, dataset_root: str | os.PathLike | None,
                     splits: Mapping[str, Any], limit: int = LIMIT) -> list[Path]:
    """Thumbnails of the ``limit`` highest-loss misclassified rows of each split.

    ``splits``: split name -> predictions with ``ids``, ``labels`` (class indices) and
    ``proba`` (:class:`~pipeline.heads.sweep.SplitPredictions`). Returns the files written;
    a missing ``dataset_root`` or image writes nothing for it (the report shows a
    placeholder)."""
    if not dataset_root or not Path(dataset_root).is_dir():
        return []
    root = Path(dataset_root).resolve()
    folder = Path(run_dir) / FOLDER
    written: list[Path] = []
    for split, p in splits.items():
        ids: Sequence[Any] = list(p.ids)
        for i in top_losses(p.labels, p.proba, limit):
            source = _source(root, str(ids[i]))
            if source is None:
                continue
            folder.mkdir(exist_ok=True)
            dest = folder / thumbnail_name(split, str(ids[i]))
            if _write_one(source, dest):
                written.append(dest)
    return written
