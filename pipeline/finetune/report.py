"""The learning curve of a fine-tuned run: the head phase and the fine-tuning phase joined.

For a Keras head the head phase is its recorded per-epoch history; for a scikit-learn head
(no epochs) it is one point, the end-to-end model's validation numbers before any training
(which equal the head's). Fine-tuning epochs follow on the same axis, with a vertical line
where fine-tuning starts and a dotted one at the epoch whose weights were kept.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt

from pipeline.runs.plots import save_figure  # also selects the Agg backend


def plot_joined_curve(path: Path, head_history: Mapping[str, Sequence[float]] | None,
                      finetune_history: Mapping[str, Sequence[float]],
                      initial: Mapping[str, Any] | None = None, best_epoch: int | None = None,
                      title: str = "", metric: str = "accuracy") -> Path | None:
    """Accuracy, loss and (when another) the selection ``metric`` on validation per epoch
    across both phases; ``None`` if there is nothing to plot.

    ``best_epoch`` counts fine-tuning epochs from 1 (0: the weights before fine-tuning).
    """
    metric = "loss" if metric in ("loss", "log_loss") else metric
    head_history = head_history or {}
    n_head = max((len(v) for v in head_history.values() if isinstance(v, list | tuple)),
                 default=0)
    ft_len = max((len(v) for v in finetune_history.values() if isinstance(v, list | tuple)),
                 default=0)
    if not n_head and not ft_len and not initial:
        return None
    start = n_head if n_head else 0  # fine-tuning epoch k is plotted at start + k
    panels = ("accuracy", "loss") + (() if metric in ("accuracy", "loss") else (metric,))
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.8), squeeze=False)
    for ax, m in zip(axes[0], panels, strict=True):
        for key, label, colour in ((m, "train", "tab:blue"), (f"val_{m}", "validation",
                                                               "tab:orange")):
            head_vals = list(head_history.get(key) or [])
            if head_vals:
                ax.plot(range(1, len(head_vals) + 1), head_vals, color=colour, marker=".",
                        alpha=0.5, label=f"{label} (head)")
            ft_vals = list(finetune_history.get(key) or [])
            xs = list(range(start + 1, start + len(ft_vals) + 1))
            # Connect the phases: last head value, or the model before fine-tuning (epoch 0).
            if head_vals and ft_vals:
                xs, ft_vals = [start, *xs], [head_vals[-1], *ft_vals]
            first = (initial or {}).get("log_loss" if m == "loss" else m)
            if not head_vals and label == "validation" and first is not None and ft_vals:
                xs, ft_vals = [start, *xs], [first, *ft_vals]
            if ft_vals:
                ax.plot(xs, ft_vals, color=colour, marker="o", markersize=3,
                        label=f"{label} (fine-tuning)")
        ax.axvline(start + 0.5 if n_head else 0.5, color="black", linestyle="--", linewidth=1,
                   label="fine-tuning starts")
        if best_epoch is not None:
            ax.axvline(start + best_epoch, color="grey", linestyle=":",
                       label=f"kept epoch ({best_epoch}, best validation {metric})")
        ax.set_xlabel("epoch (head phase, then fine-tuning)" if n_head else
                      "fine-tuning epoch (0 = head before fine-tuning)")
        ax.set_ylabel(m)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return save_figure(fig, path, title)
