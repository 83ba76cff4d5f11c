"""The report's figures, written as PNG files beside the pages (matplotlib, Agg backend).

Confusion matrices, ROC, precision-recall and reliability curves are scikit-learn's display
classes (``ConfusionMatrixDisplay``, ``RocCurveDisplay``, ``PrecisionRecallDisplay``,
``CalibrationDisplay``) drawn from a run's saved predictions. matplotlib loads when a figure
is drawn, not with the package.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.fileio import atomic_path
from pipeline.report.data import SPLITS, Predictions, Run, confusion

DPI = 90
#: Widest figure in inches: 1100 px at DPI, inside a 1280 px window with margins.
MAX_WIDTH = 12.2


def _figure(width: float, height: float) -> Any:
    """A matplotlib Figure outside pyplot (no global state: safe when several writers
    refresh the report at once)."""
    from pipeline.runs.plots import pyplot

    pyplot()  # selects the Agg backend before matplotlib.figure loads
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height))


def _save(fig: Any, path: Path, title: str = "") -> str:
    """Title, tighten and write the figure as PNG atomically; returns the file name."""
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=DPI)
    return path.name


def confusion_figure(run: Run, split: str, path: Path) -> str | None:
    """Counts and row-normalised confusion matrix of one split, side by side."""
    from sklearn.metrics import ConfusionMatrixDisplay

    p = run.predictions.get(split)
    if p is None or not len(p.labels):
        return None
    names = run.class_names
    cm = confusion(p, len(names))
    share = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    side = min(MAX_WIDTH / 2, max(3.2, 0.45 * len(names) + 2.2))
    fig = _figure(2 * side, side)
    axes = fig.subplots(1, 2)
    for ax, values, fmt, what in ((axes[0], cm, "d", f"counts (n={int(cm.sum())})"),
                                  (axes[1], share, ".2f", "share of true class")):
        ConfusionMatrixDisplay(values, display_labels=names).plot(
            ax=ax, cmap="Blues", colorbar=False, values_format=fmt,
            xticks_rotation=45 if len(names) > 3 else "horizontal")
        ax.set_title(f"{split}: {what}", fontsize=9)
    return _save(fig, path)


def _binary_curves(axes: Sequence[Any], preds: Mapping[str, Predictions], pos: str) -> None:
    from sklearn.calibration import CalibrationDisplay
    from sklearn.metrics import PrecisionRecallDisplay, RocCurveDisplay

    for split, p in preds.items():
        y, score = p.labels == 1, p.proba[:, 1]
        RocCurveDisplay.from_predictions(y, score, name=split, ax=axes[0])
        PrecisionRecallDisplay.from_predictions(y, score, name=split, ax=axes[1])
        CalibrationDisplay.from_predictions(y, score, n_bins=10, name=split, ax=axes[2])
    for ax in axes:  # validation dashed (styled afterwards: the displays' keywords vary)
        for line in ax.lines:
            if str(line.get_label()).startswith("validation"):
                line.set_linestyle("--")
    axes[0].set_title(f"ROC ({pos} positive)", fontsize=9)
    axes[1].set_title(f"precision-recall ({pos} positive)", fontsize=9)
    axes[2].set_title(f"reliability: P({pos})", fontsize=9)


def _multiclass_curves(axes: Sequence[Any], p: Predictions, names: Sequence[str]) -> None:
    from sklearn.calibration import CalibrationDisplay
    from sklearn.metrics import PrecisionRecallDisplay, RocCurveDisplay

    for k, name in enumerate(names):
        y = p.labels == k
        if y.all() or not y.any():
            continue  # one-vs-rest needs both
        RocCurveDisplay.from_predictions(y, p.proba[:, k], name=name, ax=axes[0])
        PrecisionRecallDisplay.from_predictions(y, p.proba[:, k], name=name, ax=axes[1])
    correct = p.predicted == p.labels
    CalibrationDisplay.from_predictions(correct, p.proba.max(axis=1), n_bins=10,
                                        name="top class", ax=axes[2])
    axes[0].set_title("ROC, one class vs rest (test)", fontsize=9)
    axes[1].set_title("precision-recall, one vs rest (test)", fontsize=9)
    axes[2].set_title("reliability: confidence of the top class (test)", fontsize=9)


def curves_figure(run: Run, path: Path) -> str | None:
    """ROC, precision-recall and reliability diagram (validation dashed, test solid for two
    classes; one curve per class on test for more)."""
    names = run.class_names
    preds = {s: p for s in SPLITS if (p := run.predictions.get(s)) is not None
             and len(np.unique(p.labels)) > 1}
    if not preds or len(names) < 2:
        return None
    fig = _figure(MAX_WIDTH, 3.9)
    axes = fig.subplots(1, 3)
    if len(names) == 2:
        _binary_curves(axes, preds, names[1])
    else:
        _multiclass_curves(axes, preds.get("test") or next(iter(preds.values())), names)
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    return _save(fig, path)


def _phase(history: Mapping[str, Any] | None, key: str) -> list[float]:
    vals = (history or {}).get(key)
    return [float(v) for v in vals] if isinstance(vals, list | tuple) else []


def learning_figure(run: Run, path: Path) -> str | None:
    """Loss and accuracy per epoch, train and validation. For a fine-tuned run the head's
    epochs come first and a dashed line marks the hand-over to fine-tuning; a dotted line
    marks the epoch whose weights were kept."""
    m = run.metrics
    finetuned = run.record.is_finetuned
    head_hist = m.head_history if finetuned else None
    if not m.history:
        return None
    n_head = max((len(_phase(head_hist, k)) for k in ("loss", "val_loss")), default=0)
    panels = ("loss", "accuracy", *_selection_panel(run))
    fig = _figure(MAX_WIDTH * (0.8 if len(panels) == 2 else 0.95), 3.5)
    axes = fig.subplots(1, len(panels))
    for ax, metric in zip(axes, panels, strict=True):
        for key, colour in ((metric, "tab:blue"), (f"val_{metric}", "tab:orange")):
            name = "validation" if key.startswith("val_") else "train"
            head_vals, vals = _phase(head_hist, key), _phase(m.history, key)
            if head_vals:
                ax.plot(range(1, len(head_vals) + 1), head_vals, color=colour, alpha=0.45,
                        marker=".", label=f"{name} (head)")
            if vals:
                ax.plot(range(n_head + 1, n_head + len(vals) + 1), vals, color=colour,
                        marker="o", markersize=3,
                        label=f"{name} (fine-tuning)" if finetuned else name)
        if finetuned:
            ax.axvline(n_head + 0.5, color="black", linestyle="--", linewidth=1,
                       label="hand-over to fine-tuning")
        if m.best_epoch is not None and (finetuned or m.best_epoch > 0):
            ax.axvline(n_head + m.best_epoch, color="grey", linestyle=":", label="kept epoch")
        ax.set_xlabel("epoch" + (" (head, then fine-tuning)" if n_head else ""))
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _save(fig, path)


def _selection_panel(run: Run) -> tuple[str, ...]:
    """The validation metric the kept epoch was chosen on, when the history has it and it
    is not one of the two panels already drawn (fine-tuning records e.g. balanced accuracy)."""
    metric = (run.record.selection.metric or "").split(" ")[0]
    shown = metric not in ("loss", "log_loss", "accuracy")
    return (metric,) if shown and _phase(run.metrics.history, f"val_{metric}") else ()


def _shorten(text: str, limit: int = 48) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def comparison_figure(rows: Sequence[dict[str, Any]], metric: str, path: Path,
                      title: str = "") -> str | None:
    """Validation and test ``metric`` of each run (one line per head configuration and
    base), with the test bootstrap 95% interval where the run has one."""
    rows = [r for r in rows if r.get(f"val_{metric}") is not None]
    if not rows:
        return None
    rows = sorted(rows, key=lambda r: (str(r.get("head")), str(r.get("base"))))
    height = min(12.0, 1.9 + 0.34 * len(rows))
    fig = _figure(MAX_WIDTH * 0.75, height)
    ax = fig.subplots()
    ys = np.arange(len(rows))[::-1]
    for y, r in zip(ys, rows, strict=True):
        ci = r.get("test_ci") or None
        test = r.get(f"test_{metric}")
        if ci and test is not None:
            ax.errorbar(test, y - 0.12, xerr=[[test - ci[0]], [ci[1] - test]], fmt="none",
                        ecolor="tab:orange", capsize=3, linewidth=1)
    ax.scatter([r[f"val_{metric}"] for r in rows], ys + 0.12, marker="o", color="tab:blue",
               label="validation", zorder=3)
    tests = [(y, r.get(f"test_{metric}")) for y, r in zip(ys, rows, strict=True)
             if r.get(f"test_{metric}") is not None]
    if tests:
        ax.scatter([t for _, t in tests], [y - 0.12 for y, _ in tests], marker="s",
                   color="tab:orange", label="test (bar: bootstrap 95% interval)", zorder=3)
    ax.set_yticks(ys, [_shorten(f"{r.get('config')} · {r.get('base')}") for r in rows],
                  fontsize=8)
    ax.set_xlabel(metric.replace("_", " "))
    ax.grid(axis="x", alpha=0.3)
    ax.set_ylim(-0.6, len(rows) - 0.4)
    ax.margins(x=0.08)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16 * 3.4 / height),
              ncol=2, frameon=False)
    return _save(fig, path, title)


def sweep_figure(sweeps: Sequence[dict[str, Any]], path: Path, title: str = "") -> str | None:
    """One panel per head kind: validation score against the grid parameter, a line per
    base, the chosen configuration ringed."""
    kinds = sorted({s["kind"] for s in sweeps})
    if not kinds:
        return None
    cols = min(3, len(kinds))
    rows_n = -(-len(kinds) // cols)
    fig = _figure(MAX_WIDTH, 3.1 * rows_n)
    axes = fig.subplots(rows_n, cols, squeeze=False)
    for ax, kind in zip(axes.flat, kinds, strict=False):
        for s in (s for s in sweeps if s["kind"] == kind):
            pts = s["points"]
            xs = list(range(len(pts))) if s["categorical"] else [p["x"] for p in pts]
            ys = [p["y"] for p in pts]
            (line,) = ax.plot(xs, ys, marker="o", markersize=4, label=str(s["base"]))
            chosen = [(x, p["y"]) for x, p in zip(xs, pts, strict=True) if p["chosen"]]
            if chosen:
                ax.scatter(*zip(*chosen, strict=True), s=160, facecolors="none",
                           edgecolors=line.get_color(), linewidths=2, zorder=4)
            if s["categorical"]:
                ax.set_xticks(xs, [p["label"] for p in pts], rotation=30, ha="right",
                              fontsize=7)
            elif min(xs) > 0 and max(xs) / min(xs) >= 20:
                ax.set_xscale("log")
            ax.set_xlabel(s["param"] or "configuration")
            ax.set_ylabel(f"validation {s['metric'].replace('_', ' ')}")
        ax.set_title(f"{kind} (ringed: chosen)", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(kinds):]:
        ax.set_visible(False)
    return _save(fig, path, title)
