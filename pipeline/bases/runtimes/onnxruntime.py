"""The ONNX Runtime runtime: the extractor's ONNX graph in a CPU session using every core."""

from __future__ import annotations

import numpy as np

from pipeline.bases.runtimes.base import FLOAT32, ONNXRUNTIME, threads


class OnnxRuntime:
    name = ONNXRUNTIME
    precision = FLOAT32

    def __init__(self, model: bytes):
        """``model``: the serialized ONNX graph, already checked against its sha256."""
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads()
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        self._session = ort.InferenceSession(model, options,
                                             providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name

    def forward(self, batch: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(batch, dtype=np.float32)
        return self._session.run(None, {self._input: x})[0]
