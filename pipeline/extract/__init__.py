"""Stage 1: run each base once over a dataset into the feature cache.

reader (decode once, resize per input size)  ->  bases (forward pass)  ->  feature-set writer
(resumable shards, one HDF5 file per base renamed into place when whole).

Rows are addressed by content hash: features already in the cache file or in finished work
shards are reused, so re-running is a cache hit, added or changed images are the only ones
extracted, and a killed run resumes where it stopped.

The options schema and the result are importable without TensorFlow (the CLI reads flag
defaults from :class:`ExtractOptions` at start-up); the running parts load on first use.
"""

from __future__ import annotations

from typing import Any

from pipeline.extract.options import DEFAULT_BASE, DTYPES, ExtractOptions
from pipeline.extract.result import ExtractResult

__all__ = ["DEFAULT_BASE", "DTYPES", "ExtractOptions", "ExtractResult", "extract",
           "run_extraction"]

_RUNNING = ("extract", "run_extraction")


def __getattr__(name: str) -> Any:
    # Lazy: pipeline.extract.run imports Keras, which the CLI must not load at import time.
    if name in _RUNNING:
        from pipeline.extract import run

        return getattr(run, name)
    raise AttributeError(f"module 'pipeline.extract' has no attribute {name!r}")
