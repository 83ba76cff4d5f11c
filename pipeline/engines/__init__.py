"""Engines: what computes the missing feature rows and hands them to the writers.

``local`` (the default) decodes and runs the bases in this process
(:mod:`pipeline.extract.feed`); ``ray`` runs decode tasks and model-worker actors on a Ray
cluster (:mod:`pipeline.engines.ray_engine`, the only module that imports Ray; install it with
``pip install "pipeline[ray]"``). Both write the same work shards
(:mod:`pipeline.cache.work`) and the same merged HDF5 file.

The options are declared once in :class:`EngineOptions`: the ``pipeline extract`` flags,
``$PIPELINE_ENGINE`` / ``$RAY_ADDRESS`` and the experiment TOML's ``[engine]`` table.
``rehash`` is here too: it says how the driver reads the data (which hashes it may take
from the hash cache), not what is computed, so it is part of no key.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, ClassVar

from pipeline.options import Options, option

ENGINES = ("local", "ray")


@dataclass(frozen=True)
class EngineOptions(Options):
    """Where and how extraction runs."""

    SECTION: ClassVar[str] = "engine"

    engine: str = option("local", "local (this process) | ray (a Ray cluster; the `ray` extra). "
                         "Default: $PIPELINE_ENGINE or local.", choices=ENGINES)
    address: str | None = option(
        None, "ray: the cluster to join ('auto': the one running here; default: "
        "$RAY_ADDRESS, else a local cluster of this machine's CPUs).")
    work_dir: str | None = option(
        None, "Where work shards go: a folder or an fsspec URL (s3://, gs://, memory://); "
        "default: beside the cache file. A multi-node Ray cluster needs shared storage.")
    workers: int | None = option(
        None, "ray: model workers (default: half the cluster's CPUs, at least 1).", minimum=1)
    gpus_per_worker: float = option(
        0.0, "ray: GPUs per model worker (untested on these machines: no GPU here).",
        minimum=0)
    cpus_per_worker: float | None = option(
        None, "ray: CPUs per model worker, fractional allowed (default: half the cluster's "
        "CPUs shared among the workers; the rest decodes).", minimum=0,
        exclusive_minimum=True)
    rehash: bool = option(
        False, "Hash every image again instead of trusting the hash cache (sha256 remembered "
        "by path, size and mtime/ETag under the cache folder); the cache is rewritten.",
        flag="--rehash")

    @classmethod
    def from_env(cls, given: dict[str, Any] | None = None, where: str | None = None
                 ) -> EngineOptions:
        """The options given (flags or a TOML table; ``None`` values are not given), with
        ``$PIPELINE_ENGINE`` and ``$RAY_ADDRESS`` filling what was not."""
        values = {k: v for k, v in (given or {}).items() if v is not None}
        if "engine" not in values and os.environ.get("PIPELINE_ENGINE"):
            values["engine"] = os.environ["PIPELINE_ENGINE"]
        if "address" not in values and os.environ.get("RAY_ADDRESS"):
            values["address"] = os.environ["RAY_ADDRESS"]
        return cls.from_mapping(values, where)


__all__ = ["ENGINES", "EngineOptions"]
