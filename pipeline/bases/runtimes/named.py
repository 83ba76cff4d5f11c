"""One named runtime for an extractor, TensorFlow when it cannot run (one line saying why)."""

from __future__ import annotations

from pipeline.bases.extractor import Extractor
from pipeline.bases.runtimes.base import (
    BFLOAT16,
    FAST_EXTRA,
    ONNXRUNTIME,
    TENSORFLOW,
    Runtime,
    RuntimeRequest,
    missing_modules,
)
from pipeline.progress import Reporter


def open_named(extractor: Extractor, name: str, request: RuntimeRequest,
               report: Reporter) -> Runtime:
    """Runtime ``name`` (converted to ONNX once per machine unless it is TensorFlow);
    TensorFlow when it is not installed or its conversion fails (one line saying why; with
    bfloat16, which TensorFlow cannot stand in for, the failure is raised)."""
    from pipeline.bases.runtimes.tensorflow import TensorFlowRuntime

    if name == TENSORFLOW:
        return TensorFlowRuntime(extractor)
    missing = missing_modules(name)
    if missing:
        report.warn(f"runtime {name} needs {', '.join(missing)}, not installed "
                    f"({FAST_EXTRA}); using tensorflow")
        return TensorFlowRuntime(extractor)
    from pipeline.bases.runtimes.onnx_store import ConversionError, converted_model

    try:
        runtime = _load(name, converted_model(extractor, request.store, report),
                        request.precision)
    except ConversionError as e:
        if request.precision == BFLOAT16:
            raise
        report.warn(f"runtime {name}: {e}; using tensorflow")
        return TensorFlowRuntime(extractor)
    return runtime


def _load(name: str, model: bytes, precision: str) -> Runtime:
    """A session / compiled model of the verified ONNX bytes; ``ConversionError`` when the
    runtime cannot load them (an op it lacks, say)."""
    from pipeline.bases.runtimes.onnx_store import ConversionError

    try:
        if name == ONNXRUNTIME:
            from pipeline.bases.runtimes.onnxruntime import OnnxRuntime

            return OnnxRuntime(model)
        from pipeline.bases.runtimes.openvino import OpenVinoRuntime

        return OpenVinoRuntime(model, precision)
    except Exception as e:  # each runtime raises its own types; any of them is a fallback
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise ConversionError(f"cannot load the ONNX model ({type(e).__name__}: {first})"
                              ) from None
