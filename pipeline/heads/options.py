"""The options of the heads stage (``pipeline fit-head``, ``[fit]`` of an experiment)."""

from __future__ import annotations

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


def _check_jobs(jobs: int | None) -> str | None:
    if jobs is not None and (jobs == 0 or jobs < -1):
        return "expected a positive number of workers or -1 (all)"
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

    @property
    def balanced(self) -> bool:
        return self.class_weight == "balanced"
