"""Run folders (one chosen head each): the run record, writing and loading them, their plots,
and the leaderboard across them.

``fit_heads`` is the one call for notebooks: it runs the heads stage
(:func:`pipeline.heads.run_sweep`) and saves its result (:func:`save_sweep`).
"""

from pipeline.runs.fit import fit_heads
from pipeline.runs.leaderboard import leaderboard, write_leaderboard
from pipeline.runs.record import (
    SCHEMA_VERSION,
    CacheRef,
    FinetuneInfo,
    HeadFile,
    RunMetrics,
    RunRecord,
    Selection,
)
from pipeline.runs.store import LoadedHead, iter_runs, load_head, new_run_dir
from pipeline.runs.writer import save_sweep

__all__ = [
    "SCHEMA_VERSION", "CacheRef", "FinetuneInfo", "HeadFile", "LoadedHead", "RunMetrics",
    "RunRecord", "Selection", "fit_heads", "iter_runs", "leaderboard", "load_head",
    "new_run_dir", "save_sweep", "write_leaderboard",
]
