"""What a sweep produces, as records: the rows of a cache by split, every fitted candidate,
the chosen runs and the result. Their own module so that both the in-memory sweep
(:mod:`pipeline.heads.sweep`) and the out-of-core one (:mod:`pipeline.heads.out_of_core`)
build them without importing each other.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.cache.info import FeatureSetInfo
from pipeline.errors import PipelineError
from pipeline.heads.grid import HeadConfig
from pipeline.heads.metrics import bootstrap_ci, score_key
from pipeline.heads.spec import Head


@dataclass
class Split:
    """The rows of one cache separated by split, with what reports need about the cache."""

    path: Path
    info: FeatureSetInfo
    x: dict[str, np.ndarray]
    y: dict[str, np.ndarray]
    ids_digest: dict[str, str]
    #: Per split, the sample ids of its rows (in row order).
    ids: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def class_names(self) -> list[str]:
        return list(self.info.class_names)

    @property
    def dataset(self) -> str:
        return str(self.info.dataset or self.path.stem)

    @property
    def base(self) -> str:
        return str(self.info.base or "features")


@dataclass
class Candidate:
    """One configuration fitted on one cache and scored on validation."""

    cache_index: int
    config: HeadConfig
    validation: dict[str, Any] | None = None
    fit_seconds: float = math.nan
    predict_seconds: float = math.nan
    error: str | None = None
    head: Head | None = field(default=None, repr=False)
    #: The validation probabilities the score was computed from (under cross-validation:
    #: the out-of-fold probabilities of the validation rows).
    proba: np.ndarray | None = field(default=None, repr=False)
    #: Under cross-validation (:mod:`pipeline.heads.cv`): ``{"folds", "metric", "mean",
    #: "std", "scores"}``; ``validation`` then holds the means over the folds.
    cv: dict[str, Any] | None = None
    #: Under cross-validation: the parameters the refit on train+validation uses.
    refit_params: dict[str, Any] | None = None

    def record(self, out: dict[str, Any]) -> None:
        """Take the outcome of a fit (a worker's dict)."""
        self.error = out.get("error")
        self.head = out.get("head")
        self.validation = out.get("validation")
        self.proba = out.get("proba")
        self.fit_seconds = out.get("fit_seconds", math.nan)
        self.predict_seconds = out.get("predict_seconds", math.nan)

    def score(self, metric: str) -> tuple[float, float]:
        if self.validation is None:
            return (-math.inf, -math.inf)
        return (score_key(self.validation, metric), score_key(self.validation, "log_loss"))


@dataclass
class SplitPredictions:
    """What a chosen head predicted on one split: row ids, true labels, probabilities."""

    ids: np.ndarray
    labels: np.ndarray
    proba: np.ndarray


@dataclass
class ChosenRun:
    """A chosen configuration with its validation and test metrics.

    ``run_id`` and ``run_dir`` stay empty until the run is saved (:mod:`pipeline.runs`).
    """

    run_id: str
    run_dir: Path | None
    cache: Path
    dataset: str
    base: str
    config: HeadConfig
    validation: dict[str, Any]
    test: dict[str, Any]
    best_overall: bool = False
    head: Head | None = field(default=None, repr=False)
    #: The train-only fit it was chosen from (its history drives the learning curve).
    candidate: Candidate | None = field(default=None, repr=False)
    #: ``validation`` (of the train-only fit the choice saw) and ``test`` predictions.
    predictions: dict[str, SplitPredictions] = field(default_factory=dict, repr=False)
    #: Chosen by cross-validation: the candidate's ``cv`` (``validation`` holds fold means).
    cv: dict[str, Any] | None = None
    #: Refitted on train+validation before the test (always so under cross-validation).
    refit: bool = False
    #: Seed of the bootstrap behind :attr:`test_ci`.
    seed: int = 0
    _test_ci: dict[str, list[float]] | None = field(default=None, repr=False)

    @property
    def test_ci(self) -> dict[str, list[float]] | None:
        """95% percentile-bootstrap intervals of the test metrics, ``{metric: [low, high]}``
        (computed from the test predictions when first asked for: saving a run does, a sweep
        that is not saved pays nothing)."""
        if self._test_ci is None and "test" in self.predictions:
            p = self.predictions["test"]
            self._test_ci = bootstrap_ci(p.labels, p.proba, seed=self.seed)
        return self._test_ci or None

    @property
    def cache_index(self) -> int:
        assert self.candidate is not None
        return self.candidate.cache_index


@dataclass
class SweepResult:
    """What a sweep returns: every candidate, the chosen runs, the overall best.

    ``splits`` are the caches the sweep read (in ``cache_index`` order); ``reports_dir`` is
    set when the runs are saved.
    """

    metric: str
    candidates: list[Candidate]
    runs: list[ChosenRun]
    reports_dir: Path | None
    refit: bool = False
    splits: list[Split] = field(default_factory=list, repr=False)

    @property
    def best(self) -> ChosenRun:
        """The overall best run (of the first dataset, if the sweep covered several)."""
        return next(r for r in self.runs if r.best_overall)

    def best_per_dataset(self) -> dict[str, ChosenRun]:
        return {r.dataset: r for r in self.runs if r.best_overall}

    def pool(self, run: ChosenRun) -> list[Candidate]:
        """The candidates ``run`` was chosen among: its kind, on its cache."""
        return [c for c in self.candidates
                if c.cache_index == run.cache_index and c.config.kind == run.config.kind]

    def n_tried(self, cache_index: int) -> int:
        """How many configurations were fitted on one cache."""
        return sum(1 for c in self.candidates if c.cache_index == cache_index)


def best_of_kind(pool: list[Candidate], metric: str) -> Candidate:
    """The best of one kind's candidates by validation ``metric`` (ties: lower log-loss,
    then the earlier configuration); once one is calibrated, the uncalibrated ones (fitted
    for ranking only) are out."""
    settled = [c for c in pool if c.validation is not None
               and c.validation.get("calibrated") is not False]
    # max() keeps the first of equal scores, so ties go to the earlier configuration.
    return max(settled or pool, key=lambda c: c.score(metric))


def choose_per_kind(candidates: list[Candidate], path: Path, metric: str) -> list[Candidate]:
    """One cache's candidates: per kind the validation-best (:func:`best_of_kind`); one line
    if every configuration failed."""
    ok = [c for c in candidates if c.validation is not None]
    if not ok:
        errors = "; ".join(sorted({c.error or "?" for c in candidates}))
        raise PipelineError(f"{path}: every head configuration failed ({errors})")
    return [best_of_kind([c for c in ok if c.config.kind == kind], metric)
            for kind in dict.fromkeys(c.config.kind for c in ok)]
