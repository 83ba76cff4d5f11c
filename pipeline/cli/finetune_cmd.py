"""`pipeline finetune`, `pipeline predict`, `pipeline export` (stage 3)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli.app import app, emit_json, quiet_tensorflow, table_console
from pipeline.context import Context
from pipeline.finetune.augment import parse_augment
from pipeline.finetune.options import FinetuneOptions

ReportsOpt = Annotated[Path | None, typer.Option(
    "--reports-dir", help="Run folders (default: $PIPELINE_REPORTS_DIR or ./reports).",
    show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]
RUN_HELP = ("A run id from the leaderboard (or a unique prefix of one), a row number of "
            "`pipeline runs` (#3), 'best' (the top of the leaderboard by validation metric), "
            "or a run folder path.")


def _opt(name: str, *flags: str, show_default: str | None = None) -> typer.models.OptionInfo:
    """A ``pipeline finetune`` flag whose help and shown default come from FinetuneOptions; its
    value stays None when not given, so the experiment's [finetune] table can fill it."""
    default = FinetuneOptions.default(name)
    shown = f"{default:g}".replace("e-0", "e-") if isinstance(default, float) else str(default)
    return typer.Option(*flags, help=FinetuneOptions.help(name),
                        show_default=show_default or shown)


@app.command()
def finetune(
    run: Annotated[str, typer.Argument(
        help=RUN_HELP + " Must be a head run of a kind that can be fine-tuned (see "
        "`pipeline heads`); 'best' picks "
        "the best such head run and says which better runs it skipped.")] = "best",
    epochs: Annotated[int | None, _opt("epochs")] = None,
    learning_rate: Annotated[str | None, _opt("learning_rate", "--learning-rate",
                                              "--lr")] = None,
    optimizer: Annotated[str | None, _opt("optimizer")] = None,
    metric: Annotated[str | None, _opt("metric")] = None,
    schedule: Annotated[str | None, _opt("schedule")] = None,
    warmup: Annotated[float | None, _opt("warmup")] = None,
    weight_decay: Annotated[float | None, _opt("weight_decay", "--weight-decay")] = None,
    label_smoothing: Annotated[float | None, _opt("label_smoothing",
                                                  "--label-smoothing")] = None,
    cached: Annotated[str | None, _opt("cached")] = None,
    find_lr: Annotated[bool, typer.Option(
        "--find-lr", help="Only run the learning-rate range test: plot lr_find.png in the "
        "head run's folder and print a suggested rate (use it with --lr auto).")] = False,
    unfreeze_from: Annotated[str | None, _opt("unfreeze_from", "--unfreeze-from")] = None,
    augment: Annotated[str | None, _opt(
        "augment", show_default=parse_augment(FinetuneOptions.default("augment")).describe()
    )] = None,
    batch_size: Annotated[int | None, _opt("batch_size")] = None,
    patience: Annotated[int | None, _opt("patience")] = None,
    class_weight: Annotated[str | None, _opt(
        "class_weight", show_default="the head's setting")] = None,
    seed: Annotated[int | None, _opt("seed")] = None,
    fresh: Annotated[bool, typer.Option(
        "--fresh", help="Start a new run folder even if an unfinished run with the same "
        "settings could be resumed.")] = False,
    reports_dir: ReportsOpt = None,
    cache_dir: Annotated[Path | None, typer.Option(
        "--cache-dir", help="Where to look for the head run's feature cache when it is no "
        "longer at its recorded path (default: $PIPELINE_CACHE_DIR or ./cache).",
        show_default=False)] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Fine-tune base + head end to end, starting from a fitted head run.

    Rebuilds the base exactly as the run's cache was extracted (weights, layer cut, pooling,
    input size), puts the head on top (a logreg/linear_svm head is folded with its scaler into
    an equivalent Dense layer), checks every image against the cache's hashes, and trains on
    the cache's own train/validation/test split. Augmentation runs only in training. Each
    finished epoch is backed up in the run folder: run the same command again after an
    interruption and it resumes from the last finished epoch. The test split is evaluated
    once, with the kept weights; the run joins the leaderboard (`pipeline runs`). Options not
    given come from the \\[finetune] table of the experiment that made the head run, if any,
    else from the defaults shown. Example:

        pipeline finetune best --epochs 8 --lr 1e-4 --unfreeze-from 0.3
        pipeline finetune best --find-lr        (then --lr auto uses its suggestion)
    """
    given = {k: v for k, v in locals().items() if k in FinetuneOptions.names()}
    _finetune(run, given, find_lr=find_lr, resume=not fresh, as_json=as_json,
              ctx=Context.create(reports_dir=reports_dir, cache_dir=cache_dir,
                                 quiet=quiet or as_json))


def _finetune(run: str, given: dict, *, find_lr: bool, resume: bool, as_json: bool,
              ctx: Context) -> None:
    """Fine-tune, or with ``find_lr`` only run the LR finder and print its suggestion."""
    quiet_tensorflow()  # before the stage's modules: they import TensorFlow
    from pipeline.finetune import find_learning_rate
    from pipeline.finetune import finetune as run_finetune
    from pipeline.finetune.options import parse_learning_rate

    if given.get("learning_rate") is not None:
        given["learning_rate"] = parse_learning_rate(given["learning_rate"])
    if find_lr:
        found = find_learning_rate(run, ctx=ctx, **given)
        if as_json:
            emit_json({"suggestion": found.suggestion, "plot": str(found.plot)})
        else:
            typer.echo(f"suggested learning rate: {found.suggestion:.3g} (plot: {found.plot})")
        return
    result = run_finetune(run, ctx=ctx, resume=resume, **given)
    if as_json:
        emit_json({"run_id": result.run_id, "run_dir": str(result.run_dir),
                   "source_run": result.source_run, "validation": result.validation,
                   "test": result.test, "best_epoch": result.best_epoch,
                   "epochs_run": result.epochs_run, "seconds": result.seconds})


@app.command()
def predict(
    model: Annotated[str, typer.Argument(
        help=RUN_HELP + " Head runs of every kind and fine-tuned runs alike; or a MODEL.keras "
        "or MODEL.onnx file from `pipeline export`.")],
    images: Annotated[list[Path], typer.Argument(
        help="Image files and/or folders (searched recursively for image files).")],
    as_json: Annotated[bool, typer.Option("--json", help="JSON list on stdout.")] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="CSV on stdout: path, label, "
                                         "probability, one column per class, error.")] = False,
    batch_size: Annotated[int, typer.Option(help="Images per forward pass.")] = 32,
    reports_dir: ReportsOpt = None,
) -> None:
    """Label images with a run's model: the label and its probability per image.

    A head run rebuilds its extractor exactly as its cache was made and applies the fitted
    head; nothing in the run folder is executed (see the trust model in the README). Images
    are decoded and resized exactly as during extraction. Files that cannot be
    decoded are listed with the reason and get no label (exit status 1 if any). Example:

        pipeline predict best new_cells/ --csv > predictions.csv
    """
    from pipeline.errors import UsageError

    if as_json and as_csv:
        raise UsageError("--json and --csv are exclusive; choose one")
    quiet_tensorflow()
    from pipeline.finetune.predict import collect_images, load_classifier, predict_images

    paths = collect_images(images)
    clf = load_classifier(model, reports_dir)
    results = predict_images(clf, paths, batch_size=batch_size)
    if as_json:
        typer.echo(json.dumps([r.as_dict() for r in results], indent=2))
    elif as_csv:
        typer.echo(_predictions_csv(results, clf.class_names), nl=False)
    else:
        from rich.table import Table

        table = Table(title=f"predictions of {clf.source}")
        for col in ("image", "label", "probability"):
            table.add_column(col)
        for r in results:
            if r.error:
                table.add_row(r.path, "[red]undecodable[/red]", r.error)
            else:
                table.add_row(r.path, str(r.label), f"{r.probability:.4f}")
        table_console().print(table)
    bad = [r for r in results if r.error]
    if bad:
        typer.echo(f"{len(bad)} of {len(results)} file(s) could not be decoded and got no "
                   "label", err=True)
        raise typer.Exit(1)


def _predictions_csv(results: list, class_names: list[str]) -> str:
    """path, label, probability, one column per class, error."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["path", "label", "probability", *class_names, "error"])
    for r in results:
        probs = r.probabilities or {}
        w.writerow([r.path, r.label or "", "" if r.probability is None else
                    f"{r.probability:.6f}",
                    *(f"{probs[c]:.6f}" if c in probs else "" for c in class_names),
                    r.error or ""])
    return buf.getvalue()


@app.command("export")
def export_cmd(
    run: Annotated[str, typer.Argument(help=RUN_HELP)] = "best",
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", help="Where to write the model (ending in .keras or .onnx, as "
        "--format).", show_default="<run folder>/exported.<format>")] = None,
    fmt: Annotated[str, typer.Option(
        "--format", "-f", help="keras: a .keras model (heads Keras layers express exactly: "
        "dense, dense_mlp, logreg, linear_svm, mlp, rbf_svm, knn; and fine-tuned runs). "
        "onnx: an ONNX model, every head kind (needs pip install 'pipeline[onnx]').")
    ] = "keras",
    reports_dir: ReportsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Export a run as one self-contained model for raw images (.keras or ONNX).

    The model takes uint8 RGB images of any size, shape (batch, height, width, 3), resizes
    them bilinearly inside (as extraction did) and returns class probabilities. A .keras file
    loads with plain keras.models.load_model(path), MODEL.keras.json beside it listing the
    class names in output order; an .onnx file runs in plain onnxruntime (input "image",
    output "probabilities"), class names in its metadata. Before anything is written the
    export is checked against the run's own predictions on the cache's validation split.
    Examples:

        pipeline export best --out elpv.keras
        pipeline export best --format onnx --out elpv.onnx
    """
    quiet_tensorflow()
    from pipeline.finetune.export import export

    result = export(run, out, fmt=fmt, reports_dir=reports_dir)
    if as_json:
        emit_json({"path": str(result.path), "metadata_path": result.metadata_path,
                   "metadata": result.metadata, "check": result.check})
        return
    where = f"; metadata {result.metadata_path}" if result.metadata_path else ""
    typer.echo(f"exported run {result.metadata['source_run']} to {result.path} (classes: "
               f"{', '.join(result.metadata['class_names'])}{where})")
