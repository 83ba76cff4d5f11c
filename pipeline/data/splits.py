"""Deterministic, stable, stratified train/validation/test assignment.

Each sample's split comes from a hash of its content and the seed, compared with the
cumulative fractions. So a sample keeps its split when other images are added or removed,
identical images always share a split (no leakage through duplicates), and every class is
cut by the same thresholds, which stratifies it in expectation.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import replace

from pipeline.data.samples import Sample
from pipeline.errors import PipelineError

SPLITS = ("train", "validation", "test")
DEFAULT_FRACTIONS = (0.7, 0.15, 0.15)


def fractions_problem(fractions: Sequence[float]) -> str | None:
    """What is wrong with split fractions (without naming them), or None when they are fine."""
    if (len(fractions) != 3 or not all(math.isfinite(f) and f >= 0 for f in fractions)
            or fractions[0] <= 0):
        return "expected three non-negative fractions train,validation,test with train > 0"
    total = sum(fractions)
    if abs(total - 1.0) > 1e-6:
        return f"fractions must sum to 1 (got {total:g})"
    return None


def validate_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    problem = fractions_problem(fractions)
    if problem:
        raise PipelineError(f"--split {list(fractions)}: {problem}")
    return (float(fractions[0]), float(fractions[1]), float(fractions[2]))


def unit_hash(sha256: str, seed: int) -> float:
    """A number in [0, 1) fixed by the content hash and the seed."""
    d = hashlib.sha256(f"{seed}:{sha256}".encode()).digest()
    return int.from_bytes(d[:8], "big") / 2.0**64


def assign_split(sha256: str, fractions: Sequence[float], seed: int) -> str:
    u = unit_hash(sha256, seed)
    if u < fractions[0]:
        return "train"
    if u < fractions[0] + fractions[1]:
        return "validation"
    return "test"


def assign_splits(samples: list[Sample], fractions: Sequence[float] = DEFAULT_FRACTIONS,
                  seed: int = 0) -> list[Sample]:
    """Give every sample without a split one (samples that brought theirs keep it).

    A dataset that brings train and test but no validation split gets validation carved out
    of its train split in the proportion validation / (train + validation).
    """
    fractions = validate_fractions(fractions)
    brought = {s.split for s in samples if s.split}
    out = []
    for s in samples:
        if s.split is None:
            out.append(replace(s, split=assign_split(s.sha256, fractions, seed)))
        elif s.split == "train" and "validation" not in brought:
            tv = fractions[0] + fractions[1]
            part = assign_split(s.sha256, (fractions[0] / tv, fractions[1] / tv, 0.0), seed)
            out.append(replace(s, split=part))
        else:
            out.append(s)
    return out
