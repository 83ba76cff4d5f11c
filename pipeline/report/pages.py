"""Render the report: ``<reports>/index.html`` and ``<run>/report.html`` for every run.

Pages are Jinja2 templates (``templates/``, autoescaped); every figure is a PNG file beside
its page (``<reports>/figures/``, ``<run>/figures/``), the top-losses thumbnails are the ones
the run folder kept (:mod:`pipeline.runs.thumbnails`). Nothing is loaded from the network:
the style sheet and the table-sorting script are inline.

A run page is rewritten when it is missing or older than the run's files (or always, with
``force``); the index is rewritten every time, its figures only when what they show changed
(their file names carry a digest of it), so refreshing the leaderboard stays cheap.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from pipeline.errors import PipelineError
from pipeline.fileio import atomic_write_text, json_sha256
from pipeline.report import data, figures
from pipeline.report.data import Run
from pipeline.runs.leaderboard import HTML_NAME, all_rows
from pipeline.runs.record import CONFIG, METRIC_NAMES, METRICS

#: A run's page, inside its folder; figures go in :data:`FIGURES` beside each page.
RUN_PAGE = "report.html"
FIGURES = "figures"
#: Part of every index figure's digest: bump when the drawing changes.
FIGURES_VERSION = 1
TEMPLATES = Path(__file__).with_name("templates")
_STALE_FIGURE_SECONDS = 120


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None or v == "":
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.{digits}f}" if v == v else "–"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def _sort_value(v: Any) -> str:
    """What a table cell sorts by (``data-v``): the number itself, else the text."""
    if isinstance(v, int | float) and not isinstance(v, bool):
        return repr(v)
    return "" if v is None else str(v)


def _breakable(v: Any) -> str:
    """A long identifier that may wrap after its underscores (zero-width spaces)."""
    return _fmt(v).replace("_", "_\u200b")


def _env() -> Any:
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES),
                             autoescape=jinja2.select_autoescape(["html"]),
                             undefined=jinja2.StrictUndefined, trim_blocks=True,
                             lstrip_blocks=True)
    env.filters.update(num=_fmt, sortv=_sort_value, short_id=data.short_id, breakable=_breakable,
                       words=lambda m: str(m).replace("_", " "))
    return env


def _render(template: str, path: Path, **values: Any) -> Path:
    page = _env().get_template(template).render(**values, metric_names=METRIC_NAMES)
    return atomic_write_text(path, page)


def _test_ci(run: Run) -> dict[str, list[float]]:
    """``RunMetrics.test_ci`` ({metric: [low, high]}) when the run has one, else {}."""
    m = run.metrics
    ci = getattr(m, "test_ci", None) or m.extra.get("test_ci")
    return ci if isinstance(ci, dict) else {}


def _cv(run: Run) -> dict[str, Any] | None:
    m = run.metrics
    cv = getattr(m, "cv", None) or m.extra.get("cv")
    return cv if isinstance(cv, dict) else None


# -- a run's page --------------------------------------------------------------------------


def _page_is_current(run: Run) -> bool:
    page = run.run_dir / RUN_PAGE
    if not page.is_file():
        return False
    sources = [run.run_dir / n for n in (CONFIG, METRICS, data.PREDICTIONS)]
    newest = max((p.stat().st_mtime for p in sources if p.is_file()), default=0.0)
    return page.stat().st_mtime >= newest


def _run_figures(run: Run) -> dict[str, Any]:
    out_dir = run.run_dir / FIGURES
    sweep = data.sweep_points(run)
    return {
        "confusion": {s: name for s in data.SPLITS if (name := figures.confusion_figure(
            run, s, out_dir / f"confusion_{s}.png"))},
        "curves": figures.curves_figure(run, out_dir / "curves.png"),
        "learning": figures.learning_figure(run, out_dir / "learning.png"),
        "sweep": figures.sweep_figure([sweep], out_dir / "sweep.png") if sweep else None,
    }


def write_run_page(run: Run, *, force: bool = False) -> Path:
    """Write ``<run>/report.html`` and its figures (skipped when current, unless ``force``)."""
    page = run.run_dir / RUN_PAGE
    if not force and _page_is_current(run):
        return page
    preds = run.predictions
    names = run.class_names
    return _render(
        "run.html", page, run=run, record=run.record, metrics=run.metrics, label=run.label,
        test_ci=_test_ci(run), cv=_cv(run), figs=_run_figures(run),
        per_class={s: data.per_class(preds[s], names) for s in data.SPLITS if s in preds},
        pairs={s: data.confused_pairs(preds[s], names) for s in data.SPLITS if s in preds},
        losses={s: data.losses(run, s) for s in ("test", "validation") if s in preds},
        history_keys=sorted((run.metrics.history or {}).keys()))


# -- the index ------------------------------------------------------------------------------


def _index_figure(reports: Path, stem: str, content: Any, draw: Any, force: bool = False
                  ) -> str | None:
    """An index figure named by a digest of what it shows: drawn only when that changed
    (or with ``force``)."""
    name = f"{stem}-{json_sha256([FIGURES_VERSION, content])[:12]}.png"
    path = reports / FIGURES / name
    if path.is_file() and not force:
        os.utime(path)  # in use: keep it from being pruned
        return name
    return draw(path)


def _prune(folder: Path, keep: Iterable[str]) -> None:
    """Remove index figures no page uses any more (only old ones: a concurrent writer's new
    figure may not be referenced yet)."""
    keep = set(keep)
    now = time.time()
    for p in folder.glob("*.png") if folder.is_dir() else []:
        if p.name not in keep and now - p.stat().st_mtime > _STALE_FIGURE_SECONDS:
            p.unlink(missing_ok=True)


def _datasets(reports: Path, rows: Sequence[dict[str, Any]], runs: dict[str, Run],
              force: bool = False) -> list[dict[str, Any]]:
    """Per dataset: its rows, comparison chart and sweep curves."""
    out = []
    for ds in sorted({str(r.get("dataset")) for r in rows}):
        ds_rows = [r for r in rows if str(r.get("dataset")) == ds]
        metric = next((runs[r["run_id"]].record.selection.metric for r in ds_rows
                       if runs[r["run_id"]].record.selection.metric in METRIC_NAMES),
                      "balanced_accuracy")
        points = [{**{k: r.get(k) for k in ("config", "base", "head", f"val_{metric}",
                                            f"test_{metric}")},
                   "test_ci": r["test_cis"].get(metric)} for r in ds_rows]
        sweeps = [s for r in ds_rows if (s := data.sweep_points(runs[r["run_id"]]))]
        slug = "".join(c if c.isalnum() else "_" for c in ds)
        out.append({
            "name": ds, "metric": metric, "rows": ds_rows,
            "comparison": _index_figure(
                reports, f"comparison-{slug}", points,
                lambda p, pts=points, m=metric: figures.comparison_figure(pts, m, p), force),
            "sweeps": _index_figure(
                reports, f"sweeps-{slug}", sweeps,
                lambda p, sw=sweeps: figures.sweep_figure(sw, p), force)})
    return out


def _caches(runs: Iterable[Run], cache_dir: str | os.PathLike | None) -> list[dict[str, Any]]:
    seen: dict[str, dict[str, Any]] = {}
    for run in runs:
        key = run.record.cache.key or run.run_id
        if key not in seen:
            seen[key] = data.cache_summary(run, data.cache_info(run, cache_dir))
    return sorted(seen.values(), key=lambda c: (str(c["dataset"]), str(c["base"])))


def write_index(reports: Path, runs: dict[str, Run], rows: list[dict[str, Any]],
                cache_dir: str | os.PathLike | None = None, force: bool = False) -> Path:
    """``<reports>/index.html``: caches, comparison, sweeps and the sortable leaderboard."""
    for r in rows:
        run = runs[r["run_id"]]
        r["test_cis"] = _test_ci(run)
        r["test_ci"] = r["test_cis"].get("balanced_accuracy")  # the table's test column
        r["page"] = f"{Path(r['run_dir']).name}/{RUN_PAGE}"
        r["short_id"] = data.short_id(r["run_id"])
    datasets = _datasets(reports, rows, runs, force)
    _prune(reports / FIGURES, [f for d in datasets for f in (d["comparison"], d["sweeps"]) if f])
    return _render("index.html", reports / HTML_NAME, datasets=datasets, rows=rows,
                   caches=_caches(runs.values(), cache_dir), reports=reports)


def write_pages(reports: str | os.PathLike, *, only: Path | None = None, force: bool = False,
                cache_dir: str | os.PathLike | None = None) -> Path:
    """Write the index and the run pages under ``reports`` (``only``: that run's page alone,
    with the index); returns the index."""
    reports = Path(reports)
    rows = all_rows(reports)
    runs = {r["run_id"]: data.load_run(r["run_dir"], r) for r in rows}
    for run_dir in sorted(p.parent for p in reports.glob(f"*/{CONFIG}")):
        if only is not None and run_dir.resolve() != only.resolve():
            continue
        run = runs.get(run_dir.name)
        if run is None and (run_dir / METRICS).is_file():
            try:  # a repeat, or a run the leaderboard leaves out
                run = data.load_run(run_dir)
            except PipelineError:
                continue  # unreadable: the leaderboard skips it too
        if run is not None and run.record.head.kind:
            write_run_page(run, force=force)
    return write_index(reports, runs, rows, cache_dir, force)
