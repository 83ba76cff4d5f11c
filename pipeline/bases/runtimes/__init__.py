"""Runtimes: what runs an extractor's forward pass (TensorFlow, ONNX Runtime, OpenVINO).

Every runtime takes float32 RGB batches ``[N, S, S, 3]`` in [0, 255] at the extractor's input
size and returns the same features as the Keras model (within float tolerance; bfloat16, an
explicit opt-in, is the exception and has its own cache key). The non-TensorFlow runtimes run
the extractor converted to ONNX once per machine (:mod:`.onnx_store`). ``auto``
(:mod:`.choose`) times the installed runtimes on a couple of batches and remembers the fastest
per machine. This module imports no framework: the CLI reads the choices from it at start-up.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from pipeline.errors import PipelineError

if TYPE_CHECKING:
    from pipeline.bases.extractor import Extractor
    from pipeline.progress import Reporter

AUTO = "auto"
TENSORFLOW = "tensorflow"
ONNXRUNTIME = "onnxruntime"
OPENVINO = "openvino"
RUNTIMES = (AUTO, TENSORFLOW, ONNXRUNTIME, OPENVINO)
FLOAT32, BFLOAT16 = "float32", "bfloat16"
PRECISIONS = (FLOAT32, BFLOAT16)
#: The Python modules each runtime needs (the converted ones need the converter too).
NEEDS: dict[str, tuple[str, ...]] = {
    TENSORFLOW: ("tensorflow",),
    ONNXRUNTIME: ("onnxruntime", "onnx", "tf2onnx"),
    OPENVINO: ("openvino", "onnx", "tf2onnx"),
}
FAST_EXTRA = "pip install 'pipeline[fast]'"


class Runtime(Protocol):
    """A forward pass of one extractor."""

    name: str
    precision: str

    def forward(self, batch: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class RuntimeRequest:
    """Which runtime an extraction asked for, and where converted models and choices live."""

    runtime: str = AUTO
    precision: str = FLOAT32
    batch_size: int = 32
    #: Folder of converted models and remembered choices; None: the per-machine default
    #: (``~/.cache/pipeline/runtimes``, see ``onnx_store.runtimes_dir``).
    store: Path | None = None


def missing_modules(name: str) -> list[str]:
    """The modules ``name`` needs that are not installed (none for an installed runtime)."""
    return [m for m in NEEDS[name] if importlib.util.find_spec(m) is None]


def installed(name: str) -> bool:
    return not missing_modules(name)


def threads() -> int:
    """The cores this process may run on: every runtime uses all of them."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def check_request(runtime: str, precision: str) -> None:
    """Refuse, in one line and before any work, a precision the runtime or CPU cannot run:
    bfloat16 runs in OpenVINO only, on a CPU with native bfloat16 instructions."""
    if precision != BFLOAT16:
        return
    if runtime not in (AUTO, OPENVINO):
        raise PipelineError(f"--precision bfloat16 runs in OpenVINO only, not --runtime {runtime}; "
                         "use --runtime openvino (or auto)")
    if not installed(OPENVINO):
        raise PipelineError("--precision bfloat16 needs OpenVINO, which is not installed; "
                         f"{FAST_EXTRA}")
    from pipeline.bases.runtimes.openvino import cpu_has_bf16

    if not cpu_has_bf16():
        raise PipelineError("--precision bfloat16: this CPU has no native bfloat16 (OpenVINO "
                         "reports no BF16 capability); use --precision float32")


def open_runtime(extractor: Extractor, request: RuntimeRequest, report: Reporter) -> Runtime:
    """The runtime ``request`` names for ``extractor`` (``auto``: the fastest installed one,
    timed once per machine). A runtime that is not installed, or whose conversion fails,
    falls back to TensorFlow with one line saying why (bfloat16 has no fallback)."""
    check_request(request.runtime, request.precision)
    if request.runtime == AUTO:
        from pipeline.bases.runtimes.choose import choose_runtime

        return choose_runtime(extractor, request, report)
    return open_named(extractor, request.runtime, request, report)


def open_named(extractor: Extractor, name: str, request: RuntimeRequest,
               report: Reporter) -> Runtime:
    """One named runtime, TensorFlow when it cannot run (one line saying why)."""
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


__all__ = ["AUTO", "BFLOAT16", "FLOAT32", "ONNXRUNTIME", "OPENVINO", "PRECISIONS", "RUNTIMES",
           "TENSORFLOW", "Runtime", "RuntimeRequest", "check_request", "installed",
           "open_runtime", "threads"]
