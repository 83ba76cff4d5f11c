"""The engine hook of an extraction: how the dataset's files are hashed (the hash cache, then
this process or Ray tasks), and which engine computes the rows each base still needs;
either way they end up as work shards the writers merge."""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType
from typing import Any

from pipeline.context import Context
from pipeline.data.hash_cache import HASHES_DIR, HashCache, Hasher, hash_files_here
from pipeline.data.samples import Sample
from pipeline.engines import EngineOptions
from pipeline.errors import PipelineError
from pipeline.extract.feed import FeedRun, feed_missing
from pipeline.extract.options import ExtractOptions
from pipeline.extract.plan import BasePlan
from pipeline.progress import Reporter


def dataset_hasher(engine: EngineOptions, ctx: Context) -> Hasher:
    """How the dataset's files are hashed: the hash cache under the cache folder, and its
    misses read here (local engine) or by Ray tasks (``--engine ray``; Ray is started only
    when some file must be read)."""
    def on_ray(locations: Sequence[str]) -> list[str]:
        return ray_engine().hash_files(locations, engine, ctx.report)

    return Hasher(HashCache(ctx.cache_dir / HASHES_DIR),
                  on_ray if engine.engine == "ray" else hash_files_here,
                  rehash=engine.rehash, on_line=ctx.report.line)


def ray_engine() -> ModuleType:
    """:mod:`pipeline.engines.ray_engine` (imports Ray), or one line saying how to get it."""
    try:
        from pipeline.engines import ray_engine as module  # Ray: only for --engine ray
    except ImportError as e:
        raise PipelineError(f"--engine ray needs Ray ({e}); install it with "
                            "pip install 'pipeline[ray]'") from None
    return module


def use_engine(plans: Sequence[BasePlan], engine: EngineOptions) -> None:
    """Point the writers at the engine's work folder (before they index their shards)."""
    for plan in plans:
        plan.writer.use_work_dir(engine.work_dir)


def feed(samples: Sequence[Sample], plans: Sequence[BasePlan], options: ExtractOptions,
         engine: EngineOptions, report: Reporter) -> tuple[FeedRun, dict[str, Any] | None]:
    """Compute every missing row with the chosen engine; returns what feeding found and the
    engine's record for the feature sets (``None``: the local engine)."""
    if engine.engine == "local":
        return feed_missing(samples, plans, options.batch_size, report), None
    from pipeline.bases.weights import parse_weights

    ray = ray_engine()
    busy = [p for p in plans if p.todo]
    jobs = [ray.BaseJob(base=p.extractor.spec.name, weights=parse_weights(options.weights),
                        input_size=p.extractor.input_size, layer=options.layer,
                        pooling=options.pooling, weights_id=p.extractor.weights_id,
                        dtype=options.dtype,
                        shards=p.writer.shards.url or str(p.writer.shards.path))
            for p in busy]
    first: dict[str, Sample] = {}
    for s in samples:
        if any(s.sha256 in p.todo for p in busy):
            first.setdefault(s.sha256, s)
    plan = [(sha, str(s.path), [sha in p.todo for p in busy]) for sha, s in first.items()]
    run = ray.run_ray(plan, jobs, engine, options.batch_size, report)
    for p, added in zip(busy, run.added, strict=True):
        p.writer.n_added += added
        p.writer.reindex()
    return FeedRun(skipped=run.skipped, seconds=run.seconds), run.record
