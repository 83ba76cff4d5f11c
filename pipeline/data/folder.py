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

from pathlib import Path, PurePath
from typing import Any

from pipeline.data.hash_cache import FileStat, Hasher, local_stat
from pipeline.data.samples import Dataset, Sample, is_image_name
from pipeline.errors import PipelineError

#: A dataset's tree: :class:`LocalTree` here, ``pipeline.data.remote.RemoteTree`` for a URL.
Tree = Any

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


class LocalTree:
    """A dataset folder on this machine's disk: the file-system calls the layout rules below
    make (:mod:`pipeline.data.remote` answers the same calls for a URL)."""

    def __init__(self, root: Path):
        self.root = root.resolve()
        self.source = str(self.root)
        self.name = self.root.name
        self._inside: set[Path] = set()

    def __str__(self) -> str:
        return self.source

    def subdirs(self, folder: Path) -> list[Path]:
        try:
            return sorted(p for p in folder.iterdir()
                          if p.is_dir() and not p.name.startswith("."))
        except OSError as e:
            raise PipelineError(f"{folder}: cannot read folder ({e.strerror or e})") from None

    def files_below(self, folder: Path) -> list[Path]:
        return [f for f in sorted(folder.rglob("*")) if f.is_file()]

    def files_in(self, folder: Path) -> list[Path]:
        return [f for f in sorted(folder.iterdir()) if f.is_file()]

    def inside(self, path: Path) -> bool:
        """Whether ``path`` (symlinks followed) is inside the root. A file that is not a
        link, in a folder already found inside, is: one lstat instead of resolving every
        component of every file."""
        if path.parent in self._inside and not path.is_symlink():
            return True
        if not path.resolve().is_relative_to(self.root):
            return False
        self._inside.add(path)
        return True

    def check_inside(self, path: Path) -> None:
        if not self.inside(path):
            raise PipelineError(outside_root(path, self.root))

    def is_file(self, path: Path) -> bool:
        return path.is_file()

    def stat(self, path: Path) -> FileStat:
        return local_stat(path)

    def location(self, path: Path) -> Path:
        return path


def outside_root(path: object, root: object) -> str:
    return (f"{path}: a symlink that leaves the dataset root {root}; copy the file in or "
            "point at a folder that holds it")


def _images_below(tree: Tree, folder: PurePath) -> list[PurePath]:
    """Visible image files anywhere below ``folder`` (hidden files and folders skipped)."""
    return [f for f in tree.files_below(folder)
            if not any(part.startswith(".") for part in f.relative_to(tree.root).parts)
            and is_image_name(f.name)]


def _direct_images(tree: Tree, folder: PurePath) -> list[PurePath]:
    return [f for f in tree.files_in(folder) if is_image_name(f.name)]


def _nested_image_dirs(tree: Tree, class_dir: PurePath) -> list[str]:
    """Subfolders of a class folder that hold images: a layout we must not flatten."""
    return [d.relative_to(tree.root).as_posix() for d in tree.subdirs(class_dir)
            if _images_below(tree, d)]


Entry = tuple[PurePath, str, str | None]


def _class_entries(tree: Tree, folder: PurePath, split: str | None) -> list[Entry]:
    """``(class folder, class name, split)`` for each class folder in ``folder``."""
    entries = []
    for class_dir in tree.subdirs(folder):
        nested = _nested_image_dirs(tree, class_dir)
        if nested:
            shown = ", ".join(nested[:4]) + (" ..." if len(nested) > 4 else "")
            raise PipelineError(
                f"{tree}: class folder {class_dir.relative_to(tree.root).as_posix()}/ holds "
                f"image subfolders ({shown}); expected one folder of images per class, or "
                "split folders (train/ val/ test/) holding class folders")
        entries.append((class_dir, class_dir.name, split))
    return entries


def _presplit_entries(tree: Tree, split_dirs: dict[PurePath, str], warnings: list[str]
                      ) -> list[Entry]:
    seen: dict[str, PurePath] = {}
    for d, split in split_dirs.items():
        if split in seen:
            raise PipelineError(f"{tree}: both {seen[split].name}/ and {d.name}/ are {split} "
                                "folders; keep one")
        seen[split] = d
        loose = _direct_images(tree, d)
        if loose:
            raise PipelineError(f"{tree}: split folder {d.name}/ holds images directly "
                                f"({loose[0].name} ...); put them in one subfolder per class")
    if "train" not in seen:
        raise PipelineError(f"{tree}: split folders {sorted(d.name for d in split_dirs)} but no "
                            "train/ (or training/, training_set/) folder")
    entries = [e for d, split in split_dirs.items() for e in _class_entries(tree, d, split)]
    by_class: dict[str, set[str]] = {}
    for _, name, split in entries:
        by_class.setdefault(name, set()).add(str(split))
    only = sorted(c for c, splits in by_class.items() if len(splits) == 1 and len(seen) > 1)
    if only:
        listed = ", ".join(f"{c} ({next(iter(by_class[c]))})" for c in only[:6])
        warnings.append(f"class(es) present in only one split folder: {listed}")
    return entries


def _stray(tree: Tree, subdirs: list[PurePath], split_dirs: dict[PurePath, str],
           warnings: list[str]) -> None:
    stray = [d.name for d in subdirs if d not in split_dirs and _images_below(tree, d)]
    loose = _direct_images(tree, tree.root)
    if stray or loose:
        what = [f"folder(s) {', '.join(s + '/' for s in stray)}"] if stray else []
        what += [f"{len(loose)} image(s) at the top level"] if loose else []
        warnings.append(f"{tree}: ignored {' and '.join(what)} beside the split folders "
                        f"({', '.join(d.name + '/' for d in split_dirs)})")


def read_folder(root: Path, hasher: Hasher | None = None) -> Dataset:
    """A dataset from a folder of class folders, optionally inside split folders; its files
    hashed by ``hasher`` (default: read here, nothing remembered)."""
    return read_tree(LocalTree(root), hasher)


def read_tree(tree: Tree, hasher: Hasher | None = None) -> Dataset:
    """A dataset from the class folders of ``tree`` (a local folder or a URL's listing)."""
    subdirs = tree.subdirs(tree.root)
    warnings: list[str] = []
    split_dirs = {d: s for d in subdirs if (s := split_of_name(d.name)) is not None}
    if split_dirs:
        entries = _presplit_entries(tree, split_dirs, warnings)
        _stray(tree, subdirs, split_dirs, warnings)
    else:
        entries = _class_entries(tree, tree.root, None)
    class_names = sorted({name for _, name, _ in entries}) if split_dirs else \
        [name for _, name, _ in entries]
    if not class_names:
        raise PipelineError(f"{tree}: no class subfolders; expected one folder of images per "
                            "class (or train/ and test/ folders holding them)")
    found = []
    for class_dir, name, split in entries:
        tree.check_inside(class_dir)
        for f in _images_below(tree, class_dir):
            tree.check_inside(f)
            found.append((f, class_names.index(name), split))
    shas = (hasher or Hasher()).hashes(tree.source, [tree.stat(f) for f, _, _ in found])
    samples = [Sample(id=f.relative_to(tree.root).as_posix(), path=tree.location(f),
                      label=label, sha256=sha, split=split)
               for (f, label, split), sha in zip(found, shas, strict=True)]
    return Dataset(name=tree.name, source=tree.source, root=tree.location(tree.root),
                   class_names=class_names, samples=samples, warnings=warnings)
