"""Turn what the user names (a folder, a CSV manifest, a builtin name) into a :class:`Dataset`.

Layouts:
- a folder with one subfolder per class (``image_dataset_from_directory``);
- a folder already split into ``train/``, ``validation/`` or ``val/``, ``test/`` (also
  ``Training/`` and ``Test/`` as in Fruits-360), each with class subfolders;
- a CSV manifest ``path,label[,split]`` with paths relative to the CSV;
- a builtin name (``elpv``).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

from pipeline.data import builtin
from pipeline.data.samples import Dataset, Sample, is_image_file, sample_sha256
from pipeline.data.splits import DEFAULT_FRACTIONS, assign_splits
from pipeline.errors import PipelineError

SPLIT_DIR_NAMES = {
    "train": "train", "training": "train",
    "validation": "validation", "val": "validation", "valid": "validation",
    "test": "test", "testing": "test",
}


def load_dataset(
    data: str | Path,
    *,
    split: Sequence[float] = DEFAULT_FRACTIONS,
    seed: int = 0,
    elpv_levels: bool = False,
) -> Dataset:
    """Resolve ``data`` to a dataset with ids, labels, content hashes and splits."""
    text = str(data)
    path = Path(text).expanduser()
    if not path.exists() and text in builtin.NAMES:
        ds = builtin.load(text, levels=elpv_levels)
    elif not path.exists():
        names = ", ".join(builtin.NAMES)
        raise PipelineError(f"{text}: no such folder or CSV file (builtin datasets: {names})")
    elif path.is_file():
        if path.suffix.lower() != ".csv":
            raise PipelineError(f"{text}: expected a folder of class subfolders or a CSV "
                                "manifest (path,label[,split])")
        ds = _from_csv(path)
    else:
        ds = _from_folder(path)
    _check_classes(ds)
    return ds.with_samples(assign_splits(ds.samples, split, seed))


def _from_folder(root: Path) -> Dataset:
    try:
        subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError as e:
        raise PipelineError(f"{root}: cannot read folder ({e.strerror})") from None
    split_dirs = {p: SPLIT_DIR_NAMES[p.name.lower()] for p in subdirs
                  if p.name.lower() in SPLIT_DIR_NAMES}
    if split_dirs and any(_class_dirs(p) for p in split_dirs):
        if "train" not in split_dirs.values():
            raise PipelineError(f"{root}: split folders {sorted(p.name for p in split_dirs)} "
                                "but no train/ (or Training/) folder")
        class_names = sorted({c.name for p in split_dirs for c in _class_dirs(p)})
        entries = [(c, ci, split_dirs[p]) for p in split_dirs for c in _class_dirs(p)
                   for ci in [class_names.index(c.name)]]
    else:
        classes = _class_dirs(root)
        class_names = [c.name for c in classes]
        entries = [(c, i, None) for i, c in enumerate(classes)]
    if not class_names:
        raise PipelineError(f"{root}: no class subfolders; expected one folder of images per "
                            "class (or train/ and test/ folders holding them)")
    samples = []
    for class_dir, label, split in entries:
        for f in sorted(class_dir.rglob("*")):
            if is_image_file(f) and not any(part.startswith(".")
                                            for part in f.relative_to(root).parts):
                samples.append(Sample(id=f.relative_to(root).as_posix(), path=f, label=label,
                                      sha256=sample_sha256(f), split=split))
    return Dataset(name=root.resolve().name, source=str(root.resolve()), root=root.resolve(),
                   class_names=class_names, samples=samples)


def _class_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _from_csv(manifest: Path) -> Dataset:
    root = manifest.resolve().parent
    try:
        with open(manifest, newline="", encoding="utf-8-sig") as f:
            rows = [r for r in csv.reader(f) if r and any(c.strip() for c in r)]
    except (OSError, UnicodeDecodeError) as e:
        raise PipelineError(f"{manifest}: cannot read CSV manifest ({e})") from None
    if rows and [c.strip().lower() for c in rows[0][:2]] == ["path", "label"]:
        rows = rows[1:]
    if not rows:
        raise PipelineError(f"{manifest}: empty manifest; expected rows path,label[,split]")
    parsed, missing = [], []
    for n, row in enumerate(rows, start=1):
        if len(row) not in (2, 3):
            raise PipelineError(f"{manifest}: row {n} has {len(row)} columns; expected "
                                "path,label[,split]")
        rel, label = row[0].strip(), row[1].strip()
        split = row[2].strip().lower() if len(row) == 3 and row[2].strip() else None
        if split is not None and split not in SPLIT_DIR_NAMES:
            raise PipelineError(f"{manifest}: row {n}: unknown split {row[2]!r}; expected "
                                "train, validation (val) or test")
        path = (root / rel).resolve()
        if not path.is_relative_to(root):
            raise PipelineError(f"{manifest}: row {n}: path {rel!r} escapes the dataset root "
                                f"{root}")
        if not path.is_file():
            missing.append(rel)
            continue
        parsed.append((path, label, SPLIT_DIR_NAMES.get(split) if split else None))
    if missing:
        more = f" (+{len(missing) - 3} more)" if len(missing) > 3 else ""
        raise PipelineError(f"{manifest}: {len(missing)} listed files do not exist: "
                            f"{', '.join(missing[:3])}{more}")
    class_names = sorted({label for _, label, _ in parsed})
    seen: dict[str, int] = {}
    samples = []
    for path, label, split in parsed:
        sid = path.relative_to(root).as_posix()
        if sid in seen:
            raise PipelineError(f"{manifest}: {sid} is listed twice")
        seen[sid] = 1
        samples.append(Sample(id=sid, path=path, label=class_names.index(label),
                              sha256=sample_sha256(path), split=split))
    return Dataset(name=manifest.stem, source=str(manifest.resolve()), root=root,
                   class_names=class_names, samples=samples)


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
