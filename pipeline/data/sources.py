"""Turn what the user names (a folder, a CSV manifest, a builtin name) into a :class:`Dataset`.

Reading is :mod:`pipeline.data.folder` (class folders, split folders),
:mod:`pipeline.data.manifest` (CSV) and :mod:`pipeline.data.builtin` (``elpv``); here the
result is checked (classes, duplicate contents under different labels) and given its splits
(:mod:`pipeline.data.splits`), with a warning for every thing the user should know.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from pipeline.data import builtin
from pipeline.data.folder import read_folder
from pipeline.data.hash_cache import Hasher
from pipeline.data.locations import is_data_url
from pipeline.data.manifest import MANIFEST_SUFFIXES, read_manifest
from pipeline.data.remote import read_url
from pipeline.data.samples import Dataset
from pipeline.data.splits import (
    DEFAULT_FRACTIONS,
    assign_splits,
    per_class_counts,
    small_split_warnings,
    split_origins,
)
from pipeline.errors import PipelineError


def load_dataset(
    data: str | Path,
    *,
    split: Sequence[float] = DEFAULT_FRACTIONS,
    seed: int = 0,
    elpv_levels: bool = False,
    hasher: Hasher | None = None,
) -> Dataset:
    """Resolve ``data`` to a dataset with ids, labels, content hashes and splits.

    ``ds.warnings`` lists what the user should be told (stray folders, classes in one split
    only, identical images under different labels, small validation or test classes);
    ``ds.split_origin`` says which splits were given and which carved or assigned.
    ``hasher`` hashes the files (default: read here; see :mod:`pipeline.data.hash_cache`
    for the hash cache and ``pipeline.engines`` for hashing on a Ray cluster).
    """
    hasher = hasher or Hasher()
    ds = _read(data, elpv_levels, hasher)
    _check_classes(ds)
    warnings = list(ds.warnings) + hasher.warnings + _label_conflicts(ds)
    samples = assign_splits(ds.samples, split, seed)
    counts = per_class_counts(samples, ds.class_names)
    warnings += small_split_warnings(counts)
    return replace(ds, samples=samples, split_origin=split_origins(ds.samples),
                   warnings=warnings)


def _read(data: str | Path, elpv_levels: bool, hasher: Hasher) -> Dataset:
    text = str(data)
    if is_data_url(text):
        return read_url(text, hasher)
    path = Path(text).expanduser()
    if not path.exists() and text in builtin.NAMES:  # a local folder named "elpv" wins
        return builtin.load(text, levels=elpv_levels, hasher=hasher)
    if not path.exists():
        names = ", ".join(builtin.NAMES)
        raise PipelineError(f"{text}: no such folder or CSV file (builtin datasets: {names})")
    if path.is_file():
        if path.suffix.lower() not in MANIFEST_SUFFIXES:
            raise PipelineError(f"{text}: expected a folder of class subfolders or a CSV "
                                "manifest (path,label[,split]; or the same as .parquet)")
        return read_manifest(path, hasher)
    return read_folder(path, hasher)


def _check_classes(ds: Dataset) -> None:
    if not ds.samples:
        raise PipelineError(f"{ds.source}: no images found (looked for "
                            "jpg, jpeg, png, bmp, gif, webp, tif)")
    empty = [c for c, n in ds.class_counts().items() if n == 0]
    if empty:
        raise PipelineError(f"{ds.source}: class {', '.join(empty)} has no images")
    if len(ds.class_names) < 2:
        raise PipelineError(f"{ds.source}: only one class ({ds.class_names[0]}); a classifier "
                            "needs at least two")


def _label_conflicts(ds: Dataset) -> list[str]:
    """Identical image bytes listed under different labels: one warning naming them."""
    by_sha: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for s in ds.samples:
        by_sha[s.sha256].append((s.id, s.label))
    conflicts = [rows for rows in by_sha.values() if len({label for _, label in rows}) > 1]
    if not conflicts:
        return []
    shown = "; ".join(" = ".join(f"{sid} ({ds.class_names[label]})" for sid, label in rows)
                      for rows in conflicts[:3])
    more = f" (+{len(conflicts) - 3} more)" if len(conflicts) > 3 else ""
    return [f"{len(conflicts)} image(s) appear with identical bytes under different labels: "
            f"{shown}{more}"]
