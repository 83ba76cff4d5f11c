"""Base + any head as one ONNX model for raw images (``pipeline export --format onnx``).

The model has one input ``image`` (uint8 RGB, ``[N, H, W, 3]``, any height and width) and one
output ``probabilities`` (float32, ``[N, n_classes]``, columns in class-name order)::

    image -> cast -> bilinear resize -> preprocessing -> base -> pooling -> flat features
          -> head (scikit-learn pipeline via skl2onnx, or a Keras dense head + softmax)

Two graphs are converted separately and joined with ``onnx.compose.merge_models``:

* the Keras part (:func:`onnx_feature_graph`): the float model at its input size with Keras'
  own ``model.export(format="onnx")`` (Keras >= 3.8 on TensorFlow; it drives
  ``tf2onnx.convert.from_function``), falling back to ``tf2onnx.convert.from_function`` on a
  ``tf.function`` with an input signature; in front of it the cast and TensorFlow's bilinear
  resize as plain ONNX ops (:mod:`pipeline.finetune.onnx_resize`, bit-equal to
  ``tf.image.resize``), so the height and width stay dynamic;
* the head (:func:`onnx_head_graph`) with ``skl2onnx`` for every scikit-learn kind (tree
  ensembles, calibrated SVMs and kNN included), or through the Keras route for dense heads.

The class names travel in the model's ``metadata_props``. :func:`check_onnx` runs the file in
plain ``onnxruntime`` against the project's own probabilities. The ONNX libraries are the
optional extra ``pipeline[onnx]``; they are imported inside the functions only.
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.bases.runtimes.convert import DEFAULT_OPSET, keras_to_onnx
from pipeline.bases.runtimes.convert import graph_inputs as _graph_inputs
from pipeline.errors import PipelineError
from pipeline.fileio import atomic_path

if TYPE_CHECKING:
    import keras
    import onnx

IMAGE = "image"
PIXELS = "pixels"  # float32 images at the base's input size, inside the graph
FEATURES = "features"
PROBABILITIES = "probabilities"
#: The issue's bar: probabilities within ATOL on all but (1 - MIN_AGREEMENT) of the rows,
#: and the same predicted class on at least MIN_AGREEMENT of them.
ATOL = 1e-4
MIN_AGREEMENT = 0.999
_EXTRA = "install the ONNX extra: pip install 'pipeline[onnx]'"


def _require(module: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise PipelineError(f"exporting to ONNX needs {module.split('.')[0]}; {_EXTRA}") from None


# --------------------------------------------------------------------------- Keras -> ONNX


def _flattened(feature_model: keras.Model, raw: bool) -> keras.Model:
    """``feature_model`` with its output flattened to one row per image, its input named
    ``image`` (uint8 of any size, ``raw``) or ``pixels`` (float32 at its input size)."""
    import keras

    if raw:
        inp = keras.Input((None, None, 3), dtype="uint8", name=IMAGE)
    else:
        inp = keras.Input(tuple(feature_model.inputs[0].shape[1:]), name=PIXELS)
    x = feature_model(inp, training=False)
    if len(x.shape) > 2:
        x = keras.layers.Flatten(name="flatten_features")(x)
    model = keras.Model(inp, x, name="onnx_features")
    model.trainable = False
    return model


def _keras_to_onnx(model: keras.Model, spec: Any, opset: int) -> onnx.ModelProto:
    """Keras' own ONNX export, tf2onnx where Keras lacks it (:mod:`pipeline.bases.runtimes.
    convert`, shared with the extraction runtimes)."""
    _require("onnx")
    _require("tf2onnx")
    return keras_to_onnx(model, spec, opset)


def _name_io(model: onnx.ModelProto, inp: str, out: str, dims: tuple) -> onnx.ModelProto:
    """One input named ``inp`` with dims ``dims[0]``, one output ``out`` with ``dims[1]``."""
    graph = model.graph
    inputs = _graph_inputs(graph)
    if len(inputs) != 1 or len(graph.output) != 1:
        raise PipelineError(f"expected a graph with one input and one output, got "
                            f"{[i.name for i in inputs]} -> {[o.name for o in graph.output]}")
    _rename_value(graph, inputs[0].name, inp)
    _rename_value(graph, graph.output[0].name, out)
    for value, shape in ((inputs[0], dims[0]), (graph.output[0], dims[1])):
        for dim, want in zip(value.type.tensor_type.shape.dim, shape, strict=True):
            if isinstance(want, str):
                dim.dim_param = want
            else:
                dim.dim_value = want
    return model


def _rename_value(graph: Any, old: str, new: str) -> None:
    """Rename a tensor everywhere in a graph (nodes, inputs, outputs, value infos)."""
    if old == new:
        return
    for node in graph.node:
        node.input[:] = [new if n == old else n for n in node.input]
        node.output[:] = [new if n == old else n for n in node.output]
    for value in (*graph.input, *graph.output, *graph.value_info):
        if value.name == old:
            value.name = new


def _takes_raw_images(model: keras.Model) -> bool:
    spec = model.inputs[0]
    return str(spec.dtype) == "uint8" and tuple(spec.shape[1:3]) == (None, None)


def onnx_feature_graph(feature_model: keras.Model, opset: int = DEFAULT_OPSET
                       ) -> onnx.ModelProto:
    """The Keras part as ONNX: ``image`` (uint8 ``[N, H, W, 3]``, any H and W) -> ``features``
    (float32 ``[N, n_features]``, the feature array of each image flattened).

    ``feature_model`` takes float32 images in [0, 255] at a fixed size (an extractor model,
    ``build_extractor(...).model``, or a whole classifier): the cast and TensorFlow's bilinear
    resize are put in front as plain ONNX ops (:mod:`pipeline.finetune.onnx_resize`, equal to
    ``tf.image.resize`` to the bit). A model that already takes uint8 images of any size (an
    exported ``.keras``) is converted whole; its ``Resizing`` layer becomes ONNX ``Resize``,
    which rounds coordinates differently (pixels up to ~1e-2 apart).
    """
    import tensorflow as tf

    from pipeline.finetune.onnx_resize import bilinear_resize_graph

    if _takes_raw_images(feature_model):
        model = _flattened(feature_model, raw=True)
        spec = tf.TensorSpec([None, None, None, 3], tf.uint8, name=IMAGE)
        n_features = int(model.outputs[0].shape[-1])
        proto = _keras_to_onnx(model, spec, opset)
        return _name_io(proto, IMAGE, FEATURES, (("N", "H", "W", 3), ("N", n_features)))
    size = tuple(feature_model.inputs[0].shape[1:])
    if len(size) != 3 or size[0] != size[1] or size[0] is None or size[2] != 3:
        raise PipelineError(f"expected a model of square RGB images of a fixed size, got "
                            f"input shape {size}")
    model = _flattened(feature_model, raw=False)
    n_features = int(model.outputs[0].shape[-1])
    spec = tf.TensorSpec([None, *size], tf.float32, name=PIXELS)
    proto = _name_io(_keras_to_onnx(model, spec, opset), PIXELS, FEATURES,
                     (("N", *size), ("N", n_features)))
    resize = bilinear_resize_graph(int(size[0]), _opsets(proto).get("", opset))
    return _chain(resize, proto, ("resized", PIXELS), ("resize/", "base/"),
                  (IMAGE, FEATURES))


# --------------------------------------------------------------------------- the head


def _fitted_head(head: Any) -> tuple[str, Any]:
    """``("keras", model)`` or ``("sklearn", estimator)`` for a head, whatever wraps it: a
    project ``Head`` (``.pipeline`` / ``.model``), a loaded run head (``.head``), a fitted
    scikit-learn pipeline or estimator, or a Keras model that outputs logits."""
    import keras

    if isinstance(head, keras.Model):
        return "keras", head
    if hasattr(head, "classes_") and hasattr(head, "predict_proba"):
        return "sklearn", head
    for attr in ("pipeline", "model", "head"):
        inner = getattr(head, attr, None)
        if inner is not None and inner is not head:
            return _fitted_head(inner)
    raise PipelineError(f"cannot export a {type(head).__name__} head to ONNX: expected a "
                        "fitted scikit-learn classifier or a Keras model")


@contextlib.contextmanager
def _tree_flags_as_ints() -> Iterator[None]:
    """skl2onnx (1.20) passes Python ``False`` as a leaf's ``nodes_missing_value_tracks_true``
    for HistGradientBoosting; protobuf 7 refuses booleans in an integer list ("Expected an
    int, got a boolean"). Cast them while converting, and put skl2onnx back afterwards."""
    try:
        from skl2onnx.common import tree_ensemble
    except ImportError:  # pragma: no cover - a skl2onnx without the helper needs no fix
        yield
        return
    original = tree_ensemble.add_node

    def add_node(*args: Any, **kwargs: Any) -> Any:
        flag = "nodes_missing_value_tracks_true"
        if flag in kwargs:
            kwargs[flag] = int(kwargs[flag])
        return original(*args, **kwargs)

    tree_ensemble.add_node = add_node
    try:
        yield
    finally:
        tree_ensemble.add_node = original


def _sklearn_head_graph(estimator: Any, n_features: int, opset: int,
                        n_classes: int) -> onnx.ModelProto:
    skl2onnx = _require("skl2onnx")
    from skl2onnx.common.data_types import FloatTensorType

    classes = np.asarray(estimator.classes_)
    if classes.dtype.kind not in "iu" or classes.min() < 0 or classes.max() >= n_classes:
        raise PipelineError(f"the head's classes {classes.tolist()} are not indices into the "
                            f"{n_classes} class names")
    fitted_width = int(getattr(estimator, "n_features_in_", n_features))
    if fitted_width != n_features:
        raise PipelineError(f"the head was fitted on {fitted_width} features, but the base "
                            f"gives {n_features}")
    final = estimator.steps[-1][1] if hasattr(estimator, "steps") else estimator
    with _tree_flags_as_ints(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # sklearn 1.9 deprecations read by it
        proto = skl2onnx.convert_sklearn(
            estimator, initial_types=[(FEATURES, FloatTensorType([None, n_features]))],
            target_opset=opset, options={id(final): {"zipmap": False}})
    graph = proto.graph
    keep = [o for o in graph.output if o.name == PROBABILITIES]
    if len(keep) != 1:
        raise PipelineError(f"skl2onnx gave outputs {[o.name for o in graph.output]}, "
                            f"expected {PROBABILITIES!r}")
    del graph.output[:]
    graph.output.extend(keep)  # the predicted label is argmax(probabilities)
    if classes.tolist() != list(range(n_classes)):
        _spread_columns(proto, classes, n_classes)
    return _name_io(proto, FEATURES, PROBABILITIES, (("N", n_features), ("N", n_classes)))


def _spread_columns(proto: onnx.ModelProto, classes: np.ndarray, n_classes: int) -> None:
    """A head fitted without some class: put its columns where its classes are (zeros for the
    others), by a 0/1 matrix product, which is exact."""
    from onnx import helper, numpy_helper

    graph = proto.graph
    seen = f"{PROBABILITIES}_seen"
    _rename_value(graph, PROBABILITIES, seen)
    spread = np.zeros((len(classes), n_classes), dtype=np.float32)
    spread[np.arange(len(classes)), classes] = 1.0
    graph.initializer.append(numpy_helper.from_array(spread, "spread_columns"))
    graph.node.append(helper.make_node("MatMul", [seen, "spread_columns"], [PROBABILITIES],
                                       name="spread_columns"))
    graph.output[0].name = PROBABILITIES
    shape = graph.output[0].type.tensor_type.shape.dim
    if len(shape) == 2:
        shape[1].dim_value = n_classes


def _keras_head_graph(model: keras.Model, n_features: int, opset: int,
                      n_classes: int) -> onnx.ModelProto:
    """A Keras dense head (logits) + softmax, through the same route as the feature graph."""
    import keras
    import tensorflow as tf

    inp = keras.Input((n_features,), name=FEATURES)
    probs = keras.layers.Softmax(name=PROBABILITIES)(model(inp, training=False))
    wrapped = keras.Model(inp, probs, name="onnx_head")
    wrapped.trainable = False
    spec = tf.TensorSpec([None, n_features], tf.float32, name=FEATURES)
    proto = _keras_to_onnx(wrapped, spec, opset)
    return _name_io(proto, FEATURES, PROBABILITIES, (("N", n_features), ("N", n_classes)))


def onnx_head_graph(head: Any, n_features: int, opset: int = DEFAULT_OPSET, *,
                    n_classes: int | None = None) -> onnx.ModelProto:
    """The head as ONNX: ``features`` (float32 ``[N, n_features]``) -> ``probabilities``
    (float32 ``[N, n_classes]``).

    ``head``: a fitted scikit-learn pipeline (scaler -> model, any kind), a Keras model that
    outputs logits, or a project head wrapping one. ``n_classes`` defaults to the head's own
    class count; a scikit-learn head fitted without some class gets zero columns for it.
    """
    family, fitted = _fitted_head(head)
    if family == "keras":
        out = int(fitted.outputs[0].shape[-1])
        if n_classes is not None and n_classes != out:
            raise PipelineError(f"the Keras head outputs {out} classes, expected {n_classes}")
        return _keras_head_graph(fitted, n_features, opset, out)
    count = n_classes if n_classes is not None else len(fitted.classes_)
    if _is_nystroem(fitted):  # skl2onnx has no Nystroem: the exact Keras layers instead
        from pipeline.finetune.kernel_layers import nystroem_layers

        layer = nystroem_layers(fitted, count).layers[0]  # log-probabilities: softmax = p
        return _keras_head_graph(layer, n_features, opset, count)
    return _sklearn_head_graph(fitted, n_features, opset, count)


def _is_nystroem(estimator: Any) -> bool:
    """``rbf_svm``'s scalable form: a pipeline whose model is ``Nystroem -> linear``."""
    model = getattr(estimator, "named_steps", {}).get("model")
    return "nystroem" in getattr(model, "named_steps", {})


# --------------------------------------------------------------------------- one model


def _opsets(model: onnx.ModelProto) -> dict[str, int]:
    """Declared opsets, one per domain: the default domain and the domains nodes use (tf2onnx
    declares ``ai.onnx.ml`` 2 without using it, which would clash with skl2onnx's 1)."""
    used = {"", *(node.domain for node in model.graph.node)}
    versions: dict[str, int] = {}
    for entry in model.opset_import:
        if entry.domain in used:
            versions[entry.domain] = max(entry.version, versions.get(entry.domain, 0))
    return versions


def _set_opsets(model: onnx.ModelProto, versions: dict[str, int]) -> None:
    from onnx import helper

    del model.opset_import[:]
    model.opset_import.extend(helper.make_opsetid(d, v) for d, v in sorted(versions.items()))


def _chain(first: onnx.ModelProto, second: onnx.ModelProto, link: tuple[str, str],
           prefixes: tuple[str, str], names: tuple[str, str]) -> onnx.ModelProto:
    """``first`` feeding ``second`` (``link``: first's output -> second's input) as one model,
    inner names prefixed, its input and output named ``names``."""
    onnx = _require("onnx")
    from onnx import compose, version_converter

    first, second = (onnx.ModelProto.FromString(m.SerializeToString())  # callers' untouched
                     for m in (first, second))
    target = _opsets(first).get("", DEFAULT_OPSET)
    if _opsets(second).get("", target) != target:
        # skl2onnx declares the lowest opset its nodes need; bring it to the first's.
        second = version_converter.convert_version(second, target)
    for model in (first, second):
        _set_opsets(model, _opsets(model))  # merge_models refuses repeated domains
    first.ir_version = second.ir_version = max(first.ir_version, second.ir_version)
    merged = compose.merge_models(first, second, io_map=[link], prefix1=prefixes[0],
                                  prefix2=prefixes[1])
    (inp,), (out,) = _graph_inputs(merged.graph), merged.graph.output
    _rename_value(merged.graph, inp.name, names[0])
    _rename_value(merged.graph, out.name, names[1])
    onnx.checker.check_model(merged)
    return merged


def join_graphs(features: onnx.ModelProto, head: onnx.ModelProto) -> onnx.ModelProto:
    """``image -> features`` joined to ``features -> probabilities``: one model, input
    ``image``, output ``probabilities``; inner names prefixed ``features/`` and ``head/``."""
    merged = _chain(features, head, (FEATURES, FEATURES), (f"{FEATURES}/", "head/"),
                    (IMAGE, PROBABILITIES))
    merged.graph.name = "pipeline_export"
    return merged


def export_onnx(feature_model: keras.Model, head: Any | None, class_names: Sequence[str],
                path: str | os.PathLike, *, opset: int = DEFAULT_OPSET,
                metadata: dict[str, Any] | None = None) -> Path:
    """Write base + head as one ONNX model at ``path`` (atomically) and return the path.

    ``head=None``: ``feature_model`` already outputs the class probabilities (a fine-tuned
    classifier). ``metadata_props`` hold ``class_names`` (JSON list, the output column order),
    what the input and output are, and ``metadata`` (values JSON-encoded unless strings).
    """
    from onnx import helper

    graph_f = onnx_feature_graph(feature_model, opset)
    width = int(graph_f.graph.output[0].type.tensor_type.shape.dim[1].dim_value)
    if head is None:
        if width != len(class_names):
            raise PipelineError(f"the model outputs {width} columns for {len(class_names)} "
                                "class names")
        model = graph_f
        _rename_value(model.graph, FEATURES, PROBABILITIES)
    else:
        model = join_graphs(graph_f, onnx_head_graph(head, width, opset,
                                                     n_classes=len(class_names)))
    props = {
        "class_names": json.dumps(list(class_names)),
        "input": "image: uint8 RGB images of any size, shape (batch, height, width, 3)",
        "output": "probabilities: float32 (batch, n_classes), columns in class_names order",
        "resize": "bilinear, half-pixel centres, no antialias (tf.image.resize), inside",
        **{k: v if isinstance(v, str) else json.dumps(v) for k, v in (metadata or {}).items()},
    }
    helper.set_model_props(model, props)
    model.producer_name = "pipeline"
    with atomic_path(path, suffix=".onnx") as tmp:
        tmp.write_bytes(model.SerializeToString())
    return Path(path)


def onnx_class_names(path: str | os.PathLike) -> list[str]:
    """The class names an exported model's ``metadata_props`` record (output column order)."""
    onnx = _require("onnx")
    props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False)
             .metadata_props}
    if "class_names" not in props:
        raise PipelineError(f"{path}: no class_names in its metadata; was it written by "
                            "pipeline export --format onnx?")
    return list(json.loads(props["class_names"]))


# --------------------------------------------------------------------------- the check


def _batches(images: Any, batch_size: int) -> Iterator[np.ndarray]:
    """Batches of same-sized uint8 images, in order: from one ``[N, H, W, 3]`` array, or from
    a sequence of ``[H, W, 3]`` arrays of any sizes (consecutive equal sizes batched)."""
    if isinstance(images, np.ndarray) and images.ndim == 4:
        for start in range(0, len(images), batch_size):
            yield np.ascontiguousarray(images[start:start + batch_size], dtype=np.uint8)
        return
    run: list[np.ndarray] = []
    for image in images:
        image = np.asarray(image, dtype=np.uint8)
        if run and (image.shape != run[0].shape or len(run) == batch_size):
            yield np.stack(run)
            run = []
        run.append(image)
    if run:
        yield np.stack(run)


def onnx_probabilities(path: str | os.PathLike, images: Any, *,
                       batch_size: int = 32) -> np.ndarray:
    """Run an exported model in plain ``onnxruntime`` (CPU) on uint8 images."""
    ort = _require("onnxruntime")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = [session.run([PROBABILITIES], {IMAGE: batch})[0]
           for batch in _batches(images, batch_size)]
    if not out:
        raise PipelineError("no images to run the ONNX model on")
    return np.concatenate(out)


def check_onnx(path: str | os.PathLike, images: Any, expected_proba: np.ndarray, *,
               atol: float = ATOL, min_agreement: float = MIN_AGREEMENT,
               batch_size: int = 32, max_reported: int = 20) -> dict[str, Any]:
    """Compare an exported model, run in plain ``onnxruntime``, with the project's own
    probabilities on the same images (rows in the same order).

    Passes (``ok``) when at least ``min_agreement`` of the rows have the same predicted class
    *and* probabilities within ``atol``. Rows that miss either (a float32 tree threshold can
    flip a row sitting on a split) are listed in ``off_rows`` (at most ``max_reported``) with
    both classes, the difference and the expected top-two margin (how close to a tie it was).
    """
    expected = np.asarray(expected_proba, dtype=np.float64)
    if expected.ndim != 2 or not len(expected):
        raise PipelineError(f"expected probabilities of shape (images, classes), got "
                            f"{expected.shape}")
    got = onnx_probabilities(path, images, batch_size=batch_size).astype(np.float64)
    if got.shape != expected.shape:
        raise PipelineError(f"the ONNX model gave probabilities of shape {got.shape}, "
                            f"expected {expected.shape}")
    diff = np.abs(got - expected).max(axis=1)
    want, have = expected.argmax(axis=1), got.argmax(axis=1)
    off = np.flatnonzero((diff > atol) | (want != have))
    top2 = np.sort(expected, axis=1)[:, -2:]
    rows = [{"row": int(i), "expected_class": int(want[i]), "onnx_class": int(have[i]),
             "max_abs_diff": float(diff[i]), "expected_margin": float(top2[i, 1] - top2[i, 0])}
            for i in off[:max_reported]]
    same, within = float(np.mean(want == have)), float(np.mean(diff <= atol))
    return {
        "rows": len(expected), "max_abs_diff": float(diff.max()),
        "same_class_fraction": same, "within_atol_fraction": within,
        "atol": atol, "min_agreement": min_agreement,
        "ok": same >= min_agreement and within >= min_agreement,
        "n_off_rows": int(len(off)), "off_rows": rows,
    }
