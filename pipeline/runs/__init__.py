"""Run folders (one chosen head each), their plots, and the leaderboard across them."""

from pipeline.runs.leaderboard import leaderboard, write_leaderboard
from pipeline.runs.store import LoadedHead, iter_runs, load_head

__all__ = ["LoadedHead", "iter_runs", "leaderboard", "load_head", "write_leaderboard"]
