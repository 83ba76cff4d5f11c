"""EpochLog: the learning curve, written to a JSON file after every epoch."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import keras

from pipeline.fileio import read_json, write_json


class EpochLog(keras.callbacks.Callback):
    """Append each finished epoch's logs (``loss``, ``val_loss``, ...) and its wall time
    (``seconds``) to a JSON file of lists, one entry per epoch, rewritten after every epoch.

    Why not Keras' ``History``: it lives in memory and starts empty at every ``fit``, so a
    killed run would lose the epochs before the kill. This file survives, and a resumed
    ``fit`` continues it: the log starts from the file's first ``epochs_done`` entries (the
    epochs a backup can restore; later ones are redone), and an epoch logged again replaces
    its entry.
    """

    def __init__(self, path: str | os.PathLike, epochs_done: int | None = None):
        super().__init__()
        self.path = Path(path)
        logged: dict[str, list[float]] = read_json(self.path, {})
        self.history: dict[str, list[float]] = {
            k: list(v)[:epochs_done] for k, v in logged.items()}
        self._t0 = time.perf_counter()

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._t0 = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        for k in list(self.history):  # an epoch redone after a restart replaces its entry
            self.history[k] = self.history[k][:epoch]
        for k, v in {**(logs or {}), "seconds": time.perf_counter() - self._t0}.items():
            self.history.setdefault(k, []).append(float(v))
        write_json(self.path, self.history)
