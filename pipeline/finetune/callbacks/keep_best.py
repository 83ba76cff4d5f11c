"""KeepBest: best-epoch checkpoint and early stopping that survive a restart."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import keras

from pipeline.fileio import atomic_path, read_json, write_json
from pipeline.heads.metrics import LOWER_IS_BETTER


class KeepBest(keras.callbacks.Callback):
    """Keep the weights of the epoch with the best validation ``metric`` and stop training
    after ``patience`` epochs without a better one (0: never stop early).

    ``metric``: a name of :func:`pipeline.heads.metrics.classification_metrics` (``loss`` or
    ``log_loss``: the epoch logs' ``val_loss``; others: ``val_<metric>``, which
    :class:`~pipeline.finetune.callbacks.Validate` adds to the logs); lower is better for the
    losses, higher for the rest. A tie on the metric goes to the lower validation loss, then
    to the earlier epoch (so the head, epoch 0, keeps a tie with its own scores).

    Why not ``ModelCheckpoint(save_best_only=True)`` + ``EarlyStopping``: both keep the best
    value and the wait counter in memory and reset them at every ``fit``, so a run resumed
    after a crash would forget which epoch was best and count its patience from zero. Here
    the state is two files in ``folder``: ``best.json`` (``{"epoch", "metric", "value",
    "val_loss"}``, epochs counted from 1; a file without ``metric`` was kept on ``loss``)
    and ``best.weights.h5``, replaced atomically one after the other; a new
    ``KeepBest`` on the same folder carries on from them.

    ``target``: the model whose weights are kept (default: the model being fitted), e.g. the
    classifier inside a training model that adds augmentation in front. Call
    :meth:`checkpoint` with epoch 0 before training to make the starting point compete too.
    """

    WEIGHTS_FILE = "best.weights.h5"
    STATE_FILE = "best.json"

    def __init__(self, folder: str | os.PathLike, patience: int = 0,
                 target: keras.Model | None = None, metric: str = "loss"):
        super().__init__()
        self.folder = Path(folder)
        self.patience = patience
        self.target = target
        self.metric = "log_loss" if metric == "loss" else metric
        self.best: dict[str, Any] = dict(read_json(self.state_path, {}))
        if self.best and "metric" not in self.best:  # written before metrics were selectable
            self.best.update(metric="log_loss", value=self.best.get("val_loss"))

    @property
    def log_key(self) -> str:
        """The epoch logs' key of the metric."""
        return "val_loss" if self.metric == "log_loss" else f"val_{self.metric}"

    def _rank(self, value: float, val_loss: float) -> tuple[float, float]:
        """Smaller is better: (metric, validation loss)."""
        return (value if self.metric in LOWER_IS_BETTER else -value,
                val_loss if math.isfinite(val_loss) else math.inf)

    @property
    def weights_path(self) -> Path:
        return self.folder / self.WEIGHTS_FILE

    @property
    def state_path(self) -> Path:
        return self.folder / self.STATE_FILE

    @property
    def best_epoch(self) -> int | None:
        return self.best.get("epoch")

    def checkpoint(self, epoch: int, value: float, val_loss: float | None = None) -> None:
        """Save the target's weights (no optimizer state) as the best, as epoch ``epoch``
        with metric ``value`` (and validation loss ``val_loss``; default ``value``)."""
        model = self.target if self.target is not None else self.model
        with atomic_path(self.weights_path, suffix=".weights.h5") as tmp:
            model.save_weights(tmp)
        self.best = {"epoch": epoch, "metric": self.metric, "value": value,
                     "val_loss": value if val_loss is None else val_loss}
        write_json(self.state_path, self.best)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs or {}
        value = float(logs.get(self.log_key, math.nan))
        val_loss = float(logs.get("val_loss", math.nan))
        number = epoch + 1
        best = self._rank(float(self.best.get("value", math.nan)),
                          float(self.best.get("val_loss", math.nan))) if self.best else None
        if math.isfinite(value) and (best is None or not math.isfinite(best[0])
                                     or self._rank(value, val_loss) < best):
            self.checkpoint(number, value, val_loss)
        if self.patience and number - int(self.best.get("epoch", 0)) >= self.patience:
            self.model.stop_training = True

    def restore(self) -> bool:
        """Load the kept weights into the target; False if none were saved."""
        if not self.weights_path.is_file():
            return False
        model = self.target if self.target is not None else self.model
        model.load_weights(self.weights_path)
        return True

    def discard_weights(self) -> None:
        """Remove the weights file once the run has saved its final model."""
        self.weights_path.unlink(missing_ok=True)
