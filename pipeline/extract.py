"""Stage 1: run each base once over a dataset into the feature cache.

reader (decode once, resize per input size)  ->  bases (forward pass)  ->  work shards
(resumable)  ->  writer (one HDF5 feature set per base, renamed into place when whole).

Rows are addressed by content hash: features already in the cache file or in finished work
shards are reused, so re-running is a cache hit, added or changed images are the only ones
extracted, and a killed run resumes where it stopped.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import importlib.metadata
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import settings
from pipeline.bases import POOLINGS, Extractor, build_extractor, get_base
from pipeline.bases.weights import parse_weights
from pipeline.cache.key import cache_file_name, content_key, dataset_digest, options_key
from pipeline.cache.lock import exclusive
from pipeline.cache.store import COMPRESSIONS, load_feature_set, read_meta, write_feature_set
from pipeline.cache.work import WorkDir
from pipeline.data.samples import Dataset
from pipeline.data.sources import load_dataset
from pipeline.data.splits import DEFAULT_FRACTIONS
from pipeline.errors import PipelineError
from pipeline.progress import Reporter

DTYPES = ("float32", "float16")
DEFAULT_BASE = "efficientnet_lite0"


@dataclass
class ExtractResult:
    """What one base's extraction did."""

    base: str
    path: Path
    hit: bool
    n_rows: int
    n_new: int = 0
    n_reused: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def images_per_s(self) -> float:
        return self.n_new / self.seconds if self.seconds > 0 else 0.0


@dataclass
class _Plan:
    extractor: Extractor
    path: Path
    options: str
    work: WorkDir
    known: dict[str, np.ndarray]
    hit: bool
    n_reused: int = 0
    new_rows: int = 0
    compute_s: float = 0.0


def extract(data: str | Path, bases: Sequence[str] = (DEFAULT_BASE,), **options: Any) -> list[Path]:
    """Extract features of ``data`` with each base; return one cache path per base.

    See :func:`run_extraction` for the options.
    """
    return [r.path for r in run_extraction(data, bases, **options)]


def run_extraction(
    data: str | Path,
    bases: Sequence[str] = (DEFAULT_BASE,),
    *,
    weights: str | None = "imagenet",
    input_size: int | None = None,
    layer: str | None = None,
    pooling: str = "avg",
    dtype: str = "float32",
    batch_size: int = 32,
    cache_dir: str | Path | None = None,
    split: Sequence[float] = DEFAULT_FRACTIONS,
    seed: int = 0,
    elpv_levels: bool = False,
    compression: str = "auto",
    quiet: bool = False,
) -> list[ExtractResult]:
    """Run every base in ``bases`` over ``data`` once, into the cache.

    ``data`` is a folder of class subfolders (optionally under train/validation/test), a CSV
    manifest ``path,label[,split]`` or a builtin name (``elpv``). Each image is decoded once
    and fed to every base. ``weights`` is ``imagenet``, ``none`` or a weights file path.
    ``compression`` (auto, lzf, gzip, none) changes the file, not the numbers.
    """
    bases = list(bases)
    if not bases:
        raise PipelineError("no base given; e.g. --base efficientnet_lite0")
    if len(set(bases)) != len(bases):
        raise PipelineError(f"a base is named twice in {bases}")
    if dtype not in DTYPES:
        raise PipelineError(f"unknown dtype {dtype!r}; expected one of {', '.join(DTYPES)}")
    if compression not in COMPRESSIONS:
        raise PipelineError(f"unknown compression {compression!r}; expected one of "
                            f"{', '.join(COMPRESSIONS)}")
    if batch_size < 1:
        raise PipelineError(f"--batch-size {batch_size}: expected a positive whole number")
    if input_size is not None and input_size < 1:
        raise PipelineError(f"--input-size {input_size}: expected a positive whole number")
    for b in bases:  # fail on a typo before hashing a dataset
        get_base(b)
    if pooling not in POOLINGS:
        raise PipelineError(f"unknown pooling {pooling!r}; expected one of {', '.join(POOLINGS)}")
    weights = parse_weights(weights)
    report = Reporter(quiet=quiet)
    dataset = load_dataset(data, split=split, seed=seed, elpv_levels=elpv_levels)
    report.line(f"{dataset.name}: {len(dataset.samples)} images, {len(dataset.class_names)} "
                f"classes, splits {dataset.split_counts()}")
    extractors = [build_extractor(b, weights=weights, input_size=input_size, layer=layer,
                                  pooling=pooling) for b in bases]
    root = settings.cache_dir(cache_dir)
    plans = []
    for ex in extractors:
        okey = options_key(ex.key_options(), dtype)
        path = root / cache_file_name(dataset.name, ex.spec.name, okey)
        plans.append(_Plan(ex, path, okey, WorkDir(path.with_suffix(".work")), {}, False))

    with contextlib.ExitStack() as locks:
        for plan in sorted(plans, key=lambda p: str(p.path)):
            locks.enter_context(exclusive(
                plan.path.parent / f".{plan.path.stem}.lock",  # hidden: it outlives the run
                on_wait=lambda p=plan: report.line(f"waiting for another extraction of {p.path}")))
        digest = _samples_digest(dataset)
        for plan in plans:
            _load_known(plan, dataset, digest, report)
        results = _extract_missing(dataset, plans, dtype, batch_size, report)
        for plan, result in zip(plans, results, strict=True):
            if not plan.hit:
                _write(plan, dataset, digest, dtype, result, batch_size, split, seed, compression)
                plan.work.clear()
            report.result(result)
    return results


def _samples_digest(ds: Dataset) -> str:
    s = ds.samples
    return dataset_digest([x.id for x in s], [x.sha256 for x in s], [x.label for x in s],
                          [x.split for x in s], ds.class_names)


def _load_known(plan: _Plan, dataset: Dataset, digest: str, report: Reporter) -> None:
    """Features already computed for this base: from the cache file and finished shards."""
    if plan.path.exists():
        try:
            # The metadata decides a hit; the features are read only when rows can be reused.
            if read_meta(plan.path).get("samples_digest") == digest:
                plan.hit = True
                return
            fs = load_feature_set(plan.path)
        except PipelineError as e:
            report.warn(f"{e}; rebuilding it")
        else:
            plan.known.update(zip(fs.sha256, fs.features, strict=True))
    plan.known.update(plan.work.load())


def _extract_missing(dataset: Dataset, plans: list[_Plan], dtype: str, batch_size: int,
                     report: Reporter) -> list[ExtractResult]:
    samples = dataset.samples
    todo_by_plan = []
    for plan in plans:
        todo = set() if plan.hit else {s.sha256 for s in samples if s.sha256 not in plan.known}
        todo_by_plan.append(todo)
    # One decode per distinct image content, shared by every base that needs it.
    needed: dict[str, int] = {}
    for i, s in enumerate(samples):
        if any(s.sha256 in todo for todo in todo_by_plan) and s.sha256 not in needed:
            needed[s.sha256] = i
    order = sorted(needed.values())
    skipped: dict[str, str] = {}  # sha256 -> reason
    sizes = sorted({p.extractor.input_size for p in plans})
    start = time.perf_counter()
    if order:
        from pipeline.bases.forward import forward_fn
        from pipeline.data.reader import read_batches

        fns = [forward_fn(p.extractor) for p in plans]
        report.line(f"extracting {len(order)} images with "
                    f"{', '.join(p.extractor.spec.name for p in plans if not p.hit)}")
        paths = [str(samples[i].path) for i in order]

        def on_error(j: int, reason: str) -> None:
            skipped[samples[order[j]].sha256] = reason

        with ThreadPoolExecutor(max_workers=1) as writer, report.progress(len(order)) as bar:
            pending = []
            for index, ok, images in read_batches(paths, sizes, batch_size, on_error):
                shas = [samples[order[j]].sha256 for j in index]
                for plan, fn, todo in zip(plans, fns, todo_by_plan, strict=True):
                    want = np.array([ok[k] and shas[k] in todo for k in range(len(shas))])
                    if not want.any():
                        continue
                    t0 = time.perf_counter()
                    x = images[sizes.index(plan.extractor.input_size)][want]
                    feats = np.asarray(fn(x)).astype(dtype, copy=False)
                    plan.compute_s += time.perf_counter() - t0
                    rows = [s for s, w in zip(shas, want, strict=True) if w]
                    plan.known.update(zip(rows, feats, strict=True))
                    plan.new_rows += len(rows)
                    # Overlap the write of this batch with the next batch's compute.
                    pending.append(writer.submit(plan.work.save, rows, feats))
                bar.advance(len(index))
                for f in [f for f in pending if f.done()]:
                    f.result()  # surface a failed write now
                pending = [f for f in pending if not f.done()]
            for f in pending:
                f.result()
    seconds = time.perf_counter() - start
    results = []
    for plan in plans:
        n_rows = sum(1 for s in samples if s.sha256 not in skipped)
        bad = [(s.id, skipped[s.sha256]) for s in samples if s.sha256 in skipped]
        results.append(ExtractResult(
            base=plan.extractor.spec.name, path=plan.path, hit=plan.hit, n_rows=n_rows,
            n_new=plan.new_rows, n_reused=0 if plan.hit else n_rows - plan.new_rows,
            skipped=bad, seconds=seconds if plan.new_rows else 0.0))
    return results


def _write(plan: _Plan, ds: Dataset, digest: str, dtype: str, result: ExtractResult,
           batch_size: int, split: Sequence[float], seed: int, compression: str) -> None:
    bad = {sid for sid, _ in result.skipped}
    rows = [s for s in ds.samples if s.id not in bad]
    ex = plan.extractor
    if rows:
        features = np.stack([plan.known[s.sha256] for s in rows]).astype(dtype, copy=False)
    else:
        features = np.zeros((0, *ex.feature_shape), dtype=dtype)
    meta = dict(
        ex.describe(),
        class_names=ds.class_names,
        dataset=ds.name,
        dataset_source=ds.source,
        dataset_root=str(ds.root),  # where the images were; not part of any key
        dataset_options=ds.options,
        dtype=dtype,
        options_key=plan.options,
        key=content_key(plan.options, (s.sha256 for s in rows)),
        samples_digest=digest,
        split_fractions=list(split),
        split_seed=seed,
        versions=_versions(),
        extracted_at=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        extraction={"new_rows": plan.new_rows, "reused_rows": result.n_reused,
                    "seconds": round(result.seconds, 3),
                    "images_per_s": round(result.images_per_s, 2),
                    "forward_seconds": round(plan.compute_s, 3), "batch_size": batch_size},
        n_skipped=len(result.skipped),
    )
    write_feature_set(plan.path, features=features, labels=[s.label for s in rows],
                      ids=[s.id for s in rows], sha256=[s.sha256 for s in rows],
                      split=[s.split for s in rows], meta=meta, skipped=result.skipped,
                      compression=compression)


def _versions() -> dict[str, str]:
    out = {}
    for pkg in ("pipeline", "tensorflow-cpu", "tensorflow", "keras", "numpy", "h5py"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out[pkg] = importlib.metadata.version(pkg)
    return out
