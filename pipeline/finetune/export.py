"""Export a run as one self-contained model for raw images: ``.keras`` or ONNX.

Both take a batch of uint8 RGB images of any size (``[N, H, W, 3]``), resize them bilinearly
to the base's input size inside the model (the ``tf.image.resize`` bilinear op the extraction
reader uses) and return class probabilities; neither needs this project to run.

* ``fmt="keras"``: preprocessing, base, pooling and the head as built-in Keras layers; loads
  with plain ``keras.models.load_model(path)``. For a head run, the head must be one layers
  express exactly (``"keras" in HeadSpec.export_formats``: the linear and dense kinds, the
  MLPs, ``rbf_svm`` and ``knn`` -- the latter refused past
  :data:`~pipeline.finetune.kernel_layers.KNN_MAX_ROWS_X_FEATURES`); the layers are checked
  against the fitted head on the cache's validation features before anything is written.
  Beside it, ``MODEL.keras.json`` records the class names (output column order), the input
  size and where the model came from; ``pipeline predict MODEL.keras`` reads it.
* ``fmt="onnx"``: every head kind (and fine-tuned runs), with
  :func:`~pipeline.finetune.onnx_export.export_onnx`; the class names travel inside. The file
  is run in ``onnxruntime`` on the cache's validation images and compared with this project's
  own prediction (:func:`~pipeline.finetune.onnx_export.check_onnx`); below the bar nothing
  is written.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import PipelineError
from pipeline.fileio import atomic_path, utc_timestamp, write_json
from pipeline.finetune.onnx_export import ATOL, MIN_AGREEMENT
from pipeline.finetune.predict import Classifier, load_classifier, metadata_path
from pipeline.finetune.source import RunRef, resolve_run
from pipeline.heads.spec import EXPORT_FORMATS

#: The file extension each export format must be written with.
SUFFIXES = {"keras": ".keras", "onnx": ".onnx"}


@dataclass
class Exported:
    """The written model, its side file (``.keras`` only) and what they hold."""

    path: Path
    metadata_path: Path | None
    metadata: dict[str, Any]
    check: dict[str, Any] = field(default_factory=dict)


def export(source: str | os.PathLike = "best", out: str | os.PathLike | None = None, *,
           fmt: str = "keras", reports_dir: str | os.PathLike | None = None) -> Exported:
    """Write the model of run ``source`` (``RUN_ID``, ``best`` or a run folder) as ``fmt``.

    ``out`` defaults to ``<run folder>/exported.<fmt>``; its extension must match ``fmt``.
    A head that cannot be exported in ``fmt`` is refused with one line naming the formats it
    can be exported in. Example::

        from pipeline.finetune import export
        exported = export("best", "model.keras")      # or fmt="onnx", "model.onnx"
        keras.models.load_model(exported.path)         # uint8 images in, probabilities out
    """
    if fmt not in EXPORT_FORMATS:
        raise PipelineError(f"--format {fmt!r}: expected one of {', '.join(EXPORT_FORMATS)}")
    if str(source).endswith((".keras", ".onnx")):
        raise PipelineError(f"{source}: export takes a run (id, 'best' or folder), not a model "
                            "file; a model file from export is already exported")
    run = resolve_run(source, reports_dir)
    suffix = SUFFIXES[fmt]
    path = Path(out).expanduser() if out is not None else run.run_dir / f"exported{suffix}"
    if path.suffix != suffix:
        raise PipelineError(f"--out {path}: a --format {fmt} model's file name must end in "
                            f"{suffix}")
    if not run.is_finetuned:
        _check_exportable(run, fmt)
    clf = load_classifier(run.run_dir, reports_dir)
    meta = _metadata(run, clf)
    if fmt == "keras":
        check = _write_keras(run, clf, path)
        side: Path | None = metadata_path(path)
        write_json(side, {**meta, "check": check})
    else:
        check = _write_onnx(run, clf, path, meta)
        side = None
    return Exported(path=path, metadata_path=side, metadata=meta, check=check)


def _check_exportable(run: RunRef, fmt: str) -> None:
    """One line for a head kind that cannot be exported in ``fmt``."""
    from pipeline.heads.registry import get_head_spec

    kind = str(run.record.head.kind)
    formats = get_head_spec(kind).export_formats
    if fmt not in formats:
        raise PipelineError(f"exporting run {run.run_id}: a {kind!r} head cannot be exported "
                            f"as {fmt}; it can be exported as: {', '.join(formats)} "
                            f"(--format {formats[0]})")


def _metadata(run: RunRef, clf: Classifier) -> dict[str, Any]:
    cache = run.record.cache
    return {
        "class_names": clf.class_names, "input_size": clf.input_size,
        "input": "uint8 RGB images of any size, shape (batch, height, width, 3)",
        "output": "class probabilities, columns in class_names order",
        "resize": "bilinear (tf.image.resize, no antialias), inside the model",
        "source_run": run.run_id, "finetuned": run.is_finetuned,
        "head": run.record.head.kind, "base": cache.base, "dataset": cache.dataset,
        "exported": utc_timestamp(),
    }


def _write_keras(run: RunRef, clf: Classifier, path: Path) -> dict[str, Any]:
    """The ``.keras`` export; a head run's layers checked on the cached validation features."""
    from pipeline.finetune.model import export_model, find_classifier, rebuild_classifier

    check: dict[str, Any] = {}
    if clf.head is None:  # a fine-tuned run: its own model, already layers
        classifier = find_classifier(clf.model)
    else:
        rebuilt = rebuild_classifier(run.record.cache, clf.head, "export")
        check = _check_layers(run, clf.head, rebuilt.folded)
        classifier = rebuilt.classifier
    model = export_model(classifier)
    with atomic_path(path, suffix=".keras") as tmp:  # Keras looks at the extension
        model.save(tmp)
    return check


def _agreement(expected: np.ndarray, got: np.ndarray) -> dict[str, Any]:
    """How closely ``got`` follows ``expected`` (probabilities), against the ONNX bar."""
    diff = np.abs(np.asarray(got, np.float64) - np.asarray(expected, np.float64)).max(axis=1)
    same = float(np.mean(expected.argmax(axis=1) == got.argmax(axis=1)))
    within = float(np.mean(diff <= ATOL))
    return {"rows": len(expected), "max_abs_diff": float(diff.max()),
            "same_class_fraction": same, "within_atol_fraction": within, "atol": ATOL,
            "ok": same >= MIN_AGREEMENT and within >= MIN_AGREEMENT}


def _check_layers(run: RunRef, loaded: Any, folded: Any) -> dict[str, Any]:
    """The folded layers against the fitted head on the cache's validation features."""
    import keras

    from pipeline.finetune.data import load_run_cache

    fs = load_run_cache(run.record.cache)
    x = np.asarray(fs.features[fs.mask("validation")], dtype=np.float32)
    if not len(x):
        raise PipelineError(f"exporting run {run.run_id}: its cache has no validation rows to "
                            "check the exported layers on")
    x = x.reshape(len(x), -1)
    inp = keras.Input((x.shape[1],))
    head_model = keras.Model(inp, keras.layers.Softmax()(folded(inp)))
    got = np.asarray(head_model.predict(x, batch_size=256, verbose=0))
    result = _agreement(loaded.predict_proba(x), got)
    if not result["ok"]:
        raise PipelineError(
            f"exporting run {run.run_id}: the {loaded.kind!r} head as Keras layers differs from "
            f"the fitted head on the cached validation features (max |diff| "
            f"{result['max_abs_diff']:.2g}, same class on {result['same_class_fraction']:.1%});"
            " nothing written")
    return result


def _validation_images(run: RunRef) -> list[np.ndarray]:
    """The cache's validation images, decoded (uint8, original sizes), checked unchanged."""
    from pipeline.data.decode import decode_file
    from pipeline.finetune.data import check_dataset, load_run_cache

    fs = load_run_cache(run.record.cache)
    rows = np.flatnonzero(fs.mask("validation"))
    if not len(rows):
        raise PipelineError(f"exporting run {run.run_id}: its cache has no validation images "
                            "to check the ONNX model on")
    paths = check_dataset(fs)
    return [decode_file(str(paths[i])) for i in rows]


def _project_proba(clf: Classifier, images: list[np.ndarray]) -> np.ndarray:
    """This project's own prediction (what ``pipeline predict`` gives) for decoded images."""
    from pipeline.data.reader import resize

    x = np.stack([resize(img, clf.input_size).numpy() for img in images])
    return clf.probabilities(x)


def _write_onnx(run: RunRef, clf: Classifier, path: Path,
                meta: dict[str, Any]) -> dict[str, Any]:
    """The ONNX export, checked in onnxruntime on the validation images before it is kept."""
    from pipeline.finetune.model import find_classifier
    from pipeline.finetune.onnx_export import check_onnx, export_onnx

    images = _validation_images(run)
    expected = _project_proba(clf, images)
    feature_model = find_classifier(clf.model) if clf.head is None else clf.model
    props = {k: v for k, v in meta.items() if k != "class_names"}
    with atomic_path(path, suffix=".onnx") as tmp:
        export_onnx(feature_model, clf.head, clf.class_names, tmp, metadata=props)
        check = check_onnx(tmp, images, expected)
        if not check["ok"]:
            rows = ", ".join(str(r["row"]) for r in check["off_rows"][:5])
            raise PipelineError(
                f"exporting run {run.run_id}: the ONNX model differs from pipeline's own "
                f"prediction on {check['n_off_rows']} of {check['rows']} validation images "
                f"(rows {rows}; same class on {check['same_class_fraction']:.2%}, needed "
                f"{MIN_AGREEMENT:.1%}); nothing written")
    return check
