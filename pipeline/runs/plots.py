"""PNG plots of a run: confusion matrices and learning curves (matplotlib, Agg backend).

matplotlib loads when a plot is drawn, not with this module (importing ``pipeline.runs``
stays fast); the Agg backend is chosen before it loads: files only, never a window (safe on
servers and in worker threads). The HTML report draws its own figures
(:mod:`pipeline.report.figures`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

# Read by matplotlib when it is first imported, wherever that happens.
os.environ.setdefault("MPLBACKEND", "Agg")


def pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend, imported on first use."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path, title: str = "") -> Path:
    """Title, tighten, write as PNG and free the figure (every plot of a run ends here)."""
    plt = pyplot()
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_confusion(path: Path, matrices: Mapping[str, Sequence[Sequence[int]]],
                   class_names: Sequence[str], title: str = "") -> Path:
    """One panel per split (e.g. validation, test); cells show counts, colour shows row share."""
    plt = pyplot()

    items = [(k, np.asarray(v)) for k, v in matrices.items() if v is not None]
    n = len(class_names)
    size = max(3.2, 0.5 * n + 2.2)
    fig, axes = plt.subplots(1, len(items), figsize=(size * len(items), size), squeeze=False)
    for ax, (split, cm) in zip(axes[0], items, strict=True):
        rows = cm.sum(axis=1, keepdims=True)
        share = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=float), where=rows > 0)
        ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
        for i in range(n):
            for j in range(n):
                ax.text(j, i, str(cm[i, j]), ha="center", va="center",
                        color="white" if share[i, j] > 0.5 else "black", fontsize=9)
        ax.set_xticks(range(n), class_names, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(n), class_names, fontsize=8)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"{split} (n={int(cm.sum())})", fontsize=10)
    return save_figure(fig, path, title)


def plot_learning_curve(path: Path, history: Mapping[str, Sequence[float]], title: str = "",
                        best_epoch: Any = None) -> Path | None:
    """Accuracy and loss per epoch, train and validation; ``None`` if there is no history."""
    plt = pyplot()

    panels = [m for m in ("accuracy", "loss") if history.get(m) or history.get(f"val_{m}")]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
    for ax, m in zip(axes[0], panels, strict=True):
        for key, label in ((m, "train"), (f"val_{m}", "validation")):
            vals = history.get(key)
            if vals:
                ax.plot(range(1, len(vals) + 1), vals, label=label, marker=".")
        if best_epoch:
            ax.axvline(best_epoch, color="grey", linestyle=":", label="kept epoch")
        ax.set_xlabel("epoch")
        ax.set_ylabel(m)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return save_figure(fig, path, title)
