"""The options of the heads stage (``pipeline fit-head``, ``[fit]`` of an experiment)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from pipeline.heads.metrics import DEFAULT_METRIC, SELECTION_METRICS
from pipeline.options import Options, option

CLASS_WEIGHTS = ("none", "balanced")
#: The old true/false spelling (``class_weight = true`` in TOML), accepted with a warning.
OLD_CLASS_WEIGHTS = ((True, "balanced"), (False, "none"))


def _check_metric(metric: str) -> str | None:
    if metric not in SELECTION_METRICS:
        return f"unknown selection metric; expected one of {', '.join(SELECTION_METRICS)}"
    return None


def _check_cv(cv: int | str) -> str | None:
    if parse_cv(cv) is _BAD:
        return "expected auto, 0 (off) or a number of folds of at least 2"
    return None


_BAD = object()


def parse_cv(cv: int | str) -> int | None | object:
    """``None`` for "auto", ``0`` for off, else the number of folds (``_BAD`` if neither)."""
    if isinstance(cv, str):
        text = cv.strip().lower()
        if text == "auto":
            return None
        if text in ("off", "none", "no"):
            return 0
        if not text.isdigit():
            return _BAD
        cv = int(text)
    return cv if cv == 0 or cv >= 2 else _BAD


def _check_jobs(jobs: int | None) -> str | None:
    if jobs is not None and (jobs == 0 or jobs < -1):
        return "expected a positive number of workers or -1 (all)"
    return None


#: The default memory budget (``max_memory``), as a fraction of this machine's RAM.
DEFAULT_MEMORY_FRACTION = 0.5
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def ram_bytes() -> int:
    """This machine's physical memory."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def parse_memory(size: int | str | None) -> int | None:
    """A memory size in bytes: ``256M``, ``2G``, ``1.5k``, ``512KiB``, ``1000000`` (bytes);
    ``None`` (the default) is :data:`DEFAULT_MEMORY_FRACTION` of RAM; ``None`` is also what
    anything else (``lots``, ``-1``, ``0``) returns, for the caller's one-line error."""
    if size is None:
        return int(DEFAULT_MEMORY_FRACTION * ram_bytes())
    if isinstance(size, bool):
        return None
    m = re.fullmatch(r"(\d+(?:\.\d*)?)\s*([KMGT]?)(?:I?B)?", str(size).strip().upper())
    if not m or float(m.group(1)) <= 0:
        return None
    n = int(float(m.group(1)) * _UNITS[m.group(2)])
    return n if n >= 1 else None


def _check_memory(size: int | str | None) -> str | None:
    if parse_memory(size) is None:
        return "expected a size such as 512M, 4G or a number of bytes"
    return None


@dataclass(frozen=True)
class FitOptions(Options):
    """How heads are fitted and chosen; validated when made, before any work."""

    SECTION = "fit"

    metric: str = option(DEFAULT_METRIC, "Validation metric that chooses: balanced_accuracy, "
                         "accuracy, f1_macro, roc_auc or log_loss (lower is better).",
                         check=_check_metric)
    refit: bool = option(False, "Refit each chosen configuration on train+validation before "
                         "the test.")
    class_weight: str = option("none", "balanced: weight classes by inverse frequency (heads "
                               "that support it), for imbalanced data; none: equal weights.",
                               choices=CLASS_WEIGHTS, deprecated_values=OLD_CLASS_WEIGHTS)
    jobs: int | None = option(None, "Parallel workers for scikit-learn heads (default: all "
                              "cores; -1 = all).", check=_check_jobs)
    seed: int = option(0, "Random seed of every head.")
    cv: int | str = option("auto", "Choose each head's configuration by stratified K-fold "
                           "cross-validation on train+validation, then refit it on both and "
                           "test once: a number of folds, 0 = off (choose on validation), "
                           "auto = 5 folds when validation has fewer than 50 samples of a "
                           "class.", check=_check_cv)
    max_memory: int | str | None = option(
        None, "Memory budget for one cache's features (e.g. 512M, 4G, or bytes; default: half "
        "of RAM). A cache whose in-memory sweep would need more trains its linear "
        "heads (logreg, linear_svm) out of core, a chunk at a time; other heads are refused.",
        check=_check_memory)

    def validate(self) -> None:
        folds = self.cv_folds
        # One spelling per meaning: "5" (a flag's text) is 5, "off" is 0.
        object.__setattr__(self, "cv", "auto" if folds is None else folds)

    @property
    def cv_folds(self) -> int | None:
        """The number of folds asked for: ``None`` = auto, ``0`` = off."""
        return parse_cv(self.cv)  # type: ignore[return-value]

    @property
    def memory_budget(self) -> int:
        """``max_memory`` in bytes."""
        budget = parse_memory(self.max_memory)
        assert budget is not None  # checked when made
        return budget

    @property
    def balanced(self) -> bool:
        return self.class_weight == "balanced"
