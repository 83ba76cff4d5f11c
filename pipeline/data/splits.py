"""Deterministic, stable, exactly stratified train/validation/test assignment.

Within each class, the samples are ranked by a hash of their content and the seed; the first
``round(n * train)`` go to train, the next to validation, the rest to test. So:

* every class is split in exactly the asked proportions (largest-remainder rounding), and a
  class of at least 3 images always gets at least one validation and one test sample;
* a sample keeps its split when other images come and go, except for the few samples at a
  boundary that must move for the counts to stay exact (at most one per boundary per class
  and added or removed image);
* identical images (same content hash) always share a split, so duplicates cannot leak from
  train into test.

A dataset that brings some splits (split folders, a CSV ``split`` column) keeps them; the
splits it lacks are carved out of its ``train`` split the same way, in proportion to their
fractions (``train``/``val`` folders and the default 70/15/15 give test = 15/85 of train).
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import replace

from pipeline.data.samples import Sample
from pipeline.errors import PipelineError

SPLITS = ("train", "validation", "test")
DEFAULT_FRACTIONS = (0.7, 0.15, 0.15)
#: Below this many samples of a class in validation or test, its metrics are noise: warn.
FEW_PER_CLASS = 10


def fractions_problem(fractions: Sequence[float]) -> str | None:
    """What is wrong with split fractions (without naming them), or None when they are fine."""
    values = list(fractions)
    ok = len(values) == 3 and all(
        isinstance(f, int | float) and not isinstance(f, bool) and math.isfinite(f) and f >= 0
        for f in values)
    if not ok or values[0] <= 0:
        return ("expected three finite, non-negative fractions train,validation,test with "
                "train > 0")
    total = sum(values)
    if abs(total - 1.0) > 1e-6:
        return f"fractions must sum to 1 (got {total:g})"
    return None


def validate_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    """Three finite, non-negative fractions summing to 1, with train > 0."""
    problem = fractions_problem(fractions)
    if problem:
        raise PipelineError(f"--split {','.join(map(str, fractions))}: {problem}")
    return (float(fractions[0]), float(fractions[1]), float(fractions[2]))


def unit_hash(sha256: str, seed: int) -> float:
    """A number in [0, 1) fixed by the content hash and the seed."""
    d = hashlib.sha256(f"{seed}:{sha256}".encode()).digest()
    return int.from_bytes(d[:8], "big") / 2.0**64


def split_sizes(n: int, fractions: Sequence[float]) -> tuple[int, int, int]:
    """How many of ``n`` samples of one class go to train, validation, test.

    Largest-remainder rounding of ``n * fraction``; then, for a class of at least 3, every
    split with a non-zero fraction gets at least one sample (taken from train).
    """
    want = [n * f for f in fractions]
    sizes = [math.floor(w) for w in want]
    by_remainder = sorted(range(3), key=lambda i: (-(want[i] - sizes[i]), i))
    for i in by_remainder[: n - sum(sizes)]:
        sizes[i] += 1
    if n >= 3:
        for i in (1, 2):
            if fractions[i] > 0 and sizes[i] == 0:
                donor = max(range(3), key=lambda j: sizes[j])
                sizes[donor] -= 1
                sizes[i] += 1
    return sizes[0], sizes[1], sizes[2]


def _rank_split(pool: Iterable[Sample], fractions: Sequence[float], seed: int,
                decided: dict[str, str]) -> None:
    """Decide the split of every content hash in ``pool`` not decided yet, per class."""
    units: dict[int, dict[str, float]] = defaultdict(dict)
    for s in pool:
        if s.sha256 not in decided:
            units[s.label].setdefault(s.sha256, unit_hash(s.sha256, seed))
    for by_sha in units.values():
        order = sorted(by_sha, key=lambda sha: (by_sha[sha], sha))
        start = 0
        for name, size in zip(SPLITS, split_sizes(len(order), fractions), strict=True):
            for sha in order[start:start + size]:
                decided[sha] = name
            start += size


def carve_fractions(fractions: Sequence[float], missing: Sequence[str]) -> tuple[float, ...]:
    """The fractions used to carve the ``missing`` splits out of a given train split."""
    keep = {"train", *missing}
    total = sum(f for name, f in zip(SPLITS, fractions, strict=True) if name in keep)
    return tuple(f / total if name in keep else 0.0
                 for name, f in zip(SPLITS, fractions, strict=True))


def assign_splits(samples: list[Sample], fractions: Sequence[float] = DEFAULT_FRACTIONS,
                  seed: int = 0) -> list[Sample]:
    """Give every sample without a split one; carve the splits a dataset lacks out of its
    train split (see the module docstring). Samples keep the order they came in."""
    fractions = validate_fractions(fractions)
    brought = {s.split for s in samples if s.split}
    decided: dict[str, str] = {}
    _rank_split([s for s in samples if s.split is None], fractions, seed, decided)
    missing = [name for name in SPLITS if name not in brought]
    if brought and missing:
        carve = carve_fractions(fractions, missing)
        _rank_split([s for s in samples if s.split == "train"], carve, seed, decided)
    out = []
    for s in samples:
        if s.split is None or (s.split == "train" and missing and brought):
            out.append(replace(s, split=decided[s.sha256]))
        else:
            out.append(s)
    return out


def split_origins(samples: Sequence[Sample]) -> dict[str, str]:
    """For each split: ``given`` (brought by the dataset), ``carved`` (out of a given train
    split) or ``assigned`` (the dataset brought no split at all)."""
    brought = {s.split for s in samples if s.split}
    if not brought:
        return dict.fromkeys(SPLITS, "assigned")
    return {name: "given" if name in brought else "carved" for name in SPLITS}


def per_class_counts(samples: Sequence[Sample], class_names: Sequence[str]
                     ) -> dict[str, dict[str, int]]:
    """``{split: {class name: count}}`` over the assigned samples."""
    out = {name: dict.fromkeys(class_names, 0) for name in SPLITS}
    for s in samples:
        if s.split in out:
            out[s.split][class_names[s.label]] += 1
    return out


def small_split_warnings(counts: dict[str, dict[str, int]]) -> list[str]:
    """One line per split where a class has fewer than :data:`FEW_PER_CLASS` samples."""
    lines = []
    for name in ("validation", "test"):
        few = {c: n for c, n in counts.get(name, {}).items() if n < FEW_PER_CLASS}
        if few:
            listed = ", ".join(f"{c} ({n})" for c, n in list(few.items())[:8])
            more = f" (+{len(few) - 8} more)" if len(few) > 8 else ""
            lines.append(f"the {name} split has fewer than {FEW_PER_CLASS} samples of "
                         f"{listed}{more}: its per-class metrics are noisy")
    return lines
