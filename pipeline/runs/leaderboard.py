"""The leaderboard: one row per run folder in the reports directory.

Rows carry the identity of the run (dataset, base, layer, input size, pooling, weights, head,
parameters) and its validation (``val_*``) and test (``test_*``) metrics. Ranking defaults to
the validation value of the selection metric – the number the configurations were chosen on.
Sorting by a ``test_*`` column is allowed for reporting, but choosing a head from the test
column would leak the test set into selection.

Every row has a number (``#``): its place in the default order over all runs, kept when the
rows are filtered or sorted otherwise; ``#3`` (or ``3``) names that run wherever a run id is
accepted. Runs of an identical configuration (same cache key, stage, head kind and
parameters, seed, selection) are one row: the newest run, with ``repeats`` counting them all.

Reading the leaderboard writes nothing; :func:`write_leaderboard` refreshes
``leaderboard.csv`` in the reports dir, and ``index.html`` through the report package
(:mod:`pipeline.report`) when it is loaded (called by the commands that add or remove runs).
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pipeline import settings
from pipeline.errors import PipelineError, did_you_mean
from pipeline.fileio import atomic_write_text
from pipeline.heads.metrics import DEFAULT_METRIC, LOWER_IS_BETTER
from pipeline.runs.record import CONFIG, METRIC_NAMES, RunRecord
from pipeline.runs.store import iter_runs

#: The row-number column (see the module docstring).
ROW = "#"
COLUMNS = (
    ROW, "run_id", "created", "dataset", "base", "layer", "input_size", "pooling", "weights",
    "head", "config", "params", "selection_metric", "best_overall", "refit", "repeats",
    *(f"val_{m}" for m in METRIC_NAMES), *(f"test_{m}" for m in METRIC_NAMES),
    "fit_seconds", "predict_seconds", "n_train", "n_validation", "n_test", "cache_key",
    "cache_file", "cache_path", "run_dir",
)
#: What the terminal table shows (a subset of :data:`COLUMNS`, same names).
SHOWN = (ROW, "run_id", "dataset", "base", "layer", "input_size", "pooling", "weights",
         "config", "repeats", "val_balanced_accuracy", "test_balanced_accuracy",
         "test_accuracy", "test_roc_auc")
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


def _sort_key(col: str) -> Callable[[dict[str, Any]], tuple]:
    metric = col.removeprefix("val_").removeprefix("test_")
    descending = metric in METRIC_NAMES and metric not in LOWER_IS_BETTER

    def key(r: dict[str, Any]) -> tuple:
        v = r.get(col)
        missing = v is None
        if isinstance(v, bool | int | float) and not missing:
            return (missing, -v if descending else v, r["run_id"])
        return (missing, str(v or ""), r["run_id"])

    return key


def _collapse(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per identical configuration: the newest run, ``repeats`` counting them all
    (``repeat_ids``: every run id of the group, newest first)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(r.pop("identity"), []).append(r)
    out = []
    for group in groups.values():
        group.sort(key=lambda r: (str(r.get("created") or ""), r["run_id"]), reverse=True)
        newest = group[0]
        newest["repeats"] = len(group)
        newest["repeat_ids"] = [r["run_id"] for r in group]
        out.append(newest)
    return out


def all_rows(reports: str | os.PathLike) -> list[dict[str, Any]]:
    """Every row (repeats collapsed) in the default order, numbered ``#`` 1, 2, ..."""
    rows = _collapse([record.leaderboard_row(d, metrics)
                      for d, record, metrics in iter_runs(reports)])
    rows.sort(key=_sort_key(sort_column(None)))
    for i, r in enumerate(rows, 1):
        r[ROW] = i
    return rows


def leaderboard(reports: str | os.PathLike, *, dataset: str | None = None,
                base: str | None = None, head: str | None = None,
                sort: str | None = None) -> list[dict[str, Any]]:
    """Rows of every run under ``reports``, filtered (exact match) and best first.

    Each row keeps its ``#`` from the default order over all runs. Reads only."""
    col = sort_column(sort)
    rows = [r for r in all_rows(reports) if (dataset is None or r["dataset"] == dataset)
            and (base is None or r["base"] == base) and (head is None or r["head"] == head)]
    return sorted(rows, key=_sort_key(col))


def row_number(text: str) -> int | None:
    """The row number ``#3`` or ``3`` names (a bare number of at most 4 digits: no run id
    prefix that short is useful, since ids start with the year), else ``None``."""
    digits = text[1:] if text.startswith("#") else text
    if digits.isdigit() and (text.startswith("#") or len(digits) <= 4):
        return int(digits)
    if text.startswith("#"):
        raise PipelineError(f"{text!r}: expected a row number of `pipeline runs`, such as #3")
    return None


def _by_row(reports: Path, n: int) -> Path:
    rows = all_rows(reports)
    if not 1 <= n <= len(rows):
        raise PipelineError(f"no row #{n} under {reports}: `pipeline runs` shows "
                            f"{len(rows)} row(s)")
    return Path(rows[n - 1]["run_dir"])


def find_run(reports: str | os.PathLike, text: str) -> Path:
    """The run folder ``text`` names under ``reports``: a row number (``#3``/``3``), a run
    id or a unique prefix of one, or a run folder path; else one line saying why not."""
    reports = Path(reports)
    n = row_number(text)
    if n is not None:
        return _by_row(reports, n)
    path = Path(text).expanduser()
    if (path / CONFIG).is_file():
        return path
    if (reports / text / CONFIG).is_file():
        return reports / text
    ids = sorted(p.parent.name for p in reports.glob(f"*/{CONFIG}")) if reports.is_dir() else []
    matches = [i for i in ids if i.startswith(text)]
    if len(matches) == 1:
        return reports / matches[0]
    if len(matches) > 1:
        shown = ", ".join(matches[:5]) + (" ..." if len(matches) > 5 else "")
        raise PipelineError(f"run {text!r} is ambiguous under {reports}: {shown}")
    hint = did_you_mean(text, ids, n=3, cutoff=0.5)
    if path.exists():
        raise PipelineError(f"{path}: not a run folder (no {CONFIG})")
    raise PipelineError(f"no run {text!r} under {reports}{hint}; give a run id or #N "
                        "from `pipeline runs`, or a run folder path")


def remove_runs(refs: Sequence[str], reports_dir: str | os.PathLike | None = None
                ) -> list[str]:
    """Delete the run folders ``refs`` name (as :func:`find_run` resolves them) and refresh
    the leaderboard files; returns the removed run ids. Every ref is checked first: anything
    that is not a run folder directly under the reports dir is refused and nothing is
    deleted."""
    reports = settings.reports_dir(reports_dir)
    root = reports.resolve()
    found: dict[Path, str] = {}
    for ref in refs:
        path = find_run(reports, str(ref).strip())
        real = path.resolve()
        if real.parent != root or path.is_symlink():
            raise PipelineError(f"{ref}: {path} is not a run folder under {reports}; "
                                "nothing removed")
        RunRecord.read(real)  # a folder with a readable run record, or one line
        found.setdefault(real, real.name)
    for path in found:
        shutil.rmtree(path)
    write_leaderboard(reports)
    return list(found.values())


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


#: Writers of the HTML report, each called with the reports folder after every refresh.
#: The report (:mod:`pipeline.report`) sits in a higher layer and adds itself here when it
#: is imported (the command line imports it at start-up); the runs layer writes the CSV.
PAGE_WRITERS: list[Callable[[Path], object]] = []


def write_leaderboard(reports: str | os.PathLike) -> tuple[Path, Path]:
    """Rewrite ``leaderboard.csv`` and (through :data:`PAGE_WRITERS`) ``index.html`` over
    all runs; returns their paths."""
    reports = Path(reports)
    reports.mkdir(parents=True, exist_ok=True)
    path = write_csv(all_rows(reports), reports / CSV_NAME)
    for write_pages in PAGE_WRITERS:
        write_pages(reports)
    return path, reports / HTML_NAME
