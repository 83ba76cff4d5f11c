"""The hash cache: each dataset file's sha256, remembered by what a listing sees of it.

Samples are content-addressed, so listing a dataset means hashing every image; on a rerun
over unchanged files that is most of the time of a cache hit (and all of it on object
storage). The hash cache remembers each file's hash keyed by its location, its size and a
**stamp**: ``mtime_ns``, inode and device on this machine's disk; the ETag (or generation,
or MD5) on object storage, else its modification time. A file whose size or stamp changed is
hashed again; a file with no stamp is always hashed.

Trust, since a wrong hash would give an image another image's features:

* one file per dataset source under ``<cache dir>/hashes/``, JSON lines written whole
  (:func:`pipeline.fileio.atomic_write_text`): a header naming the format, its version and
  the source; one ``[location, size, stamp, sha256]`` row per file; a trailer with the row
  count and the sha256 of the rows. A file that fails any check (damaged, truncated, another
  source's, another version) is ignored with one warning and rewritten;
* a file modified less than :data:`FRESH_SECONDS` before it was listed is hashed but not
  remembered: a rewrite within the file system's timestamp granularity could keep its stamp
  (git's "racily clean" entries);
* ``--rehash`` reads nothing from it (every file is hashed) and rewrites it.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.data.locations import is_data_url, location_sha256, unreadable
from pipeline.errors import PipelineError
from pipeline.fileio import atomic_write_text, text_sha256

FORMAT = "pipeline hash cache"
VERSION = 1
#: Files modified this recently (seconds before listing) are hashed but not remembered.
FRESH_SECONDS = 2.0
#: The folder under the cache folder.
HASHES_DIR = "hashes"
_SHA = re.compile(r"[0-9a-f]{64}")

Row = tuple[int, str, str]  # size, stamp, sha256


@dataclass(frozen=True)
class FileStat:
    """What a listing knows of one file: where it is, its size, and its stamp (``None``:
    nothing to key a remembered hash on)."""

    location: str
    size: int
    stamp: str | None
    fresh: bool = False  # modified too recently for its stamp to be trusted


def local_stat(path: str | os.PathLike) -> FileStat:
    """The stat of a file on this machine (one ``stat`` call; follows symlinks)."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise PipelineError(unreadable(str(path), e)) from None
    fresh = st.st_mtime_ns > time.time_ns() - int(FRESH_SECONDS * 1e9)
    return FileStat(str(path), st.st_size, f"{st.st_mtime_ns}:{st.st_ino}:{st.st_dev}", fresh)


HashFiles = Callable[[Sequence[str]], list[str]]


def hash_files_here(locations: Sequence[str]) -> list[str]:
    """The sha256 of each location, read by this process; one line for an unreadable one."""
    out = []
    for location in locations:
        try:
            out.append(location_sha256(location))
        except OSError as e:
            raise PipelineError(unreadable(location, e)) from None
    return out


class HashCache:
    """The remembered hashes under ``folder``, one file per dataset source."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.warnings: list[str] = []

    def path_for(self, source: str) -> Path:
        tail = source.rstrip("/").rsplit("/", 1)[-1] if is_data_url(source) else Path(source).name
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", tail)[:40] or "data"
        return self.folder / f"{slug}-{text_sha256(source)[:16]}.jsonl"

    def load(self, source: str) -> dict[str, Row]:
        """The rows remembered for ``source`` (empty, with one warning, if its file fails a
        check)."""
        path = self.path_for(source)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError) as e:
            return self._ignored(path, f"cannot read it ({e})")
        try:
            return parse(text, source)
        except (ValueError, TypeError, KeyError, IndexError) as e:
            return self._ignored(path, str(e) or type(e).__name__)

    def _ignored(self, path: Path, why: str) -> dict[str, Row]:
        self.warnings.append(f"{path}: hash cache ignored ({why}); every file is hashed again "
                             "and the file rewritten")
        return {}

    def save(self, source: str, rows: dict[str, Row]) -> None:
        """Remember ``rows`` (a cache folder that cannot be written costs a warning only:
        the hashes are right, just not remembered)."""
        try:
            atomic_write_text(self.path_for(source), render(rows, source))
        except OSError as e:
            self.warnings.append(f"{self.path_for(source)}: cannot write the hash cache ({e})")


def render(rows: dict[str, Row], source: str) -> str:
    lines = [json.dumps([loc, size, stamp, sha])
             for loc, (size, stamp, sha) in sorted(rows.items())]
    body = "".join(line + "\n" for line in lines)
    header = json.dumps({"format": FORMAT, "version": VERSION, "source": source})
    trailer = json.dumps({"rows": len(lines), "sha256": text_sha256(body)})
    return f"{header}\n{body}{trailer}\n"


def parse(text: str, source: str) -> dict[str, Row]:
    """The rows of a hash-cache file; ``ValueError`` naming the first check it fails."""
    lines = text.split("\n")
    if len(lines) < 3 or lines[-1] != "":
        raise ValueError("truncated")
    header, trailer = json.loads(lines[0]), json.loads(lines[-2])
    if header.get("format") != FORMAT or header.get("version") != VERSION:
        raise ValueError(f"not a version-{VERSION} hash cache")
    if header.get("source") != source:
        raise ValueError(f"it belongs to {header.get('source')!r}")
    body = lines[1:-2]
    if trailer != {"rows": len(body), "sha256": text_sha256("".join(x + "\n" for x in body))}:
        raise ValueError("its checksum does not match its rows")
    rows: dict[str, Row] = {}
    for line in body:
        loc, size, stamp, sha = json.loads(line)
        if not (isinstance(loc, str) and type(size) is int and size >= 0
                and isinstance(stamp, str) and isinstance(sha, str) and _SHA.fullmatch(sha)):
            raise ValueError(f"a malformed row {line[:80]!r}")
        rows[loc] = (size, stamp, sha)
    return rows


@dataclass
class Hasher:
    """Hashes a dataset's files: remembered hashes where the stat matches, the rest read by
    ``hash_files`` (this process, or Ray tasks for ``--engine ray``); counts what it did."""

    cache: HashCache | None = None
    hash_files: HashFiles = hash_files_here
    rehash: bool = False
    on_line: Callable[[str], None] | None = None
    read: int = 0
    remembered: int = 0
    warnings: list[str] = field(default_factory=list)

    def hashes(self, source: str, stats: Sequence[FileStat]) -> list[str]:
        """The sha256 of each file in ``stats``, in order."""
        known: dict[str, Row] = {}
        if self.cache is not None and not self.rehash:
            known = self.cache.load(source)
        out: list[str] = []
        misses: list[int] = []
        for i, st in enumerate(stats):
            row = known.get(st.location)
            hit = st.stamp is not None and row is not None and row[:2] == (st.size, st.stamp)
            out.append(row[2] if hit and row is not None else "")
            if not hit:
                misses.append(i)
        if misses:
            for i, sha in zip(misses, self.hash_files([stats[i].location for i in misses]),
                              strict=True):
                out[i] = sha
            if self.on_line is not None and self.cache is not None:
                self.on_line(f"hashed {len(misses)} of {len(stats)} files " + (
                    "(--rehash: the hash cache was not read)" if self.rehash else
                    f"({len(stats) - len(misses)} unchanged, from the hash cache)"))
        self.read += len(misses)
        self.remembered += len(stats) - len(misses)
        if self.cache is not None:
            keep = {st.location: (st.size, st.stamp, sha)
                    for st, sha in zip(stats, out, strict=True)
                    if st.stamp is not None and not st.fresh}
            if keep != known or self.rehash:
                self.cache.save(source, keep)
            self.warnings += self.cache.warnings
            self.cache.warnings.clear()
        return out
