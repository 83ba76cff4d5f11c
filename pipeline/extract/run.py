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
from pipeline.data.splits import per_class_counts
from pipeline.engines import EngineOptions
from pipeline.errors import PipelineError
from pipeline.extract.engine import dataset_hasher, feed, use_engine
from pipeline.extract.feed import FeedRun
from pipeline.extract.options import DEFAULT_BASE, ExtractOptions
from pipeline.extract.plan import (
    BasePlan,
    check_bases,
    check_runtime,
    feature_set_info,
    plan_bases,
    samples_digest,
)
from pipeline.extract.result import ExtractResult
from pipeline.progress import Reporter


def extract(data: str | Path, bases: Sequence[str] = (DEFAULT_BASE,),
            options: ExtractOptions | None = None, *, ctx: Context | None = None,
            cache_dir: str | os.PathLike | None = None, quiet: bool = False,
            **kwargs: Any) -> list[Path]:
    """Extract features of ``data`` with each base; return one cache path per base.

    See :func:`run_extraction` for the arguments. Example::

        from pipeline.extract import extract
        from pipeline.cache import load_feature_set
        paths = extract("photos/", ["efficientnet_lite0", "mobilenet_v2"], pooling="avg")
        X, y = load_feature_set(paths[0]).xy("train")   # a second call is a cache hit
    """
    return [r.path for r in run_extraction(data, bases, options, ctx=ctx, cache_dir=cache_dir,
                                           quiet=quiet, **kwargs)]


def run_extraction(data: str | Path, bases: Sequence[str] = (DEFAULT_BASE,),
                   options: ExtractOptions | None = None, *, ctx: Context | None = None,
                   cache_dir: str | os.PathLike | None = None, quiet: bool = False,
                   engine: EngineOptions | None = None, **kwargs: Any) -> list[ExtractResult]:
    """Run every base in ``bases`` over ``data`` once, into the cache.

    ``data`` is a folder of class subfolders (optionally under train/validation/test), a CSV
    manifest ``path,label[,split]`` or a builtin name (``elpv``). Each image is decoded once
    and fed to every base. ``options`` (or keyword arguments with the names of
    :class:`ExtractOptions`: ``weights``, ``pooling``, ``split``, ...) say how; ``ctx`` (or
    ``cache_dir`` and ``quiet``) where to write and how loudly; ``engine`` what computes
    the rows (default: ``$PIPELINE_ENGINE`` or the local engine).
    """
    options = ExtractOptions.resolve(options, **kwargs)
    engine = engine or EngineOptions.from_env()
    ctx = ctx or Context.create(cache_dir=cache_dir, quiet=quiet)
    bases = check_bases(bases)
    check_runtime(options)
    dataset = load_dataset(data, split=options.split, seed=options.seed,
                           elpv_levels=options.elpv_levels, hasher=dataset_hasher(engine, ctx))
    announce(dataset, ctx.report)
    plans = plan_bases(dataset, bases, options, ctx)
    use_engine(plans, engine)
    with contextlib.ExitStack() as locks:
        for plan in sorted(plans, key=lambda p: str(p.path)):  # one order: no deadlock
            locks.enter_context(plan.writer)
        digest = samples_digest(dataset)
        for plan in plans:
            plan.prepare(dataset.samples, digest)
        run, record = feed(dataset.samples, plans, options, engine, ctx.report)
        _refuse_nothing_decoded(dataset, plans, run)
        results = [_finish(plan, dataset, digest, run, options, record) for plan in plans]
    for result in results:
        ctx.report.result(result)
    return results


def announce(dataset: Dataset, report: Reporter) -> None:
    """What was read: size, the dataset's warnings, and the per-class split counts with
    which splits were given by the dataset and which carved out of its train split."""
    report.line(f"{dataset.name}: {len(dataset.samples)} images, "
                f"{len(dataset.class_names)} classes")
    for warning in dataset.warnings:
        report.warn(warning)
    origins: dict[str, list[str]] = {}
    for split, origin in dataset.split_origin.items():
        origins.setdefault(origin, []).append(split)
    report.line("splits: " + "; ".join(f"{origin} {', '.join(names)}"
                                       for origin, names in origins.items()))
    for split, by_class in per_class_counts(dataset.samples, dataset.class_names).items():
        shown = ", ".join(f"{c} {n}" for c, n in list(by_class.items())[:SHOWN_CLASSES])
        more = f" (+{len(by_class) - SHOWN_CLASSES} more classes)" \
            if len(by_class) > SHOWN_CLASSES else ""
        report.line(f"  {split:>10}: {sum(by_class.values())} ({shown}{more})")


#: Classes listed per split in the extract output (`pipeline cache info` shows them all).
SHOWN_CLASSES = 12


def _refuse_nothing_decoded(dataset: Dataset, plans: Sequence[BasePlan], run: FeedRun) -> None:
    """Every image undecodable: one line, and no empty feature set written."""
    if any(not p.hit for p in plans) and all(s.sha256 in run.skipped for s in dataset.samples):
        first = dataset.samples[0]
        raise PipelineError(f"{dataset.source}: none of its {len(dataset.samples)} images could "
                            f"be decoded (e.g. {first.id}: {run.skipped[first.sha256]}); "
                            "nothing was written")


def _finish(plan: BasePlan, dataset: Dataset, digest: str, run: FeedRun,
            options: ExtractOptions, engine_record: dict[str, Any] | None = None
            ) -> ExtractResult:
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
        info = feature_set_info(plan, dataset, rows, digest, result, options).replace(
            engine=engine_record)
        plan.writer.finalize(ids=[s.id for s in rows], sha256=[s.sha256 for s in rows],
                             labels=[s.label for s in rows], split=[s.split for s in rows],
                             info=info, skipped=skipped)
    return result
