"""The OpenVINO runtime: the extractor's ONNX graph compiled for the CPU (OpenVINO reads ONNX
directly), float32 by default or bfloat16 as an explicit opt-in (its inference precision
hint; only on a CPU with native bfloat16)."""

from __future__ import annotations

import functools

import numpy as np

from pipeline.bases.runtimes.base import BFLOAT16, FLOAT32, OPENVINO, threads


@functools.cache
def cpu_has_bf16() -> bool:
    """Whether OpenVINO's CPU plugin can run bfloat16 natively on this machine."""
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


class OpenVinoRuntime:
    name = OPENVINO

    def __init__(self, model: bytes, precision: str = FLOAT32):
        """``model``: the serialized ONNX graph, already checked against its sha256."""
        import openvino as ov

        self.precision = precision
        core = ov.Core()
        config = {"INFERENCE_PRECISION_HINT": "bf16" if precision == BFLOAT16 else "f32",
                  "INFERENCE_NUM_THREADS": threads(), "PERFORMANCE_HINT": "LATENCY"}
        self._compiled = core.compile_model(core.read_model(model), "CPU", config)
        self._request = self._compiled.create_infer_request()

    def forward(self, batch: np.ndarray) -> np.ndarray:
        self._request.infer([np.ascontiguousarray(batch, dtype=np.float32)])
        # The request's output buffer is reused by the next call; the writer keeps the rows.
        return np.array(self._request.get_output_tensor(0).data, copy=True)
