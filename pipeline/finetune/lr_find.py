"""The learning-rate range test (as fastai's ``lr_find``, after Smith 2015).

From a copy of the starting weights, train for ``steps`` batches while the rate grows
exponentially from ``start`` to ``end``; record each batch's training loss (smoothed as
fastai does: exponential moving average, debiased) and stop once it exceeds 4x its minimum.
The suggestion is the rate at the smoothed minimum divided by 10 (fastai's classic
``lr_min``), a conservative rate still on the falling part of the curve. The model's weights
are put back afterwards. Runs on the cached path when possible (same model, faster).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import keras
import numpy as np

from pipeline.fileio import write_json
from pipeline.finetune.setup import Setup, compile_model

if TYPE_CHECKING:
    from pipeline.context import Context
    from pipeline.finetune.prepare import Prepared

PLOT_FILE = "lr_find.png"
RESULT_FILE = "lr_find.json"


@dataclass
class LrFind:
    """Rates tried, the (smoothed) loss at each, and the suggested rate."""

    rates: list[float]
    losses: list[float]
    smoothed: list[float]
    suggestion: float
    plot: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class _RangeTest(keras.callbacks.Callback):
    """Sets each batch's rate; recovers each batch's loss from Keras' running mean."""

    def __init__(self, rates: np.ndarray, beta: float = 0.98):
        super().__init__()
        self.rates, self.beta = rates, beta
        self.losses: list[float] = []
        self.smoothed: list[float] = []
        self._mean, self._avg = 0.0, 0.0

    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self.model.optimizer.learning_rate.assign(float(self.rates[batch]))

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        mean = float((logs or {}).get("loss", math.nan))
        loss = (batch + 1) * mean - batch * self._mean  # logs hold the epoch's running mean
        self._mean = mean
        self.losses.append(loss)
        self._avg = self.beta * self._avg + (1 - self.beta) * loss
        smooth = self._avg / (1 - self.beta ** (batch + 1))
        self.smoothed.append(smooth)
        if not math.isfinite(smooth) or smooth > 4 * min(self.smoothed):
            self.model.stop_training = True


def find_lr(prepared: Prepared, run: Setup, out_dir: Path, ctx: Context, *,
            start: float = 1e-7, end: float = 1.0, steps: int | None = None) -> LrFind:
    """Run the range test on ``run`` (its model, its feed); plot and JSON in ``out_dir``."""
    steps = steps or int(min(100, max(30, run.feed.steps)))
    rates = np.geomspace(start, end, steps)
    saved = [w.numpy() for w in prepared.classifier.weights]
    compile_model(run.model, prepared.options, start, run.feed.steps, schedule="constant")
    test = _RangeTest(rates)
    keras.utils.set_random_seed(prepared.options.seed)
    try:
        run.model.fit(run.feed.forever(0), steps_per_epoch=steps, epochs=1, shuffle=False,
                      callbacks=[test], verbose=0)
    finally:
        for w, value in zip(prepared.classifier.weights, saved, strict=True):
            w.assign(value)
    n = len(test.smoothed)
    lowest = int(np.nanargmin(test.smoothed)) if n else 0
    result = LrFind(rates=[float(r) for r in rates[:n]], losses=test.losses,
                    smoothed=test.smoothed, suggestion=float(rates[lowest] / 10))
    out_dir = Path(out_dir)
    write_json(out_dir / RESULT_FILE, {"rates": result.rates, "losses": result.losses,
                                       "smoothed": result.smoothed,
                                       "suggestion": result.suggestion,
                                       "cached_activations": run.cached})
    result.plot = _plot(out_dir / PLOT_FILE, result)
    ctx.report.line(f"LR finder: loss lowest at {rates[lowest]:.3g}; suggested learning rate "
                    f"{result.suggestion:.3g} (plot {result.plot})")
    return result


def _plot(path: Path, result: LrFind) -> Path:
    import matplotlib.pyplot as plt

    from pipeline.runs.plots import save_figure

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(result.rates, result.losses, color="tab:blue", alpha=0.3, label="batch loss")
    ax.plot(result.rates, result.smoothed, color="tab:blue", label="smoothed")
    ax.axvline(result.suggestion, color="tab:red", linestyle="--",
               label=f"suggested {result.suggestion:.2g}")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    finite = [v for v in result.smoothed if math.isfinite(v)]
    if finite:
        ax.set_ylim(min(finite) * 0.9, min(max(finite), 4 * min(finite)) * 1.1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path, "learning-rate range test")
