"""`pipeline fit-head`, `pipeline heads`, `pipeline runs`, `pipeline run`.

Thin: options are parsed here (defaults and help of fit-head from
:class:`pipeline.heads.FitOptions`); the work is done by :func:`pipeline.runs.fit_heads`,
:func:`pipeline.runs.leaderboard` and :func:`pipeline.experiment.run_experiment`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperCommand

from pipeline.cli.app import app, emit_json, quiet_tensorflow, table_console
from pipeline.cli.args import split_list, usage_errors
from pipeline.errors import UsageError
from pipeline.heads.options import FitOptions

_TOKENS_KEY = "pipeline.head_tokens"


class _OrderedHeadArgs(TyperCommand):
    """Keeps the command-line order of --head/--param, which typer's lists would lose.

    Each ``--param`` belongs to the ``--head`` before it, so the ordered tokens are recorded
    in ``ctx.meta`` before the normal parsing.
    """

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        args = _old_class_weight_flags(args)
        tokens: list[tuple[str, str]] = []
        i = 0
        while i < len(args):
            a = args[i]
            if a == "--":
                break
            for opt in ("head", "param"):
                if a == f"--{opt}" and i + 1 < len(args):
                    tokens.append((opt, args[i + 1]))
                    i += 1
                elif a.startswith(f"--{opt}="):
                    tokens.append((opt, a.split("=", 1)[1]))
            i += 1
        ctx.meta[_TOKENS_KEY] = head_tokens(tokens)
        return super().parse_args(ctx, args)


def _old_class_weight_flags(args: list[str]) -> list[str]:
    """The old on/off spelling of fit-head's class weights (``--class-weight`` alone,
    ``--no-class-weight``) as ``--class-weight balanced|none``, with a warning."""
    out: list[str] = []
    for i, a in enumerate(args):
        if a == "--":
            return out + args[i:]
        nxt = args[i + 1] if i + 1 < len(args) else None
        bare = a == "--class-weight" and (nxt is None or nxt.startswith("-"))
        if a == "--no-class-weight" or bare:
            new = "none" if a.startswith("--no-") else "balanced"
            typer.secho(f"warning: {a} is deprecated; use --class-weight {new}",
                        fg="yellow", err=True)
            out += ["--class-weight", new]
        else:
            out.append(a)
    return out


def head_tokens(tokens: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The ordered ``--head``/``--param`` tokens with lists spelled either way: ``--head
    a,b`` is ``--head a --head b`` (the ``--param`` values after it apply to each), and
    ``--param C=1 --param C=10`` under one head is ``--param C=1,10``."""
    groups: list[tuple[list[str], dict[str, list[str]]]] = []
    loose: list[tuple[str, str]] = []  # a --param before any --head: left for the error
    for what, value in tokens:
        if what == "head":
            groups.append((split_list([value]), {}))
        elif not groups:
            loose.append((what, value))
        else:
            name, _, values = value.partition("=")
            groups[-1][1].setdefault(name.strip(), []).append(values)
    out = list(loose)
    for kinds, params in groups:
        for kind in kinds:
            out.append(("head", kind))
            out += [("param", f"{name}={','.join(vals)}") for name, vals in params.items()]
    return out


def _console() -> Console:
    return table_console()


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


JsonOpt = typer.Option(False, "--json", help="Print the result as JSON on stdout.")


@app.command("heads")
def heads_list(as_json: bool = JsonOpt) -> None:
    """List the head kinds and their parameters (names, types, defaults).

    Use them with `pipeline fit-head CACHE --head KIND --param NAME=V1,V2`.
    """
    from pipeline.heads import list_heads
    from pipeline.heads.params import format_value

    if as_json:
        emit_json([{"kind": s.kind, "library": s.family, "what": s.summary,
                    "export_formats": list(s.export_formats), "finetunable": s.finetunable,
                    "scaling": s.scaling, "memory": s.memory,
                    "parameters": [{"name": p.name, "default": format_value(p.default),
                                    "expected": p.expected} for p in s.params]}
                   for s in list_heads()])
        return
    table = Table(title="head kinds", show_lines=True)
    for col in ("kind", "library", "what", "can", "parameters (default)"):
        table.add_column(col)
    for spec in list_heads():
        params = "\n".join(f"{p.name}={format_value(p.default)}  [dim]{p.expected}[/]"
                           for p in spec.params)
        table.add_row(spec.kind, spec.family, spec.summary, _capabilities(spec), params)
    _console().print(table)


def _capabilities(spec: Any) -> str:
    """What a kind can do, as declared on its spec: export formats, fine-tuning, scaling."""
    lines = [f"export: {', '.join(spec.export_formats) or '-'}",
             "fine-tune: " + ("yes" if spec.finetunable else "no"),
             f"cost: {spec.scaling} in rows",
             "memory: " + ("out of core past --max-memory" if spec.memory == "chunks"
                           else "every row")]
    return "\n".join(lines)


FIT_HEAD_HELP = (
    "Fit heads on feature caches; choose on validation, test the chosen once.\n\n"
    "Every combination of the --param values of a --head is one configuration. Each is "
    "fitted on the train split and scored on the validation split; per head kind the best "
    "validation METRIC wins, and only the winners are evaluated on the test split. Each "
    "winner becomes a run folder under the reports dir (config.json, metrics.json, the fitted "
    "head, plots), and the leaderboard (`pipeline runs`, reports/index.html) is refreshed.\n\n"
    "Default sweep (no --head): 11 configurations of logreg, linear_svm, rbf_svm, knn, "
    "random_forest and dense.\n\n"
    "Example (2 + 4 configurations):\n\n"
    "pipeline fit-head cache/*.h5 --head logreg --param C=0.01,0.1,1 "
    "--head rbf_svm --param C=1,10 --param gamma=scale,0.001\n\n"
    "`pipeline heads` lists every kind and its parameters."
)


@app.command("fit-head", cls=_OrderedHeadArgs, help=FIT_HEAD_HELP)
def fit_head(
    ctx: typer.Context,
    caches: list[Path] = typer.Argument(..., help="Feature caches (.h5) from `pipeline "
                                        "extract`, folders of them, or names in the cache "
                                        "folder (file name or unique prefix, as in `pipeline "
                                        "cache info`). Several caches (e.g. two bases) are "
                                        "compared in one leaderboard."),
    head: list[str] = typer.Option(None, "--head", metavar="KIND",
                                   help="Head kind to fit (repeatable, or a,b). None: the "
                                   "default sweep of 11 configurations."),
    param: list[str] = typer.Option(None, "--param", metavar="NAME=V1,V2,...",
                                    help="Values to try for a parameter of the preceding "
                                    "--head (repeatable; C=0.1 --param C=1 is C=0.1,1). "
                                    "Typed: C=0.1,1  max_depth=none,8  "
                                    "hidden_layer_sizes=256,256x128."),
    metric: str = typer.Option(FitOptions.default("metric"), help=FitOptions.help("metric")),
    refit: bool = typer.Option(FitOptions.default("refit"), "--refit/--no-refit",
                               help=FitOptions.help("refit")),
    class_weight: str = typer.Option(FitOptions.default("class_weight"), "--class-weight",
                                     metavar="balanced|none",
                                     help=FitOptions.help("class_weight")),
    jobs: int = typer.Option(FitOptions.default("jobs"), "--jobs", "-j",
                             help=FitOptions.help("jobs")),
    seed: int = typer.Option(FitOptions.default("seed"), help=FitOptions.help("seed")),
    cv: str = typer.Option(str(FitOptions.default("cv")), "--cv", metavar="auto|0|K",
                           help=FitOptions.help("cv")),
    max_memory: str = typer.Option(FitOptions.default("max_memory"), "--max-memory",
                                   metavar="SIZE", help=FitOptions.help("max_memory")),
    reports_dir: Path = typer.Option(None, "--reports-dir", help="Where run folders go "
                                     "(default: $PIPELINE_REPORTS_DIR or ./reports)."),
    cache_dir: Path = typer.Option(None, "--cache-dir", help="Where cache names are looked "
                                   "up (default: $PIPELINE_CACHE_DIR or ./cache)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    as_json: bool = typer.Option(False, "--json", help="Print the chosen runs as JSON rows "
                                 "(the columns of `pipeline runs --json`) and the failed "
                                 "configurations."),
) -> None:
    from pipeline.heads import parse_head_args
    from pipeline.runs import fit_heads

    tokens = ctx.meta.get(_TOKENS_KEY)
    if tokens is None:  # invoked without our parser (should not happen)
        tokens = [("head", h) for h in split_list(head)]
    if param and not head:
        raise UsageError("--param must follow the --head it applies to")
    with usage_errors():
        grids = parse_head_args(tokens) if head else None
        options = FitOptions(metric=metric, refit=refit, class_weight=class_weight, jobs=jobs,
                             seed=seed, cv=cv, max_memory=max_memory)
    if _runs_keras(grids):
        quiet_tensorflow()
    result = fit_heads(caches, grids, metric=options.metric, refit=options.refit,
                       class_weight=options.class_weight, jobs=options.jobs,
                       seed=options.seed, cv=options.cv, max_memory=options.max_memory,
                       reports_dir=reports_dir,
                       cache_dir=cache_dir, quiet=quiet or as_json)
    if as_json:
        emit_json(sweep_json(result))
        return
    _print_sweep(result)


def _runs_keras(grids: list[Any] | None) -> bool:
    """Whether a sweep fits a Keras head (the default sweep does); an all-scikit-learn sweep
    never imports TensorFlow."""
    from pipeline.heads import DEFAULT_SWEEP, get_head_spec

    kinds = [g.kind for g in grids] if grids is not None else [k for k, _ in DEFAULT_SWEEP]
    return any(get_head_spec(k).family == "keras" for k in kinds)


#: fit-head's table: columns of the leaderboard (same names as `pipeline runs`, the CSV and
#: the HTML page); ``{m}`` is the selection metric.
SWEEP_COLUMNS = ("best_overall", "dataset", "base", "layer", "input_size", "pooling", "config",
                 "val_{m}", "test_{m}", "test_accuracy", "test_roc_auc", "fit_seconds",
                 "run_id")


def _sweep_rows(result: Any) -> list[dict[str, Any]]:
    """The leaderboard rows of a sweep's chosen runs (best overall first per dataset)."""
    from pipeline.runs.leaderboard import all_rows

    if result.reports_dir is None:
        return []
    ids = {r.run_id for r in result.runs}
    rows = [r for r in all_rows(result.reports_dir) if r["run_id"] in ids]
    return sorted(rows, key=lambda r: (r["dataset"], not r.get("best_overall")))


def sweep_json(result: Any) -> dict[str, Any]:
    """A sweep as JSON: its chosen runs as leaderboard rows and its failed configurations."""
    return {"metric": result.metric, "refit": result.refit,
            "reports_dir": str(result.reports_dir) if result.reports_dir else None,
            "runs": _sweep_rows(result),
            "failed": [{"config": c.config.label, "error": c.error}
                       for c in result.candidates if c.error]}


def _print_sweep(result: Any) -> None:
    console = _console()
    m = result.metric
    table = Table(title=f"chosen per head kind (by validation {m}; test evaluated once"
                  f"{', after refit on train+validation' if result.refit else ''})")
    cols = [c.format(m=m) for c in SWEEP_COLUMNS]
    rows = _sweep_rows(result)
    for col in cols:
        table.add_column(_header(col), justify="right" if col in _NUMERIC or col.startswith(
            ("val_", "test_", "fit")) else "left",
            min_width=_id_width(rows) if col == "run_id" else None)
    for r in rows:
        best = r.get("best_overall")
        table.add_row(*(("*" if best else "") if c == "best_overall" else
                        _fmt(r.get(c), 1 if c == "fit_seconds" else 3) for c in cols),
                      style="bold green" if best else None)
    console.print(table)
    for c in result.candidates:
        if c.error:
            console.print(f"[yellow]failed:[/] {c.config.label}: {c.error}")
    if result.reports_dir is not None:
        console.print(f"reports: {result.reports_dir}  (leaderboard: `pipeline runs`, "
                      f"{result.reports_dir / 'index.html'})")


def _print_leaderboard(rows: list[dict[str, Any]], metric_col: str, limit: int | None,
                       title: str | None = None) -> None:
    from pipeline.runs.leaderboard import SHOWN

    console = _console()
    cols = list(SHOWN)
    if metric_col not in cols:
        cols.insert(cols.index("val_balanced_accuracy"), metric_col)
    table = Table(title=title or f"{len(rows)} runs, sorted by {metric_col}")
    rows = rows[:limit] if limit else rows
    # A column no row has a value in tells nothing here (the CSV and --json keep it).
    cols = [c for c in cols if c == metric_col or any(r.get(c) is not None for r in rows)]
    for c in cols:
        table.add_column(_header(c), overflow="fold", justify="right" if c in _NUMERIC or
                         c.startswith(("val_", "test_", "fit")) else "left",
                         min_width=_id_width(rows) if c == "run_id" else None)
    for r in rows:
        table.add_row(*(_fmt(r.get(c)) for c in cols),
                      style="bold green" if r.get("best_overall") else None)
    console.print(table)


_NUMERIC = ("#", "input_size", "repeats")


def _header(name: str, width: int = 14) -> str:
    """A column name as a header: long names break after an underscore (same name, narrower
    column)."""
    lines = [""]
    for part in name.replace("_", "_ ").split(" "):
        if lines[-1] and len(lines[-1]) + len(part) > width:
            lines.append("")
        lines[-1] += part
    return "\n".join(lines)


def _id_width(rows: list[Any]) -> int:
    """Room for the longest run id (ids are copied from the table; never fold them)."""
    return max((len(str(r["run_id"] if isinstance(r, dict) else r.run_id)) for r in rows),
               default=6)
REPORTS_HELP = "Reports folder (default: $PIPELINE_REPORTS_DIR or ./reports)."
runs_app = typer.Typer(invoke_without_command=True, no_args_is_help=False)
app.add_typer(runs_app, name="runs")


@runs_app.callback(invoke_without_command=True)
def runs(
    ctx: typer.Context,
    dataset: list[str] = typer.Option(None, help="Only runs on these datasets (e.g. elpv; "
                                      "repeat or a,b)."),
    base: list[str] = typer.Option(None, help="Only runs on features of these bases (repeat "
                                   "or a,b)."),
    head: list[str] = typer.Option(None, help="Only runs of these head kinds (repeat or a,b)."),
    sort: str = typer.Option(None, help="Sort by a metric (validation value: balanced_accuracy"
                             ", accuracy, f1_macro, roc_auc, log_loss), a val_/test_ column "
                             "(e.g. test_accuracy) or a column such as fit_seconds "
                             "(default: val_balanced_accuracy)."),
    as_json: bool = typer.Option(False, "--json", help="Print the rows as JSON."),
    limit: int = typer.Option(None, help="Show at most this many rows."),
    reports_dir: Path = typer.Option(None, "--reports-dir", help=REPORTS_HELP),
) -> None:
    """The leaderboard of every run in the reports folder (best first); `pipeline runs rm RUN...`
    deletes runs.

    Reads only (works on a read-only folder). The # column numbers the runs in the default
    order (validation, best first) and is kept under filters and other sorts: `#3` (or `3`)
    names that run wherever a RUN is accepted (predict, export, finetune, runs rm). Runs of an
    identical configuration show as one row (the newest) with their count in `repeats`.
    Green rows are the overall best of their sweep. Rank on validation: the test columns are
    the honest final numbers, choosing by them would leak the test set into selection.
    """
    from pipeline.runs.leaderboard import CSV_NAME, HTML_NAME, leaderboard, sort_column, to_json
    from pipeline.settings import reports_dir as default_reports

    if ctx.invoked_subcommand is not None:
        return
    reports = default_reports(reports_dir)
    with usage_errors():
        sort_column(sort)
    wanted = {"dataset": split_list(dataset), "base": split_list(base),
              "head": split_list(head)}
    rows = [r for r in leaderboard(reports, sort=sort)
            if all(not v or r.get(k) in v for k, v in wanted.items())]
    if as_json:
        typer.echo(to_json(rows[:limit] if limit else rows))
        return
    if not rows:
        _console().print(f"no runs in {reports}" + (" match the filters" if any(
            wanted.values()) else "; `pipeline fit-head CACHE` makes some"))
        return
    _print_leaderboard(rows, sort_column(sort), limit)
    files = [reports / n for n in (CSV_NAME, HTML_NAME) if (reports / n).is_file()]
    if files:
        _console().print("  ".join(str(f) for f in files))


@runs_app.command("rm")
def runs_rm(
    runs: list[str] = typer.Argument(..., metavar="RUN...", help="Run ids, unique prefixes, "
                                     "row numbers (#3) or run folders under the reports dir."),
    reports_dir: Path = typer.Option(None, "--reports-dir", help=REPORTS_HELP),
    as_json: bool = JsonOpt,
) -> None:
    """Delete run folders, then refresh leaderboard.csv and index.html.

    Every RUN is resolved first: if one is not a run folder under the reports dir, nothing is
    deleted. Example: pipeline runs rm '#3' 20261125-2229
    """
    from pipeline.runs.leaderboard import remove_runs

    removed = remove_runs(runs, reports_dir)
    if as_json:
        emit_json({"removed": list(removed)})
        return
    for run_id in removed:
        typer.echo(f"removed {run_id}")


@app.command("run")
def run(
    config: Path = typer.Argument(None, help="Experiment TOML file. Omitted: the embedded "
                                  "default (ELPV, efficientnet_lite0, default sweep)."),
    reports_dir: Path = typer.Option(None, "--reports-dir", help="Reports folder "
                                     "(default: $PIPELINE_REPORTS_DIR or ./reports)."),
    cache_dir: Path = typer.Option(None, "--cache-dir", help="Feature cache folder "
                                   "(default: $PIPELINE_CACHE_DIR or ./cache)."),
    jobs: int = typer.Option(None, "--jobs", "-j", help="Parallel head workers."),
    max_memory: str = typer.Option(None, "--max-memory", metavar="SIZE",
                                   help=FitOptions.help("max_memory") + " Overrides [fit] "
                                   "max_memory."),
    print_default: bool = typer.Option(False, "--print-default", help="Print the default "
                                       "experiment file (a template) and exit."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output."),
    as_json: bool = typer.Option(False, "--json", help="Print the chosen runs as JSON rows "
                                 "(as `fit-head --json`)."),
) -> None:
    """Run a whole experiment: extract features (cached), fit and compare heads, report.

    The TOML file names the data, the bases, extraction options, head grids and an optional
    \\[finetune] table (stored with the runs). Start from the default:

      pipeline run --print-default > experiment.toml
    """
    from pipeline.experiment import DEFAULT_EXPERIMENT_TOML, load_experiment, run_experiment
    from pipeline.runs.leaderboard import leaderboard

    if print_default:
        typer.echo(DEFAULT_EXPERIMENT_TOML, nl=False)
        return
    with usage_errors():  # a bad experiment file or option is found before any work
        experiment = load_experiment(config)
        experiment.fit.replace(max_memory=max_memory)
    quiet_tensorflow()  # an experiment extracts (and its default sweep fits a dense head)
    result = run_experiment(experiment, reports_dir=reports_dir, cache_dir=cache_dir,
                            jobs=jobs, max_memory=max_memory, quiet=quiet or as_json)
    if as_json:
        emit_json(dict(sweep_json(result.sweep), best_run_dir=str(result.sweep.best.run_dir)))
        return
    _print_sweep(result.sweep)
    datasets = {r.dataset for r in result.sweep.runs}
    rows = [r for r in leaderboard(result.reports_dir) if r["dataset"] in datasets]
    _print_leaderboard(rows, "val_balanced_accuracy", 15)
    best = result.sweep.best
    _console().print(f"best: {best.config.label} on {best.base} -> {best.run_dir}\n"
                     f"report: {result.reports_dir / 'index.html'}")
