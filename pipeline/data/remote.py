"""Datasets under an fsspec URL: ``s3://bucket/photos``, ``gs://...``, ``file:///data/x``.

The root is listed once (one recursive ``find``: a paginated listing on object storage, no
request per file); the listing answers the calls the folder layout rules make
(:func:`pipeline.data.folder.read_tree`), so a URL is read with exactly the rules and refusals
of a local folder. Each file's stat comes from the listing too: its size and its ETag (or
generation, or MD5; else its modification time) key the hash cache, so a rerun over unchanged
objects reads none of them. Image bytes are read through fsspec by both engines
(:mod:`pipeline.data.locations`). Object stores have no symlinks; under ``file://`` a link
that leaves the root is refused as in a local folder. A CSV or Parquet manifest under a URL
is read with the rules of a local one, against one listing of its folder.
"""

from __future__ import annotations

import datetime as _dt
import os
import time
from pathlib import Path, PurePosixPath
from typing import Any

from pipeline.data.folder import outside_root, read_tree
from pipeline.data.hash_cache import FRESH_SECONDS, FileStat, Hasher
from pipeline.data.locations import read_bytes, url_fs
from pipeline.data.manifest import MANIFEST_SUFFIXES, manifest_rows, read_rows
from pipeline.data.samples import Dataset
from pipeline.errors import PipelineError

#: Listing fields that change whenever an object's bytes do (content or version ids).
CONTENT_STAMPS = ("ETag", "etag", "generation", "md5Hash", "content_md5")
#: Listing fields holding a modification time (trusted once older than FRESH_SECONDS).
TIME_STAMPS = ("mtime", "LastModified", "last_modified", "updated", "modified")


class RemoteTree:
    """The listing of a URL, answering :class:`pipeline.data.folder.LocalTree`'s calls."""

    def __init__(self, url: str):
        self.fs, path = url_fs(url)
        self.root = PurePosixPath(path.rstrip("/") or "/")
        self.source = self.location(self.root)
        self.name = self.root.name or self.source
        self.local = "file" in (self.fs.protocol if isinstance(self.fs.protocol, tuple)
                                else (self.fs.protocol,))
        self.info: dict[PurePosixPath, dict[str, Any]] = {}
        self.dirs: dict[PurePosixPath, set[PurePosixPath]] = {}
        self.files: dict[PurePosixPath, list[PurePosixPath]] = {}
        self._list(url)

    def __str__(self) -> str:
        return self.source

    def _list(self, url: str) -> None:
        try:
            listing = self.fs.find(str(self.root), withdirs=True, detail=True)
        except (OSError, ValueError) as e:
            raise PipelineError(f"{url}: cannot list ({str(e).splitlines()[0]})") from None
        for name, info in listing.items():
            p = PurePosixPath(name)
            if p == self.root or not p.is_relative_to(self.root):
                continue
            if info.get("type") == "directory":
                self._add_dir(p)
            else:
                self._add_dir(p.parent)
                self.files.setdefault(p.parent, []).append(p)
                self.info[p] = info
        if not self.info and not self.dirs:
            raise PipelineError(f"{url}: no such folder, or nothing in it")

    def _add_dir(self, d: PurePosixPath) -> None:
        """Register ``d`` and its parents up to the root (object stores list no folders)."""
        while d != self.root and d not in self.dirs.get(d.parent, ()):
            self.dirs.setdefault(d.parent, set()).add(d)
            d = d.parent

    def subdirs(self, folder: PurePosixPath) -> list[PurePosixPath]:
        return sorted(d for d in self.dirs.get(folder, ()) if not d.name.startswith("."))

    def files_in(self, folder: PurePosixPath) -> list[PurePosixPath]:
        return sorted(self.files.get(folder, ()))

    def files_below(self, folder: PurePosixPath) -> list[PurePosixPath]:
        out, todo = [], [folder]
        while todo:
            d = todo.pop()
            out += self.files.get(d, ())
            todo += self.dirs.get(d, ())
        return sorted(out)

    def inside(self, path: PurePosixPath) -> bool:
        """Object stores have no links; under ``file://`` links are followed, as here."""
        if not self.local:
            return True
        real = Path(os.path.realpath(str(self.root)))
        return Path(os.path.realpath(str(path))).is_relative_to(real)

    def check_inside(self, path: PurePosixPath) -> None:
        if not self.inside(path):
            raise PipelineError(outside_root(self.location(path), self.source))

    def is_file(self, path: PurePosixPath) -> bool:
        return path in self.info

    def stat(self, path: PurePosixPath) -> FileStat:
        info = self.info[path]
        return FileStat(self.location(path), int(info.get("size") or 0), *stamp_of(info))

    def location(self, path: PurePosixPath) -> str:
        return str(self.fs.unstrip_protocol(str(path)))


def stamp_of(info: dict[str, Any]) -> tuple[str | None, bool]:
    """An object's stamp from its listing, and whether it is too fresh to be remembered."""
    for key in CONTENT_STAMPS:
        if info.get(key):
            return f"{key}={info[key]}", False
    for key in TIME_STAMPS:
        value = info.get(key)
        if isinstance(value, _dt.datetime):
            value = value.timestamp()
        if isinstance(value, int | float) and not isinstance(value, bool):
            extra = f":ino={info['ino']}" if "ino" in info else ""
            return f"{key}={value!r}{extra}", value > time.time() - FRESH_SECONDS
    return None, False


def read_url(url: str, hasher: Hasher | None = None) -> Dataset:
    """A dataset under ``url``: a folder layout (the same layouts as a local folder), or a
    CSV or Parquet manifest (paths relative to its folder, whose listing gives the stats)."""
    if not url.lower().endswith(MANIFEST_SUFFIXES):
        return read_tree(RemoteTree(url), hasher)
    folder, _, name = url.rpartition("/")
    rows = manifest_rows(url, lambda: read_bytes(url))
    return read_rows(RemoteTree(folder), url, PurePosixPath(name).stem, rows, hasher)
