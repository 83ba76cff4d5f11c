"""Validate: the heads' validation metrics in every epoch's logs."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import keras
import numpy as np

from pipeline.heads.metrics import classification_metrics

#: The metrics added to the logs as ``val_<name>`` (log loss as Keras' ``val_loss``).
LOGGED = ("accuracy", "balanced_accuracy", "f1_macro", "roc_auc")


def validation_logs(y: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    """``val_loss`` (log loss, unsmoothed), ``val_accuracy``, ``val_balanced_accuracy``,
    ``val_f1_macro``, ``val_roc_auc`` (NaN when undefined) of ``proba`` on ``y``."""
    m = classification_metrics(y, proba)
    out = {"val_loss": float(m["log_loss"])}
    out.update({f"val_{k}": math.nan if m[k] is None else float(m[k]) for k in LOGGED})
    return out


class Validate(keras.callbacks.Callback):
    """At each epoch's end, score validation with the heads' own metric code and put the
    scores in the logs, so early stopping, the kept epoch and the learning curve follow the
    same numbers as ``fit-head`` (Keras' own ``val_*`` would be the smoothed, weighted
    training loss and plain accuracy only). Place it before the callbacks that read them.

    ``predict``: returns the class probabilities of the validation rows, in ``y``'s order.
    """

    def __init__(self, predict: Callable[[], np.ndarray], y: np.ndarray):
        super().__init__()
        self.predict = predict
        self.y = np.asarray(y)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if logs is not None and len(self.y):
            logs.update(validation_logs(self.y, self.predict()))
