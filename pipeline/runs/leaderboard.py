"""The leaderboard: one row per run folder in the reports directory.

Rows carry the identity of the run (dataset, base, head, parameters) and its validation
(``val_*``) and test (``test_*``) metrics. Ranking defaults to the validation value of the
selection metric – the number the configurations were chosen on. Sorting by a ``test_*``
column is allowed for reporting, but choosing a head from the test column would leak the
test set into selection.

:func:`write_leaderboard` refreshes ``leaderboard.csv`` and ``index.html`` in the reports dir.
"""

from __future__ import annotations

import csv
import html
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline.errors import PipelineError
from pipeline.fileio import atomic_write_text
from pipeline.heads.metrics import DEFAULT_METRIC, LOWER_IS_BETTER
from pipeline.runs.record import METRIC_NAMES
from pipeline.runs.store import iter_runs

COLUMNS = (
    "run_id", "created", "dataset", "base", "head", "config", "params", "selection_metric",
    "best_overall", "refit",
    *(f"val_{m}" for m in METRIC_NAMES), *(f"test_{m}" for m in METRIC_NAMES),
    "fit_seconds", "predict_seconds", "n_train", "n_validation", "n_test", "cache_key",
    "cache_path", "run_dir",
)
CSV_NAME = "leaderboard.csv"
HTML_NAME = "index.html"


def sort_column(sort: str | None) -> str:
    """The column a ``--sort`` value names: a bare metric means its validation column."""
    if not sort:
        return f"val_{DEFAULT_METRIC}"
    col = f"val_{sort}" if sort in METRIC_NAMES else sort
    if col not in COLUMNS:
        plain = ", ".join(c for c in COLUMNS if not c.startswith(("val_", "test_")))
        raise PipelineError(f"cannot sort by {sort!r}; expected a metric "
                            f"({', '.join(METRIC_NAMES)}), val_/test_ + metric, or a column "
                            f"({plain})")
    return col


def leaderboard(reports: str | os.PathLike, *, dataset: str | None = None,
                base: str | None = None, head: str | None = None,
                sort: str | None = None) -> list[dict[str, Any]]:
    """Rows of every run under ``reports``, filtered (exact match) and best first."""
    col = sort_column(sort)
    rows = [record.leaderboard_row(d, metrics) for d, record, metrics in iter_runs(reports)]
    rows = [r for r in rows if (dataset is None or r["dataset"] == dataset)
            and (base is None or r["base"] == base) and (head is None or r["head"] == head)]
    metric = col.removeprefix("val_").removeprefix("test_")
    descending = metric in METRIC_NAMES and metric not in LOWER_IS_BETTER

    def key(r: dict[str, Any]) -> tuple:
        v = r.get(col)
        missing = v is None
        if isinstance(v, bool | int | float) and not missing:
            return (missing, -v if descending else v, r["run_id"])
        return (missing, str(v or ""), r["run_id"])

    return sorted(rows, key=key)


def write_csv(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """The rows as CSV, written atomically (concurrent writers never share a temporary)."""
    text = io.StringIO(newline="")
    w = csv.DictWriter(text, fieldnames=list(COLUMNS), extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in COLUMNS})
    return atomic_write_text(path, text.getvalue())


def to_json(rows: Sequence[dict[str, Any]]) -> str:
    return json.dumps(list(rows), indent=2)


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v)


def write_html(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """A static page: the table, then each run's plots (linked PNGs, relative to the page)."""
    shown = ("run_id", "dataset", "base", "config", "best_overall",
             *(f"val_{m}" for m in METRIC_NAMES), *(f"test_{m}" for m in METRIC_NAMES),
             "fit_seconds")
    esc = html.escape
    out = ["<!doctype html><html><head><meta charset='utf-8'><title>pipeline runs</title>",
           "<style>body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse;"
           "font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px}th{background:#eee}"
           "tr.best{background:#eef8ee}img{max-width:48%;margin:4px;border:1px solid #ddd}"
           "section{margin-top:2em}</style></head><body>",
           f"<h1>pipeline runs</h1><p>{len(rows)} runs; ranked by validation "
           f"{esc(DEFAULT_METRIC)} (selection never looks at test).</p>",
           "<table><tr>" + "".join(f"<th>{esc(c)}</th>" for c in shown) + "</tr>"]
    for r in rows:
        cls = " class='best'" if r.get("best_overall") else ""
        cells = []
        for c in shown:
            text = esc(_fmt(r.get(c)))
            if c == "run_id":
                text = f"<a href='#{text}'>{text}</a>"
            cells.append(f"<td>{text}</td>")
        out.append(f"<tr{cls}>" + "".join(cells) + "</tr>")
    out.append("</table>")
    root = path.parent.resolve()
    for r in rows:
        run_dir = Path(r["run_dir"]).resolve()
        try:
            rel = run_dir.relative_to(root).as_posix()
        except ValueError:
            rel = run_dir.as_uri()
        out.append(f"<section id='{esc(r['run_id'])}'><h3>{esc(r['run_id'])}</h3>"
                   f"<p>{esc(str(r['head']))} {esc(str(r['params']))} on {esc(str(r['base']))}"
                   f" / {esc(str(r['dataset']))}</p>")
        for png in ("confusion_matrix.png", "learning_curve.png"):
            if (run_dir / png).is_file():
                out.append(f"<img src='{esc(rel)}/{png}' alt='{png}'>")
        out.append("</section>")
    out.append("</body></html>")
    return atomic_write_text(path, "\n".join(out))


def write_leaderboard(reports: str | os.PathLike) -> tuple[Path, Path]:
    """Rewrite ``leaderboard.csv`` and ``index.html`` over all runs; returns their paths."""
    reports = Path(reports)
    reports.mkdir(parents=True, exist_ok=True)
    rows = leaderboard(reports)
    return write_csv(rows, reports / CSV_NAME), write_html(rows, reports / HTML_NAME)
