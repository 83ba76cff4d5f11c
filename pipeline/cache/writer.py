"""The feature-set writer: lock, resumable shards, known rows and the atomic finalize.

In the spirit of Hugging Face datasets' ``ArrowWriter``: whatever computes features (the local
engine, or the Ray engine through shards in its work folder) feeds finished batches as content
hashes + arrays; the writer knows nothing about models or image reading::

    with FeatureSetWriter(path, feature_shape=(1280,), dtype="float32") as w:
        w.resume()                                  # rows from the old file and from shards
        todo = w.missing(all_sha256s)
        for shas, feats in compute(todo):
            w.add(shas, feats)                      # saved as a shard
        w.finalize(ids=..., sha256=..., labels=..., split=..., info=...)

Memory stays bounded whatever the number of rows: the writer keeps only where each row is
(the old file or a shard), never the rows; ``finalize`` streams them into the new file
(:mod:`pipeline.cache.merge`) and the integrity checks of the old file read it a chunk at a
time.

While the writer is open it holds the cache's lock, so two extractions of one cache never
interleave (the second waits). Every added batch is saved as a shard in the background, so a
killed run resumes from them. ``finalize`` streams the HDF5 file in the order given under a
temporary name and renames it into place, then clears the shards: nothing appears under the
final name until it is complete.

The machine failing is one line (:class:`PipelineError`), never a traceback: a cache folder
that cannot be written still serves a cache hit (no lock is needed to read a file renamed
into place whole), and anything that must write says the folder is read-only; a full disk
keeps the finished shards, and the next run resumes from them. A run killed while writing
leaves temporary files; the next writer of the same cache removes them while it holds the
lock (so never another run's live files).
"""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Self

import numpy as np

from pipeline.cache.info import FeatureSetInfo
from pipeline.cache.merge import RowSources, merge_into
from pipeline.cache.store import FeatureRows, open_feature_rows, read_info
from pipeline.cache.work import WorkShards, shard_name
from pipeline.errors import PipelineError
from pipeline.fileio import file_lock
from pipeline.progress import Reporter


def work_path(path: Path) -> Path:
    """The folder of a feature set's resumable shards."""
    return path.with_suffix(".work")


def lock_path(path: Path) -> Path:
    """A feature set's lock file (hidden; it outlives runs)."""
    return path.parent / f".{path.stem}.lock"


def litter(path: Path) -> list[Path]:
    """Temporary files that killed runs of this feature set left behind: its HDF5 file being
    written, and shards being saved."""
    work = work_path(path)
    return [*path.parent.glob(f".{path.name}.*.tmp"),
            *(work.glob(".shard-*") if work.is_dir() else ())]


#: Shard saves allowed in flight before ``add`` waits (each holds its batch in memory).
MAX_PENDING_SAVES = 2


#: What a write into a folder that cannot be written fails with.
READ_ONLY_ERRNOS = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})


class FeatureSetWriter:
    """Writes one feature set (one HDF5 file); use it as a context manager."""

    def __init__(self, path: str | Path, *, feature_shape: Sequence[int], dtype: str,
                 compression: str = "auto", report: Reporter | None = None):
        self.path = Path(path)
        self.feature_shape = tuple(int(d) for d in feature_shape)
        self.dtype = np.dtype(dtype)
        self.compression = compression
        self.report = report or Reporter(quiet=True)
        #: The shards: ``<cache>.work/`` beside the file (see :meth:`use_work_dir`).
        self.shards = WorkShards(work_path(self.path))
        self.lock_path = lock_path(self.path)
        #: Where each row already computed is (the old file or a shard), by content hash.
        self.sources = RowSources(self.shards)
        #: Rows added by this writer (not reused).
        self.n_added = 0
        self._stack: contextlib.ExitStack | None = None
        self._saver: ThreadPoolExecutor | None = None
        self._pending: list[Future] = []
        self._existing: FeatureSetInfo | None = None
        self._existing_read = False
        self._loaded: FeatureRows | None = None
        #: Why the cache folder cannot be written (``None``: it can, and the lock is held).
        self.read_only: str | None = None

    def write_error(self, e: OSError) -> PipelineError:
        """A failed write as one line (a full disk, a read-only folder, ...)."""
        why = e.strerror or str(e)
        if e.errno in READ_ONLY_ERRNOS:
            return PipelineError(f"cannot write to the cache folder {self.path.parent} ({why}); "
                                 "a cache hit only reads, but this extraction must write: use "
                                 "a writable --cache-dir")
        return PipelineError(f"cannot write {self.path} ({why}); finished work is kept and "
                             "the next run resumes")

    def require_writable(self) -> None:
        """Refuse, in one line, to start work that must write into a read-only folder."""
        if self.read_only is not None:
            raise PipelineError(f"cannot write to the cache folder {self.path.parent} "
                                f"({self.read_only}); a cache hit only reads, but this "
                                "extraction must write: use a writable --cache-dir")

    # -- the lock and the background shard saver ----------------------------------------
    def __enter__(self) -> Self:
        stack = contextlib.ExitStack()
        try:
            stack.enter_context(file_lock(self.lock_path, on_wait=lambda: self.report.line(
                f"waiting for another extraction of {self.path}")))
        except OSError as e:
            if e.errno not in READ_ONLY_ERRNOS:
                raise self.write_error(e) from None
            self.read_only = e.strerror or str(e)  # reading needs no lock; writing is refused
        else:
            self.clean_litter()
        self._saver = stack.enter_context(ThreadPoolExecutor(max_workers=1))
        self._stack = stack
        return self

    def use_work_dir(self, work_dir: str | None) -> None:
        """Keep the shards under ``work_dir`` (a folder or an fsspec URL, e.g. one a whole
        cluster reaches), in a folder named after the file; call before :meth:`resume`."""
        if work_dir is not None:
            self.shards = WorkShards(f"{str(work_dir).rstrip('/')}/{self.path.stem}.work")
            self.sources = RowSources(self.shards)
            if self.shards.url is None and self.read_only is None and self.shards.path.is_dir():
                for p in self.shards.path.glob(".shard-*"):  # killed saves (lock held)
                    with contextlib.suppress(OSError):
                        p.unlink()

    def reindex(self) -> None:
        """Index the shards again (another engine, e.g. Ray workers, has added some)."""
        self.sources.index_shards()

    def clean_litter(self) -> None:
        """Remove the temporary files of killed runs of this cache: its HDF5 file being
        written and shards being saved (call with the lock held: no run of this cache is
        writing them)."""
        for p in litter(self.path):
            with contextlib.suppress(OSError):
                p.unlink()

    def clear_shards(self) -> None:
        """Drop the work folder (its rows are in the final file, or no longer wanted)."""
        if self.read_only is None:
            self.shards.clear()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        stack, self._stack, self._saver = self._stack, None, None
        try:
            if kind is None:
                self.flush()
        finally:
            if stack is not None:
                stack.close()  # waits for shards being saved, then releases the lock

    def _require_open(self) -> ThreadPoolExecutor:
        if self._saver is None or self._stack is None:
            raise RuntimeError("use FeatureSetWriter as a context manager (it holds the lock)")
        return self._saver

    # -- what is already known -----------------------------------------------------------
    def existing_info(self) -> FeatureSetInfo | None:
        """The record of the complete file under the final name; ``None`` when there is none
        or it cannot be read (warned: it will be rebuilt)."""
        if not self._existing_read and self.path.exists():
            try:
                self._existing = read_info(self.path)
            except PipelineError as e:
                self.report.warn(f"{e}; rebuilding it")
        self._existing_read = True
        return self._existing

    def existing_is_whole(self) -> bool:
        """Whether the existing file passes its integrity checks (rows digest and feature
        checksum). A file that fails is warned about and then neither a hit nor a source of
        rows: it is rebuilt from scratch."""
        if self.existing_info() is None:
            return False
        try:
            fs = open_feature_rows(self.path)  # checks the features a chunk at a time
        except PipelineError as e:
            self.report.warn(f"{e}; rebuilding it")
            self._existing = None
            return False
        if fs.info.rows_digest is None:
            return False  # written before rows were digested: rows reusable, not a hit
        self._loaded = fs
        return True

    def resume(self) -> int:
        """Load the rows already computed: from the existing file (when readable) and from
        the finished shards of an interrupted run. Returns how many rows are known."""
        self._require_open()
        fs, self._loaded = self._loaded, None
        if fs is None and self.existing_info() is not None:
            try:
                fs = open_feature_rows(self.path)
            except PipelineError as e:
                self.report.warn(f"{e}; rebuilding it")
                self._existing = None
        if fs is not None and tuple(fs.feature_shape) == self.feature_shape:
            self.sources.add_old(fs)
        self.sources.index_shards()
        return len(self.sources)

    def __contains__(self, sha256: str) -> bool:
        return sha256 in self.sources

    def missing(self, sha256s: Iterable[str]) -> set[str]:
        """The content hashes among ``sha256s`` that have no row yet."""
        return {s for s in sha256s if s not in self.sources}

    # -- feeding -------------------------------------------------------------------------
    def add(self, sha256s: Sequence[str], features: np.ndarray) -> None:
        """Add a finished batch: saved as a shard (in the background, at most
        :data:`MAX_PENDING_SAVES` at a time; a failed save is raised by a later call)."""
        saver = self._require_open()
        features = np.asarray(features).astype(self.dtype, copy=False)
        if len(features) != len(sha256s) or features.shape[1:] != self.feature_shape:
            raise ValueError(f"batch of {len(sha256s)} hashes and features {features.shape}; "
                             f"expected rows of shape {self.feature_shape}")
        if not len(sha256s):
            return
        self.sources.add_shard(shard_name(sha256s), list(sha256s))
        self.n_added += len(sha256s)
        self._pending.append(saver.submit(self.shards.save, list(sha256s), features))
        self._reap(wait=False)
        while len(self._pending) > MAX_PENDING_SAVES:
            self._wait_oldest()

    def _wait_oldest(self) -> None:
        self._surface(self._pending.pop(0))

    def _surface(self, saved: Future) -> None:
        try:
            saved.result()  # surface a failed save
        except OSError as e:
            raise self.write_error(e) from None

    def flush(self) -> None:
        """Wait until every added batch is saved as a shard."""
        self._reap(wait=True)

    def _reap(self, wait: bool) -> None:
        done = [f for f in self._pending if wait or f.done()]
        self._pending = [f for f in self._pending if f not in done]
        for f in done:
            self._surface(f)

    # -- the end -------------------------------------------------------------------------
    def finalize(self, *, ids: Sequence[str], sha256: Sequence[str], labels: Sequence[int],
                 split: Sequence[str], info: FeatureSetInfo,
                 skipped: Sequence[tuple[str, str]] = ()) -> Path:
        """Write the feature set with one row per entry, in the order given (every hash must
        have a row), rename it into place, and clear the shards."""
        self._require_open()
        self.flush()
        absent = self.missing(sha256)
        if absent:
            raise ValueError(f"{len(absent)} rows have no features, e.g. {sorted(absent)[0]}")
        if not len(sha256):
            raise PipelineError(f"no rows to write to {self.path}: every image was skipped "
                                f"({len(skipped)} undecodable)")
        try:
            merge_into(self.path, self.sources, order=list(sha256),
                       feature_shape=self.feature_shape, dtype=self.dtype, ids=ids,
                       labels=labels, split=split, info=info, skipped=skipped,
                       compression=self.compression)
        except OSError as e:
            raise self.write_error(e) from None
        self._existing, self._existing_read = info, False
        self.shards.clear()
        return self.path
