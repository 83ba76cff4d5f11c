"""KeepBest: best-epoch checkpoint and early stopping that survive a restart."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import keras

from pipeline.fileio import atomic_path, read_json, write_json


class KeepBest(keras.callbacks.Callback):
    """Keep the weights of the epoch with the lowest ``val_loss`` and stop training after
    ``patience`` epochs without a better one (0: never stop early).

    Why not ``ModelCheckpoint(save_best_only=True)`` + ``EarlyStopping``: both keep the best
    value and the wait counter in memory and reset them at every ``fit``, so a run resumed
    after a crash would forget which epoch was best and count its patience from zero. Here
    the state is two files in ``folder``: ``best.json`` (``{"epoch", "val_loss"}``, epochs
    counted from 1) and ``best.weights.h5``, replaced atomically one after the other; a new
    ``KeepBest`` on the same folder carries on from them.

    ``target``: the model whose weights are kept (default: the model being fitted), e.g. the
    classifier inside a training model that adds augmentation in front. Call
    :meth:`checkpoint` with epoch 0 before training to make the starting point compete too.
    """

    WEIGHTS_FILE = "best.weights.h5"
    STATE_FILE = "best.json"

    def __init__(self, folder: str | os.PathLike, patience: int = 0,
                 target: keras.Model | None = None):
        super().__init__()
        self.folder = Path(folder)
        self.patience = patience
        self.target = target
        self.best: dict[str, Any] = dict(read_json(self.state_path, {}))

    @property
    def weights_path(self) -> Path:
        return self.folder / self.WEIGHTS_FILE

    @property
    def state_path(self) -> Path:
        return self.folder / self.STATE_FILE

    @property
    def best_epoch(self) -> int | None:
        return self.best.get("epoch")

    def checkpoint(self, epoch: int, val_loss: float) -> None:
        """Save the target's weights (no optimizer state) as the best, as epoch ``epoch``."""
        model = self.target if self.target is not None else self.model
        with atomic_path(self.weights_path, suffix=".weights.h5") as tmp:
            model.save_weights(tmp)
        self.best = {"epoch": epoch, "val_loss": val_loss}
        write_json(self.state_path, self.best)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        value = float((logs or {}).get("val_loss", math.nan))
        number = epoch + 1
        if math.isfinite(value) and value < self.best.get("val_loss", math.inf):
            self.checkpoint(number, value)
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
