"""Evaluating a fine-tuned classifier with its kept weights: validation, then test, once."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.finetune.callbacks import KeepBest
from pipeline.heads.metrics import bootstrap_ci, classification_metrics

if TYPE_CHECKING:
    from pipeline.finetune.prepare import Prepared
    from pipeline.finetune.run_folder import RunFolder
    from pipeline.finetune.train import Trained


@dataclass
class Evaluated:
    """The heads stage's metrics of the kept weights (``fit_seconds`` on validation,
    ``predict_seconds`` on test, as in head runs)."""

    validation: dict[str, Any]
    test: dict[str, Any]
    #: The probabilities the metrics were computed from, per split (``validation``, ``test``).
    proba: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    #: 95% bootstrap intervals of the test metrics, as head runs have them (``test_ci``).
    test_ci: dict[str, list[float]] | None = None


def predict_proba(model: Any, x: np.ndarray) -> np.ndarray:
    """Class probabilities as float64 (an empty split gives an empty ``(0, n_classes)``)."""
    if len(x) == 0:
        return np.zeros((0, int(model.outputs[0].shape[-1])))
    return np.asarray(model.predict(x, batch_size=32, verbose=0), dtype=np.float64)


def evaluate(prepared: Prepared, trained: Trained, folder: RunFolder) -> Evaluated:
    """Load the kept epoch's weights into the classifier and score validation and test."""
    classifier = prepared.classifier
    KeepBest(folder.path, target=classifier).restore()
    val, test = prepared.splits["validation"], prepared.splits["test"]
    val_proba = predict_proba(classifier, val.x)
    t0 = time.perf_counter()
    test_proba = predict_proba(classifier, test.x)
    predict_seconds = time.perf_counter() - t0
    return Evaluated(
        validation=dict(classification_metrics(val.y, val_proba),
                        fit_seconds=trained.fit_seconds),
        test=dict(classification_metrics(test.y, test_proba), predict_seconds=predict_seconds),
        proba={"validation": val_proba, "test": test_proba},
        test_ci=bootstrap_ci(test.y, test_proba, seed=prepared.settings["seed"]) or None
        if len(test.y) else None)
