"""`pipeline report [RUN]` and `pipeline interpret RUN`: the HTML report and its per-class
reading in the terminal (thin over :func:`pipeline.report.write_report` and
:func:`pipeline.report.interpret`).

Importing this module imports :mod:`pipeline.report`, which hooks the report into every
leaderboard refresh: commands that add or remove runs rewrite ``index.html`` too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

import pipeline.report  # noqa: F401  (adds the report to every leaderboard refresh)
from pipeline.cli.app import app, table_console

RUN_HELP = "A run: best, #N from `pipeline runs`, a run id or unique prefix, or a run folder."
REPORTS_HELP = "Reports folder (default $PIPELINE_REPORTS_DIR or ./reports)."
CACHE_HELP = "Folder of the feature caches (default $PIPELINE_CACHE_DIR or ./cache)."


@app.command("report")
def report(
    run: str = typer.Argument(None, metavar="[RUN]", help=RUN_HELP + " Default: every run."),
    reports_dir: Path = typer.Option(None, "--reports-dir", help=REPORTS_HELP),
    cache_dir: Path = typer.Option(None, "--cache-dir", help=CACHE_HELP),
) -> None:
    """Regenerate the HTML report: reports/index.html and each run's report.html.

    The index summarises each dataset and cache, compares the runs (validation and test,
    with bootstrap intervals) and draws each head kind's sweep; a run's page has its
    confusion matrices, per-class table, ROC/PR/reliability curves, most confused pairs,
    top-losses images and learning curves. Example: pipeline report '#1'
    """
    from pipeline.report import write_report

    page = write_report(reports_dir, run, cache_dir=cache_dir)
    typer.echo(str(page))


def _print_split(split: str, classes: list[dict[str, Any]], pairs: list[dict[str, Any]]
                 ) -> None:
    from rich.table import Table

    console = table_console()
    table = Table(title=f"{split}: per class")
    for col in ("class", "precision", "recall", "f1", "support"):
        table.add_column(col, justify="left" if col == "class" else "right")
    for c in classes:
        table.add_row(c["class"], f"{c['precision']:.3f}", f"{c['recall']:.3f}",
                      f"{c['f1']:.3f}", str(c["support"]))
    console.print(table)
    if not pairs:
        console.print(f"{split}: no misclassified rows")
        return
    table = Table(title=f"{split}: most confused pairs")
    for col in ("true", "predicted", "count", "share"):
        table.add_column(col, justify="right" if col in ("count", "share") else "left")
    for p in pairs:
        table.add_row(p["true"], p["predicted"], str(p["count"]), f"{100 * p['share']:.1f}%")
    console.print(table)


@app.command("interpret")
def interpret(
    run: str = typer.Argument(..., metavar="RUN", help=RUN_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    reports_dir: Path = typer.Option(None, "--reports-dir", help=REPORTS_HELP),
) -> None:
    """Per-class precision, recall and F1, and the most confused class pairs, of a run's
    validation and test predictions. Example: pipeline interpret best"""
    from pipeline.report import interpret as read

    out = read(run, reports_dir)
    if as_json:
        typer.echo(json.dumps(out, indent=2))
        return
    table_console().print(f"{out['run_id']}  ({out['head']})")
    for split, classes in out["per_class"].items():
        _print_split(split, classes, out["confused_pairs"][split])
