"""Datasets kept as folders: one subfolder per class, optionally inside split folders.

Recognised layouts (split folder names are matched case-insensitively):

* ``root/<class>/<images>`` (``image_dataset_from_directory``);
* ``root/<split>/<class>/<images>`` with ``<split>`` one of :data:`SPLIT_DIR_NAMES`
  (``train``, ``training``, ``training_set``, ``val``, ``valid``, ``dev``, ``test``,
  ``test_set``, ``eval``, ...): the Kaggle, PyTorch-tutorial and Fruits-360 layouts.

Never silently flattened: a class folder that holds subfolders with images, or a split-named
folder that holds images directly, is refused with one line naming the folders. A file or
folder reached through a symlink that leaves the dataset root is refused too (as in a CSV).
"""

from __future__ import annotations

from pathlib import Path

from pipeline.data.samples import Dataset, Sample, is_image_file, sample_sha256
from pipeline.errors import PipelineError

#: Folder name (lower case) -> split. Names people actually use for split folders.
SPLIT_DIR_NAMES = {
    **dict.fromkeys(("train", "training", "training_set", "trainset", "train_set"), "train"),
    **dict.fromkeys(("val", "valid", "validation", "validation_set", "val_set", "dev"),
                    "validation"),
    **dict.fromkeys(("test", "testing", "test_set", "testset", "eval"), "test"),
}


def split_of_name(name: str) -> str | None:
    """The split a folder or CSV value names, or None."""
    return SPLIT_DIR_NAMES.get(name.strip().lower())


def _subdirs(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError as e:
        raise PipelineError(f"{folder}: cannot read folder ({e.strerror or e})") from None


def _images_below(folder: Path, root: Path) -> list[Path]:
    """Visible image files anywhere below ``folder`` (hidden files and folders skipped)."""
    out = []
    for f in sorted(folder.rglob("*")):
        rel = f.relative_to(root).parts
        if not any(part.startswith(".") for part in rel) and is_image_file(f):
            out.append(f)
    return out


def _direct_images(folder: Path) -> list[Path]:
    return [f for f in sorted(folder.iterdir()) if is_image_file(f)]


def _nested_image_dirs(class_dir: Path, root: Path) -> list[str]:
    """Subfolders of a class folder that hold images: a layout we must not flatten."""
    return [d.relative_to(root).as_posix() for d in _subdirs(class_dir)
            if _images_below(d, root)]


def _check_inside(path: Path, root: Path) -> None:
    if not path.resolve().is_relative_to(root):
        raise PipelineError(f"{path}: a symlink that leaves the dataset root {root}; copy the "
                            "file in or point at a folder that holds it")


Entry = tuple[Path, str, str | None]


def _class_entries(folder: Path, root: Path, split: str | None) -> list[Entry]:
    """``(class folder, class name, split)`` for each class folder in ``folder``."""
    entries = []
    for class_dir in _subdirs(folder):
        nested = _nested_image_dirs(class_dir, root)
        if nested:
            shown = ", ".join(nested[:4]) + (" ..." if len(nested) > 4 else "")
            raise PipelineError(
                f"{root}: class folder {class_dir.relative_to(root).as_posix()}/ holds image "
                f"subfolders ({shown}); expected one folder of images per class, or split "
                "folders (train/ val/ test/) holding class folders")
        entries.append((class_dir, class_dir.name, split))
    return entries


def _presplit_entries(root: Path, split_dirs: dict[Path, str], warnings: list[str]
                      ) -> list[Entry]:
    seen: dict[str, Path] = {}
    for d, split in split_dirs.items():
        if split in seen:
            raise PipelineError(f"{root}: both {seen[split].name}/ and {d.name}/ are {split} "
                                "folders; keep one")
        seen[split] = d
        loose = _direct_images(d)
        if loose:
            raise PipelineError(f"{root}: split folder {d.name}/ holds images directly "
                                f"({loose[0].name} ...); put them in one subfolder per class")
    if "train" not in seen:
        raise PipelineError(f"{root}: split folders {sorted(d.name for d in split_dirs)} but no "
                            "train/ (or training/, training_set/) folder")
    entries = [e for d, split in split_dirs.items() for e in _class_entries(d, root, split)]
    by_class: dict[str, set[str]] = {}
    for _, name, split in entries:
        by_class.setdefault(name, set()).add(str(split))
    only = sorted(c for c, splits in by_class.items() if len(splits) == 1 and len(seen) > 1)
    if only:
        listed = ", ".join(f"{c} ({next(iter(by_class[c]))})" for c in only[:6])
        warnings.append(f"class(es) present in only one split folder: {listed}")
    return entries


def _stray(root: Path, subdirs: list[Path], split_dirs: dict[Path, str],
           warnings: list[str]) -> None:
    stray = [d.name for d in subdirs if d not in split_dirs and _images_below(d, root)]
    loose = _direct_images(root)
    if stray or loose:
        what = [f"folder(s) {', '.join(s + '/' for s in stray)}"] if stray else []
        what += [f"{len(loose)} image(s) at the top level"] if loose else []
        warnings.append(f"{root}: ignored {' and '.join(what)} beside the split folders "
                        f"({', '.join(d.name + '/' for d in split_dirs)})")


def read_folder(root: Path) -> Dataset:
    """A dataset from a folder of class folders, optionally inside split folders."""
    root = root.resolve()
    subdirs = _subdirs(root)
    warnings: list[str] = []
    split_dirs = {d: s for d in subdirs if (s := split_of_name(d.name)) is not None}
    if split_dirs:
        entries = _presplit_entries(root, split_dirs, warnings)
        _stray(root, subdirs, split_dirs, warnings)
    else:
        entries = _class_entries(root, root, None)
    class_names = sorted({name for _, name, _ in entries}) if split_dirs else \
        [name for _, name, _ in entries]
    if not class_names:
        raise PipelineError(f"{root}: no class subfolders; expected one folder of images per "
                            "class (or train/ and test/ folders holding them)")
    samples = []
    for class_dir, name, split in entries:
        _check_inside(class_dir, root)
        for f in _images_below(class_dir, root):
            _check_inside(f, root)
            samples.append(Sample(id=f.relative_to(root).as_posix(), path=f,
                                  label=class_names.index(name), sha256=sample_sha256(f),
                                  split=split))
    return Dataset(name=root.name, source=str(root), root=root, class_names=class_names,
                   samples=samples, warnings=warnings)
