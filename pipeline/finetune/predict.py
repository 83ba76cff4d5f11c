"""Label new images with a run (head or fine-tuned) or an exported ``.keras``/``.onnx`` model.

Where the model comes from (:func:`load_classifier`):

* a head run, of any kind: the extractor rebuilt from the run's record of its cache (base,
  weights, layer, pooling, input size), then the run's fitted head in Python on its features
  (no folding into layers, so forests and boosting predict too) – the cache file itself is
  not needed;
* a fine-tuned run: its ``model.keras`` (a plain file inside the run folder, sha256-checked
  against ``config.json``, loaded in Keras' safe mode);
* a ``.keras`` file written by ``pipeline export`` (class names from its side file), or a
  ``.onnx`` file (class names from its metadata; needs the ``onnx`` extra).

Images are decoded with :mod:`pipeline.data.decode` and resized bilinearly exactly as during
extraction. A file that cannot be decoded is reported with its reason and never gets a label.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import PipelineError
from pipeline.fileio import read_json
from pipeline.finetune.source import resolve_run
from pipeline.runs.record import CONFIG, RunRecord
from pipeline.runs.store import load_head, verified_file


@dataclass
class Prediction:
    """One image's result: a label with its probability, or the reason it has none."""

    path: str
    label: str | None
    probability: float | None
    probabilities: dict[str, float] | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Classifier:
    """A model ready to predict, with what is needed to feed it and name its outputs.

    ``model`` maps images to probabilities, or to feature arrays when ``head`` is set (a
    :class:`~pipeline.runs.LoadedHead` run in Python on them); for an ONNX file it is the
    file's path, run in ``onnxruntime``.
    """

    model: Any  # keras.Model, or the path of an .onnx file
    class_names: list[str]
    input_size: int
    raw_input: bool  # True: uint8 images of any size (an exported model), one at a time
    source: str  # the run id or file it came from
    head: Any = None  # LoadedHead fed by model's features (head runs)
    onnx: bool = False

    def probabilities(self, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """Class probabilities ``(n, n_classes)`` for a batch of images."""
        if self.onnx:
            from pipeline.finetune.onnx_export import onnx_probabilities

            return onnx_probabilities(self.model, images, batch_size=batch_size)
        if self.raw_input:
            return np.asarray(self.model(images, training=False))
        out = np.asarray(self.model.predict(images, batch_size=batch_size, verbose=0))
        if self.head is None:
            return out
        return self.head.predict_proba(out.reshape(len(out), -1))


def metadata_path(model_path: Path) -> Path:
    """The side file holding an exported model's class names (``MODEL.keras.json``)."""
    return model_path.with_name(model_path.name + ".json")


def load_classifier(source: str | os.PathLike,
                    reports_dir: str | os.PathLike | None = None) -> Classifier:
    """The model ``source`` names: ``RUN_ID``, ``best``, a run folder, or a ``.keras`` or
    ``.onnx`` file."""
    text = str(source)
    path = Path(text).expanduser()
    if text.endswith((".keras", ".onnx")):
        if not path.is_file():
            raise PipelineError(f"{path}: no such model file")
        return _from_onnx_file(path) if text.endswith(".onnx") else _from_keras_file(path)
    run = resolve_run(text, reports_dir)
    class_names = list(run.record.cache.class_names or [])
    if run.is_finetuned:
        model = load_finetuned_model(run.run_dir, run.record)
        size = int(model.inputs[0].shape[1])
        return Classifier(model, class_names, size, raw_input=False, source=run.run_id)
    from pipeline.finetune.model import rebuild_features

    loaded = load_head(run.run_dir)  # verified and refused before any model is built
    ex = rebuild_features(run.record.cache)
    return Classifier(ex.model, loaded.class_names, int(run.record.cache.input_size or 0),
                      raw_input=False, source=run.run_id, head=loaded)


def load_finetuned_model(run_dir: Path, record: RunRecord) -> Any:
    """A fine-tuned run's ``model.keras``: a plain file inside the run folder whose sha256
    matches the record (a missing or empty hash is refused), loaded in Keras' safe mode."""
    from pipeline.heads.keras_heads import load_keras_safely

    model_path = verified_file(run_dir, record.head, "model file")
    return load_keras_safely(model_path, "model file")


def _side_metadata(path: Path) -> dict[str, Any]:
    """Class names (and input size) of a ``.keras`` file: its side file from export, else
    the record of the run folder it sits in, else nothing."""
    side = metadata_path(path)
    if side.is_file():
        meta = read_json(side, default={})
        return meta if isinstance(meta, dict) else {}
    if (path.parent / CONFIG).is_file():  # a run folder's model.keras
        try:
            return {"class_names": RunRecord.read(path.parent).cache.class_names}
        except PipelineError:
            return {}
    return {}


def _from_onnx_file(path: Path) -> Classifier:
    from pipeline.finetune.onnx_export import onnx_class_names

    names = onnx_class_names(path)
    return Classifier(path, names, 0, raw_input=True, source=str(path), onnx=True)


def _from_keras_file(path: Path) -> Classifier:
    from pipeline.heads.keras_heads import load_keras_safely

    model = load_keras_safely(path, "model")
    shape = tuple(model.inputs[0].shape[1:])
    if len(shape) != 3 or shape[-1] != 3:
        raise PipelineError(f"{path}: expected a model of RGB images, its input is {shape}")
    meta = _side_metadata(path)
    raw = shape[0] is None or str(model.inputs[0].dtype) == "uint8"
    n_out = int(model.outputs[0].shape[-1])
    names = list(meta.get("class_names") or [f"class_{i}" for i in range(n_out)])
    if len(names) != n_out:
        raise PipelineError(f"{metadata_path(path)}: lists {len(names)} classes, the model "
                            f"outputs {n_out}")
    size = int(meta.get("input_size") or (shape[0] or 0))
    return Classifier(model, names, size, raw_input=raw, source=str(path))


def collect_images(items: Iterable[str | os.PathLike]) -> list[Path]:
    """Files named, plus image files found (recursively, sorted) in folders named."""
    from pipeline.data.samples import is_image_file

    out: list[Path] = []
    for item in items:
        p = Path(item).expanduser()
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if is_image_file(f))
            if not found:
                raise PipelineError(f"{p}: folder holds no image files")
            out.extend(found)
        elif p.is_file():
            out.append(p)
        else:
            raise PipelineError(f"{p}: no such file or folder")
    if not out:
        raise PipelineError("no images given; name image files or folders")
    return list(dict.fromkeys(out))


def predict_images(clf: Classifier, paths: Sequence[Path],
                   batch_size: int = 32) -> list[Prediction]:
    """Predictions for ``paths`` with a loaded :class:`Classifier`, in order."""
    from pipeline.data.decode import DecodeError, decode_file
    from pipeline.data.reader import resize

    results: list[Prediction | None] = [None] * len(paths)
    batch: list[tuple[int, np.ndarray]] = []

    def flush() -> None:
        if not batch:
            return
        x = np.stack([img for _, img in batch])
        proba = clf.probabilities(x, batch_size)
        for (i, _), p in zip(batch, proba, strict=True):
            results[i] = _prediction(paths[i], p, clf.class_names)
        batch.clear()

    for i, path in enumerate(paths):
        try:
            image = decode_file(str(path))
        except DecodeError as e:
            results[i] = Prediction(str(path), None, None, None, error=str(e))
            continue
        if clf.raw_input:
            proba = clf.probabilities(image[None])[0]
            results[i] = _prediction(path, proba, clf.class_names)
            continue
        batch.append((i, resize(image, clf.input_size).numpy()))
        if len(batch) >= batch_size:
            flush()
    flush()
    return [r for r in results if r is not None]


def _prediction(path: Path, proba: np.ndarray, class_names: list[str]) -> Prediction:
    proba = np.asarray(proba, dtype=np.float64)
    k = int(np.argmax(proba))
    return Prediction(str(path), class_names[k], float(proba[k]),
                      {n: float(v) for n, v in zip(class_names, proba, strict=True)})


def predict(source: str | os.PathLike, images: Sequence[str | os.PathLike] | str | os.PathLike,
            *, reports_dir: str | os.PathLike | None = None,
            batch_size: int = 32) -> list[Prediction]:
    """Label each image (files and/or folders) with the model ``source`` names.

    ``source``: ``RUN_ID``, ``best`` (top of the leaderboard), a run folder or a ``.keras``
    or ``.onnx`` file. Undecodable files come back with ``error`` set and no label. Example::

        from pipeline.finetune import predict
        for p in predict("best", ["new_cells/"]):
            print(p.path, p.label, p.probability, p.error)
    """
    if isinstance(images, str | os.PathLike):
        images = [images]
    paths = collect_images(images)
    return predict_images(load_classifier(source, reports_dir), paths, batch_size)
