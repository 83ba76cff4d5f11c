"""Export a run as one self-contained Keras model for raw images.

The exported model takes a batch of uint8 RGB images of any size
(``Input(shape=(None, None, 3), dtype="uint8")``), casts them to float, resizes them bilinearly
to the base's input size inside the model (``keras.layers.Resizing``, the same
``tf.image.resize`` bilinear op the extraction reader uses), and returns class probabilities.
Preprocessing, base, pooling and head are all built-in Keras layers, so it loads with plain
``keras.models.load_model(path)``, no custom objects, no ``pipeline`` installed.

Beside it, ``MODEL.keras.json`` records the class names (output column order), the input size
and where the model came from; ``pipeline predict MODEL.keras`` reads it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import PipelineError
from pipeline.fileio import atomic_path, utc_timestamp, write_json
from pipeline.finetune.predict import load_classifier, metadata_path
from pipeline.finetune.source import resolve_run


@dataclass
class Exported:
    """The written model, its side file and what they hold."""

    path: Path
    metadata_path: Path
    metadata: dict[str, Any]


def export(source: str | os.PathLike = "best", out: str | os.PathLike | None = None, *,
           reports_dir: str | os.PathLike | None = None) -> Exported:
    """Write the model of run ``source`` (``RUN_ID``, ``best`` or a run folder) as ``.keras``.

    ``out`` defaults to ``<run folder>/exported.keras``; it must end in ``.keras``.
    """
    from pipeline.finetune.model import export_model, find_classifier

    if str(source).endswith(".keras"):
        raise PipelineError(f"{source}: export takes a run (id, 'best' or folder), not a model "
                            "file; a .keras file from export is already exported")
    run = resolve_run(source, reports_dir)
    path = Path(out).expanduser() if out is not None else run.run_dir / "exported.keras"
    if path.suffix != ".keras":
        raise PipelineError(f"--out {path}: the file name must end in .keras")
    clf = load_classifier(run.run_dir, reports_dir)
    model = export_model(find_classifier(clf.model))
    with atomic_path(path, suffix=".keras") as tmp:  # Keras looks at the extension
        model.save(tmp)
    cache = run.record.cache
    meta = {
        "class_names": clf.class_names, "input_size": clf.input_size,
        "input": "uint8 RGB images of any size, shape (batch, height, width, 3)",
        "output": "class probabilities, columns in class_names order",
        "resize": "bilinear (tf.image.resize, no antialias), inside the model",
        "source_run": run.run_id, "finetuned": run.is_finetuned,
        "base": cache.base, "dataset": cache.dataset, "exported": utc_timestamp(),
    }
    side = metadata_path(path)
    write_json(side, meta)
    return Exported(path=path, metadata_path=side, metadata=meta)
