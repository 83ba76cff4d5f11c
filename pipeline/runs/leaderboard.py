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

Validation columns of runs selected by cross-validation (``selection: cv``) hold the means over
the folds: the score they were chosen on, so the default order, ``best_overall`` and ``best``
use the cross-validated score for them.

Uncertainty: ``test_ci`` is the 95% percentile-bootstrap interval of the test balanced accuracy
(recorded by the run; ``test_ci_low``/``test_ci_high`` as numbers, every metric's interval in
``test_ci_by_metric`` of ``--json``). ``rank`` says which differences the test set can
resolve: among runs scored on the same test rows (same dataset and test split), in the default
order, the first is ``1``; each next run is compared with the head of the current tier by a
paired bootstrap of the difference in test balanced accuracy (1000 resamples of the test rows,
both runs scored on each, seeded): if the 95% interval of the difference contains 0 the run is
statistically tied with it and shows ``≈`` and the tier's rank (``≈1``), else it starts a new
tier ranked by its position. Runs without test predictions (``predictions.csv``, older runs)
get no rank and still list.

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

import numpy as np

from pipeline import settings
from pipeline.errors import PipelineError, did_you_mean
from pipeline.fileio import atomic_write_text
from pipeline.heads.metrics import DEFAULT_METRIC, LOWER_IS_BETTER, paired_bootstrap_diff
from pipeline.runs.record import CONFIG, METRIC_NAMES, RunRecord
from pipeline.runs.store import iter_runs

#: The row-number column (see the module docstring).
ROW = "#"
COLUMNS = (
    ROW, "run_id", "created", "dataset", "base", "layer", "input_size", "pooling", "weights",
    "head", "config", "params", "selection_metric", "selection", "cv_folds", "cv_std",
    "best_overall", "refit", "repeats", "rank",
    *(f"val_{m}" for m in METRIC_NAMES), *(f"test_{m}" for m in METRIC_NAMES),
    "test_ci", "test_ci_low", "test_ci_high",
    "fit_seconds", "predict_seconds", "n_train", "n_validation", "n_test", "cache_key",
    "cache_file", "cache_path", "run_dir",
)
#: What the terminal table shows (a subset of :data:`COLUMNS`, same names).
SHOWN = (ROW, "run_id", "dataset", "base", "layer", "input_size", "pooling", "weights",
         "config", "repeats", "cv_folds", "rank", "val_balanced_accuracy",
         "test_balanced_accuracy", "test_ci", "test_accuracy", "test_roc_auc")
#: A run statistically tied with the head of its tier (see the module docstring).
TIED = "\u2248"
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
    rank_rows(rows)
    return rows


def _test_predictions(run_dir: str) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """``(ids, labels, proba)`` of a run's test rows, sorted by id, from its
    ``predictions.csv``; ``None`` if it has none or it does not read as numbers."""
    path = Path(run_dir) / "predictions.csv"
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader)
            rows = sorted(r for r in reader if len(r) == len(header) and r[1] == "test")
        p_cols = [i for i, h in enumerate(header) if h.startswith("p_")]
        ids = np.asarray([r[0] for r in rows], dtype=object)
        labels = np.asarray([r[2] for r in rows], dtype=object)
        proba = np.asarray([[float(r[i]) for i in p_cols] for r in rows], dtype=np.float64)
    except (OSError, ValueError, StopIteration, IndexError):
        return None
    if not len(rows) or proba.shape[1] < 2 or not np.all(np.isfinite(proba)):
        return None
    return ids, labels, proba


def _tied(a: tuple[np.ndarray, ...], b: tuple[np.ndarray, ...]) -> bool | None:
    """Whether the paired bootstrap cannot tell two runs' test balanced accuracy apart
    (``None``: not the same test rows and labels, so not comparable)."""
    if a[0].shape != b[0].shape or not (np.array_equal(a[0], b[0])
                                        and np.array_equal(a[1], b[1])) \
            or a[2].shape != b[2].shape:
        return None
    classes = {c: i for i, c in enumerate(sorted(set(a[1])))}
    y = np.asarray([classes[c] for c in a[1]])
    if a[2].shape[1] < len(classes):
        return None
    interval = paired_bootstrap_diff(y, a[2], b[2], metric=DEFAULT_METRIC)
    return interval is None or interval[0] <= 0.0 <= interval[1]


def rank_rows(rows: Sequence[dict[str, Any]]) -> None:
    """Fill ``rank`` (see the module docstring) in rows that are in the default order."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        r["rank"] = None
        if r.get("test_split"):
            groups.setdefault((r.get("dataset"), r["test_split"]), []).append(r)
    for group in groups.values():
        head: tuple[tuple[np.ndarray, ...], int] | None = None
        place = 0
        for r in group:
            preds = _test_predictions(r["run_dir"])
            if preds is None:
                continue
            place += 1
            tied = _tied(head[0], preds) if head is not None else False
            if head is not None and tied:
                r["rank"] = f"{TIED}{head[1]}"
            elif tied is not None:
                head = (preds, place)
                r["rank"] = str(place)


def leaderboard(reports: str | os.PathLike, *, dataset: str | None = None,
                base: str | None = None, head: str | None = None,
                sort: str | None = None) -> list[dict[str, Any]]:
    """Rows of every run under ``reports``, filtered (exact match) and best first.

    Each row keeps its ``#`` from the default order over all runs. Reads only. Example::

        from pipeline.runs import leaderboard
        rows = leaderboard("reports", head="logreg")
        rows[0]["run_id"], rows[0]["val_balanced_accuracy"], rows[0]["test_ci"]
    """
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
