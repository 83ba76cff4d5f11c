"""Running an extraction: plan the bases, feed the missing rows, finalize each feature set."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline.context import Context
from pipeline.data.samples import Dataset
from pipeline.data.sources import load_dataset
from pipeline.extract.feed import FeedRun, feed_missing
from pipeline.extract.options import DEFAULT_BASE, ExtractOptions
from pipeline.extract.plan import (
    BasePlan,
    check_bases,
    feature_set_info,
    plan_bases,
    samples_digest,
)
from pipeline.extract.result import ExtractResult


def extract(data: str | Path, bases: Sequence[str] = (DEFAULT_BASE,),
            options: ExtractOptions | None = None, *, ctx: Context | None = None,
            cache_dir: str | os.PathLike | None = None, quiet: bool = False,
            **kwargs: Any) -> list[Path]:
    """Extract features of ``data`` with each base; return one cache path per base.

    See :func:`run_extraction` for the arguments.
    """
    return [r.path for r in run_extraction(data, bases, options, ctx=ctx, cache_dir=cache_dir,
                                           quiet=quiet, **kwargs)]


def run_extraction(data: str | Path, bases: Sequence[str] = (DEFAULT_BASE,),
                   options: ExtractOptions | None = None, *, ctx: Context | None = None,
                   cache_dir: str | os.PathLike | None = None, quiet: bool = False,
                   **kwargs: Any) -> list[ExtractResult]:
    """Run every base in ``bases`` over ``data`` once, into the cache.

    ``data`` is a folder of class subfolders (optionally under train/validation/test), a CSV
    manifest ``path,label[,split]`` or a builtin name (``elpv``). Each image is decoded once
    and fed to every base. ``options`` (or keyword arguments with the names of
    :class:`ExtractOptions`: ``weights``, ``pooling``, ``split``, ...) say how; ``ctx`` (or
    ``cache_dir`` and ``quiet``) where to write and how loudly.
    """
    options = ExtractOptions.resolve(options, **kwargs)
    ctx = ctx or Context.create(cache_dir=cache_dir, quiet=quiet)
    bases = check_bases(bases)
    dataset = load_dataset(data, split=options.split, seed=options.seed,
                           elpv_levels=options.elpv_levels)
    ctx.report.line(f"{dataset.name}: {len(dataset.samples)} images, "
                    f"{len(dataset.class_names)} classes, splits {dataset.split_counts()}")
    plans = plan_bases(dataset, bases, options, ctx)
    with contextlib.ExitStack() as locks:
        for plan in sorted(plans, key=lambda p: str(p.path)):  # one order: no deadlock
            locks.enter_context(plan.writer)
        digest = samples_digest(dataset)
        for plan in plans:
            plan.prepare(dataset.samples, digest)
        run = feed_missing(dataset.samples, plans, options.batch_size, ctx.report)
        results = [_finish(plan, dataset, digest, run, options) for plan in plans]
    for result in results:
        ctx.report.result(result)
    return results


def _finish(plan: BasePlan, dataset: Dataset, digest: str, run: FeedRun,
            options: ExtractOptions) -> ExtractResult:
    """The result of one base; its feature set written (unless it was a hit)."""
    rows = [s for s in dataset.samples if s.sha256 not in run.skipped]
    skipped = [(s.id, run.skipped[s.sha256]) for s in dataset.samples
               if s.sha256 in run.skipped]
    new = plan.writer.n_added
    result = ExtractResult(
        base=plan.extractor.spec.name, path=plan.path, hit=plan.hit, n_rows=len(rows),
        n_new=new, n_reused=0 if plan.hit else len(rows) - new, skipped=skipped,
        seconds=run.seconds if new else 0.0)
    if not plan.hit:
        info = feature_set_info(plan, dataset, rows, digest, result, options)
        plan.writer.finalize(ids=[s.id for s in rows], sha256=[s.sha256 for s in rows],
                             labels=[s.label for s in rows], split=[s.split for s in rows],
                             info=info, skipped=skipped)
    return result
