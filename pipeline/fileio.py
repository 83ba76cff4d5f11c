"""Shared file I/O: atomic writes, JSON, content hashes, locks and UTC timestamps.

Everything the project persists goes through here, so every file is written the same way:
under a unique temporary name in the destination folder, then renamed into place, so a file
under its final name is always whole, two writers never share a temporary file, and new
files follow the user's umask (``tempfile.mkstemp`` alone would make them 0600).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import hashlib
import json
import math
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pipeline.errors import PipelineError

_MISSING: Any = object()


def _umask() -> int:
    """The process umask, read without changing it where Linux allows: setting it (the only
    portable way to read it) would briefly give other threads, such as the background shard
    writer, a umask of 0 for the files and folders they create."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, suffix: str = ".tmp") -> Iterator[Path]:
    """A unique temporary path beside ``path``; renamed to ``path`` when the block succeeds.

    The temporary file is removed if the block raises (including ``KeyboardInterrupt``).
    ``suffix`` keeps the extension libraries look at (e.g. ``.weights.h5`` for Keras).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        if tmp.exists():
            os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns the path."""
    return atomic_write_bytes(path, text.encode("utf-8"))


_PLAIN = frozenset((str, int, bool, type(None)))


def json_safe(o: Any) -> Any:
    """Plain JSON values: NaN/inf become null; numpy scalars and arrays, tuples, sets and
    paths become their plain Python equivalents."""
    if type(o) in _PLAIN:  # most values (digests walk thousands of rows): no other check
        return o
    if isinstance(o, dict):
        return {str(k): json_safe(v) for k, v in o.items()}
    if isinstance(o, list | tuple | set | frozenset):
        return [json_safe(v) for v in o]
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "tolist") and callable(o.tolist):  # numpy scalars and arrays
        return json_safe(o.tolist())
    if isinstance(o, float) and not math.isfinite(o):
        return None
    return o


def dumps_json(data: Any, *, indent: int | None = 2) -> str:
    """``data`` as strict JSON text (non-finite numbers become null)."""
    return json.dumps(json_safe(data), indent=indent, allow_nan=False, sort_keys=False)


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Write ``data`` as JSON atomically (non-finite numbers become null)."""
    return atomic_write_text(path, dumps_json(data) + "\n")


def read_json(path: str | os.PathLike, default: Any = _MISSING) -> Any:
    """Parse a JSON file. Without ``default`` a missing or invalid file is a one-line
    :class:`PipelineError`; with it, ``default`` is returned instead."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        if default is not _MISSING:
            return default
        raise PipelineError(f"{path}: missing") from None
    except (OSError, ValueError) as e:
        if default is not _MISSING:
            return default
        why = "not valid JSON" if isinstance(e, ValueError) else f"cannot read ({e})"
        raise PipelineError(f"{path}: {why}") from None


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes (``OSError`` if it cannot be read)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def json_sha256(obj: Any) -> str:
    """A stable digest of a JSON-able value (keys sorted)."""
    return text_sha256(json.dumps(json_safe(obj), sort_keys=True))


@contextlib.contextmanager
def file_lock(path: str | os.PathLike, *, blocking: bool = True,
              on_wait: Callable[[], None] | None = None) -> Iterator[bool]:
    """An exclusive ``flock`` on ``path`` (created if needed); yields whether it was taken.

    Blocking (the default) waits for the holder, calling ``on_wait`` once first; non-blocking
    yields ``False`` at once when another process holds it. ``flock`` locks die with their
    process, so a killed run never leaves a stale lock behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not blocking:
                yield False
                return
            if on_wait:
                on_wait()
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield True
    finally:
        os.close(fd)  # releases the lock


def utc_now() -> _dt.datetime:
    return _dt.datetime.now(_dt.UTC)


def utc_timestamp(when: _dt.datetime | None = None) -> str:
    """ISO 8601 in UTC, to the second: ``2026-11-25T22:29:04Z``."""
    return (when or utc_now()).strftime("%Y-%m-%dT%H:%M:%SZ")


def utc_stamp(when: _dt.datetime | None = None) -> str:
    """A file-name-safe UTC stamp for folder names: ``20261125-222904``."""
    return (when or utc_now()).strftime("%Y%m%d-%H%M%S")
