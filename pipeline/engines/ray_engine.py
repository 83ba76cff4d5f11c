"""The Ray engine: decode tasks -> model-worker actors -> work shards, on any Ray cluster.

The only module that imports Ray (``pip install "pipeline[ray]"``). The driver lists the
dataset (a folder here, or any fsspec URL) and looks each file up in the hash cache; the files
it misses are read and hashed here, by Ray tasks over batches of files (:func:`hash_files`).
The driver then decides the splits and the samples digest and indexes the rows it has (the
old file and committed shards): what reaches :func:`run_ray` is the plan, the
distinct content hashes still missing, sorted so that each block of the Ray dataset covers
a hash range. Then, with Ray Data::

    from_items(plan)                      sha256, path, need<k> per base, sorted by hash
      .map_batches(decode_batch)          CPU tasks: the project's own decoder and resize
                                          (same numbers as the local reader); an undecodable
                                          file is a skip record, never a failed dataset
      .map_batches(ModelWorker, ActorPoolStrategy(size=workers), num_cpus=<fraction>)
                                          each actor builds its bases once, checks their
                                          weights_id against the driver's, runs a batch and
                                          saves one shard per base named by hash range
      .iter_batches()                     the driver collects skip records and row counts

Model workers get fractional CPUs sized from ``ray.cluster_resources()`` (by default half
the cluster, the rest decodes: two workers at one CPU each on two cores deadlock the decode
stage) and TensorFlow's thread pools set to their share. The shards are written by the model
worker itself rather than by a separate writer stage: features never travel through the
object store to the driver, and a shard's deterministic name (hash range, rows, digest) means
a retried batch (Ray restarts killed actors and retries their tasks) overwrites its shard
instead of adding one. The driver then merges shards and reused rows into exactly the file
the local engine writes (:mod:`pipeline.cache.merge`).
"""

from __future__ import annotations

import math
import os
import signal
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import ray

from pipeline.cache.work import WorkShards, is_url
from pipeline.engines import EngineOptions
from pipeline.errors import PipelineError
from pipeline.progress import Reporter

#: A test hook: ``"<k>:<marker file>"`` makes the first model worker to finish its k-th batch
#: SIGKILL itself (once: the marker file records that it happened).
KILL_HOOK_ENV = "PIPELINE_RAY_KILL_WORKER_AFTER"
#: CPUs each decode or hashing task asks for (fractional, so tasks and model workers share
#: cores).
DECODE_CPUS = 0.5
#: Hashing: tasks per cluster CPU (some slack for uneven files), and files per task at most.
HASH_TASKS_PER_CPU = 4
HASH_BATCH_MAX = 256


@dataclass(frozen=True)
class BaseJob:
    """One base to run: how to build it (small arguments, rebuilt in each worker), what its
    weights must be, and where its shards go."""

    base: str
    weights: str | None
    input_size: int
    layer: str | None
    pooling: str
    weights_id: str
    dtype: str
    shards: str


@dataclass
class RayRun:
    """What the cluster did: skip records, rows written per base, and where it ran."""

    skipped: dict[str, str] = field(default_factory=dict)
    added: list[int] = field(default_factory=list)
    seconds: float = 0.0
    record: dict[str, Any] = field(default_factory=dict)


# -- the cluster ----------------------------------------------------------------------------
def connect(address: str | None) -> str:
    """Join the cluster at ``address`` (``None``: a local one), or the one this process has
    already joined; returns where it runs."""
    if not ray.is_initialized():
        try:
            ray.init(address=address, logging_level="ERROR", log_to_driver=False,
                     include_dashboard=False)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise PipelineError(f"cannot join the Ray cluster at {address or 'a new local one'}"
                                f" ({str(e).splitlines()[0]})") from None
    ctx = ray.get_runtime_context()
    return str(getattr(ctx, "gcs_address", None) or address or "local")


@dataclass(frozen=True)
class Sizing:
    workers: int
    cpus_per_worker: float
    gpus_per_worker: float
    threads: int
    nodes: int


def size_pool(options: EngineOptions) -> Sizing:
    """Model workers and their resources, from the options and the cluster's resources."""
    res = ray.cluster_resources()
    cpus = float(res.get("CPU", 1.0))
    workers = options.workers or max(1, int(cpus // 2))
    per = options.cpus_per_worker or max(0.1, round(cpus / 2 / workers, 2))
    gpus = float(options.gpus_per_worker or 0.0)
    if workers * per > cpus:
        raise PipelineError(f"{workers} model workers x {per:g} CPUs need more than the "
                            f"cluster's {cpus:g} CPUs; lower --workers or --cpus-per-worker")
    if gpus and workers * gpus > float(res.get("GPU", 0.0)):
        raise PipelineError(f"{workers} model workers x {gpus:g} GPUs need more than the "
                            f"cluster's {res.get('GPU', 0):g} GPUs")
    return Sizing(workers, per, gpus, max(1, math.floor(per)), alive_nodes())


def alive_nodes() -> int:
    return sum(1 for n in ray.nodes() if n.get("Alive"))


def refuse_local_data(nodes: int, locations: Sequence[str]) -> None:
    """Files on this machine's disk (a path, or ``file://``) cannot be read by the other
    nodes of a cluster: they would be refused as unreadable, or skipped as undecodable."""
    local = next((x for x in locations if not is_url(x) or x.startswith("file://")), None)
    if nodes > 1 and local is not None:
        raise PipelineError(f"the Ray cluster has {nodes} nodes but the dataset file {local} "
                            "is on this machine only; put the dataset where every node reads "
                            "it (s3://..., gs://...)")


def refuse_local_work_dir(sizing: Sizing, jobs: Sequence[BaseJob]) -> None:
    """Shards on one machine's disk cannot be shared by a cluster of several, nor shards in
    one process's memory by the worker processes."""
    in_memory = [j.shards for j in jobs if j.shards.startswith("memory://")]
    if in_memory:
        raise PipelineError(f"--work-dir {in_memory[0]}: fsspec's memory:// lives in one "
                            "process and Ray workers are others; use a folder or s3://, gs://")
    local = [j.shards for j in jobs if not is_url(j.shards)]
    if sizing.nodes > 1 and local:
        raise PipelineError(f"the Ray cluster has {sizing.nodes} nodes but the work folder "
                            f"{local[0]} is local to this one; give --work-dir an URL all "
                            "nodes reach (s3://..., gs://...)")


# -- hashing --------------------------------------------------------------------------------
def hash_batch(locations: list[str]) -> list[tuple[str, str]]:
    """A Ray task: ``(sha256, "")`` for each readable file, ``("", why)`` for the others."""
    from pipeline.data.locations import location_sha256, unreadable

    out = []
    for location in locations:
        try:
            out.append((location_sha256(location), ""))
        except OSError as e:
            out.append(("", unreadable(location, e)))
    return out


def hash_files(locations: Sequence[str], options: EngineOptions, report: Reporter
               ) -> list[str]:
    """The sha256 of each file (path or URL), read and hashed by Ray tasks of
    :data:`HASH_TASKS_PER_CPU` batches per cluster CPU (at most :data:`HASH_BATCH_MAX` files
    each); the same bytes and the same hash as :func:`pipeline.data.hash_cache.hash_files_here`."""
    connect(options.address)
    refuse_local_data(alive_nodes(), locations)
    cpus = float(ray.cluster_resources().get("CPU", 1.0))
    size = max(1, min(HASH_BATCH_MAX, math.ceil(len(locations) / (HASH_TASKS_PER_CPU * cpus))))
    batches = [list(locations[i:i + size]) for i in range(0, len(locations), size)]
    report.line(f"ray: hashing {len(locations)} files in {len(batches)} tasks")
    task = ray.remote(num_cpus=DECODE_CPUS)(hash_batch)
    out: list[str] = []
    try:
        with report.progress(len(locations), "files") as bar:
            for ref in [task.remote(batch) for batch in batches]:
                got = ray.get(ref)
                bad = next((why for _, why in got if why), None)
                if bad is not None:
                    raise PipelineError(bad)
                out += [sha for sha, _ in got]
                bar.advance(len(got))
    except ray.exceptions.RayError as e:
        raise ray_failure(e) from None
    return out


# -- the stages -----------------------------------------------------------------------------
def decode_batch(batch: dict[str, np.ndarray], sizes: Sequence[int]) -> dict[str, np.ndarray]:
    """Decode and resize one batch (same code as the local reader); an undecodable file gets
    ``ok`` False, its reason, and a zero placeholder image that gets no features."""
    from pipeline.data.decode import DecodeError, decode_file
    from pipeline.data.reader import resize

    n = len(batch["path"])
    ok, reasons = np.ones(n, dtype=bool), [""] * n
    images = {s: np.zeros((n, s, s, 3), np.float32) for s in sizes}
    for i, path in enumerate(batch["path"]):
        try:
            image = decode_file(str(path))
        except DecodeError as e:
            ok[i], reasons[i] = False, str(e)
            continue
        for s in sizes:
            images[s][i] = resize(image, s).numpy()
    out = {k: v for k, v in batch.items() if k != "path"}
    out.update(ok=ok, reason=np.array(reasons, dtype=object))
    out.update({f"image{s}": v for s, v in images.items()})
    return out


class ModelWorker:
    """A model-worker actor: builds its bases once, then runs batches and saves shards."""

    def __init__(self, jobs: list[dict[str, Any]], threads: int, kill_hook: str | None = None):
        import tensorflow as tf

        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        except RuntimeError:
            pass  # this process already ran TensorFlow (threads are set once per process)
        from pipeline.bases import build_extractor
        from pipeline.bases.forward import forward_fn

        self.jobs = [BaseJob(**j) for j in jobs]
        self.fns, self.shards = [], []
        for job in self.jobs:
            ex = build_extractor(job.base, weights=job.weights, input_size=job.input_size,
                                 layer=job.layer, pooling=job.pooling)
            if ex.weights_id != job.weights_id:
                raise PipelineError(f"{job.base}: a Ray worker built weights {ex.weights_id}, "
                                    f"not the driver's {job.weights_id} (is the weights file "
                                    "the same on every node?)")
            self.fns.append(forward_fn(ex))
            self.shards.append(WorkShards(job.shards))
        self.batches, self.kill_hook = 0, kill_hook

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        shas, ok = batch["sha256"].astype(str), batch["ok"].astype(bool)
        for k, job in enumerate(self.jobs):
            want = ok & batch[f"need{k}"].astype(bool)
            if want.any():
                x = batch[f"image{job.input_size}"][want]
                features = np.asarray(self.fns[k](x)).astype(job.dtype, copy=False)
                self.shards[k].save(shas[want].tolist(), features)
        self.batches += 1
        self._maybe_die()
        return {"sha256": shas, "ok": ok, "reason": batch["reason"],
                **{f"need{k}": batch[f"need{k}"] for k in range(len(self.jobs))}}

    def _maybe_die(self) -> None:
        if not self.kill_hook:
            return
        k, _, marker = self.kill_hook.partition(":")
        if self.batches == int(k) and not os.path.exists(marker):
            with open(marker, "x"):
                pass
            os.kill(os.getpid(), signal.SIGKILL)


# -- the driver -----------------------------------------------------------------------------
def run_ray(plan: Sequence[tuple[str, str, Sequence[bool]]], jobs: Sequence[BaseJob],
            options: EngineOptions, batch_size: int, report: Reporter) -> RayRun:
    """Compute the rows of ``plan`` (content hash, image path, which bases need it) on the
    cluster, into each job's shards."""
    start = time.perf_counter()
    address = connect(options.address)
    sizing = size_pool(options)
    refuse_local_work_dir(sizing, jobs)
    refuse_local_data(sizing.nodes, [path for _, path, _ in plan])
    run = RayRun(added=[0] * len(jobs), record=engine_record(address, sizing))
    if not plan:
        return run
    report.line(f"ray: {len(plan)} images on {sizing.nodes} node(s), {sizing.workers} model "
                f"worker(s) x {sizing.cpus_per_worker:g} CPU"
                + (f" x {sizing.gpus_per_worker:g} GPU" if sizing.gpus_per_worker else ""))
    ds = dataset(plan, jobs, sizing, batch_size)
    try:
        with report.progress(len(plan)) as bar:
            for out in ds.iter_batches(batch_size=None, batch_format="numpy"):
                collect(out, run, len(jobs))
                bar.advance(len(out["sha256"]))
    except ray.exceptions.RayError as e:
        raise ray_failure(e) from None
    run.seconds = time.perf_counter() - start
    return run


def dataset(plan: Sequence[tuple[str, str, Sequence[bool]]], jobs: Sequence[BaseJob],
            sizing: Sizing, batch_size: int) -> Any:
    """The Ray Data pipeline over the plan, sorted by content hash."""
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    items = [{"sha256": s, "path": p, **{f"need{k}": bool(n) for k, n in enumerate(needs)}}
             for s, p, needs in sorted(plan)]
    blocks = max(1, min(len(items) // batch_size, 4096))
    sizes = sorted({j.input_size for j in jobs})
    return (ray.data.from_items(items, override_num_blocks=blocks)
            .map_batches(decode_batch, fn_kwargs={"sizes": sizes}, batch_size=batch_size,
                         num_cpus=DECODE_CPUS)
            .map_batches(ModelWorker, fn_constructor_kwargs={
                             "jobs": [asdict(j) for j in jobs], "threads": sizing.threads,
                             "kill_hook": os.environ.get(KILL_HOOK_ENV)},
                         compute=ray.data.ActorPoolStrategy(size=sizing.workers),
                         batch_size=batch_size, num_cpus=sizing.cpus_per_worker,
                         num_gpus=sizing.gpus_per_worker or None))


def collect(out: dict[str, np.ndarray], run: RayRun, n_jobs: int) -> None:
    ok = out["ok"].astype(bool)
    for sha, good, reason in zip(out["sha256"], ok, out["reason"], strict=True):
        if not good:
            run.skipped[str(sha)] = str(reason)
    for k in range(n_jobs):
        run.added[k] += int((ok & out[f"need{k}"].astype(bool)).sum())


def ray_failure(e: BaseException) -> PipelineError:
    """A failure on the cluster as one line (a PipelineError raised in a worker keeps its
    own words)."""
    cause = getattr(e, "cause", None)
    if isinstance(cause, PipelineError):
        return PipelineError(str(cause))
    first = next((line for line in str(e).splitlines() if line.strip()), type(e).__name__)
    return PipelineError(f"the Ray extraction failed ({first.strip()}); finished shards are "
                         "kept and the next run resumes")


def engine_record(address: str, sizing: Sizing) -> dict[str, Any]:
    """What the feature set's record says about where it was computed."""
    devices = "gpu" if sizing.gpus_per_worker else "cpu"
    return {"name": "ray", "address": address, "nodes": sizing.nodes,
            "workers": sizing.workers, "cpus_per_worker": sizing.cpus_per_worker,
            "gpus_per_worker": sizing.gpus_per_worker, "devices": devices,
            "ray": ray.__version__}
