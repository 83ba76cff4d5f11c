"""A Keras model as an ONNX graph, through Keras' own export or tf2onnx.

Shared by the extraction runtimes (:mod:`pipeline.bases.runtimes.onnx_store` converts an
extractor once per machine) and by ``pipeline export --format onnx``
(:mod:`pipeline.finetune.onnx_export`, which adds the resize and the head). The ONNX
libraries are imported inside the functions only; callers check they are installed.
"""

from __future__ import annotations

import contextlib
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import keras
    import onnx

#: Opset of the default domain: tf2onnx 1.17 converts up to 18, onnxruntime runs far newer.
DEFAULT_OPSET = 17


def keras_to_onnx(model: keras.Model, spec: Any, opset: int = DEFAULT_OPSET) -> onnx.ModelProto:
    """Keras' own ONNX export; ``tf2onnx.convert.from_function`` where Keras lacks it."""
    import onnx

    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        # Keras' tf2onnx patch for numpy 2 touches np.object, which warns.
        warnings.simplefilter("ignore", FutureWarning)
        path = Path(tmp) / "model.onnx"
        try:
            model.export(str(path), format="onnx", input_signature=[spec],
                         opset_version=opset, verbose=False)
        except (ValueError, TypeError) as e:
            # Keras < 3.8 has no format="onnx" (ValueError); before ~3.12 export_onnx takes no
            # opset_version (TypeError). tf2onnx directly does the same conversion.
            try:
                return tf2onnx_from_function(model, spec, opset)
            except Exception as fallback:
                raise fallback from e
        proto = onnx.load(str(path))
        if len(graph_inputs(proto.graph)) > 1:
            # Tensors a layer made outside its call (e.g. Normalization(mean=...)) come out
            # as extra graph inputs; the fallback turns them back into constants.
            return tf2onnx_from_function(model, spec, opset)
        return proto


def tf2onnx_from_function(model: keras.Model, spec: Any, opset: int) -> onnx.ModelProto:
    """The fallback: a ``tf.function`` with an input signature through tf2onnx."""
    import tensorflow as tf
    import tf2onnx

    with contextlib.suppress(ImportError):  # Keras' numpy-2 fixes for tf2onnx, if it has them
        from keras.src.export.tf2onnx_lib import patch_tf2onnx

        patch_tf2onnx()

    @tf.function(input_signature=[spec])
    def forward(x: Any) -> Any:
        return model(x, training=False)

    proto, _ = tf2onnx.convert.from_function(forward, input_signature=[spec], opset=opset)
    bake_captured_tensors(proto, forward.get_concrete_function())
    return proto


def bake_captured_tensors(proto: onnx.ModelProto, concrete: Any) -> None:
    """Captured (non-variable) tensors that tf2onnx left as graph inputs become initializers
    holding their values (variables it already froze)."""
    from onnx import numpy_helper

    graph = proto.graph
    loose = {value.name for value in graph_inputs(graph)}
    baked = set()
    for outer, inner in concrete.graph.captures:
        if inner.name in loose and outer.dtype.name != "resource":
            graph.initializer.append(numpy_helper.from_array(np.asarray(outer), inner.name))
            baked.add(inner.name)
    kept = [value for value in graph.input if value.name not in baked]
    del graph.input[:]
    graph.input.extend(kept)


def graph_inputs(graph: Any) -> list[Any]:
    """The inputs a caller must feed (initializers may be listed as inputs too)."""
    constants = {t.name for t in graph.initializer}
    return [value for value in graph.input if value.name not in constants]
