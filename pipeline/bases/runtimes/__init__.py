"""Runtimes: what runs an extractor's forward pass (TensorFlow, ONNX Runtime, OpenVINO).

Every runtime takes float32 RGB batches ``[N, S, S, 3]`` in [0, 255] at the extractor's input
size and returns the same features as the Keras model (within float tolerance; bfloat16, an
explicit opt-in, is the exception and has its own cache key). The non-TensorFlow runtimes run
the extractor converted to ONNX once per machine (:mod:`.onnx_store`). ``auto``
(:mod:`.choose`) times the installed runtimes on a couple of batches and remembers the fastest
per machine. Modules: ``base`` (names, request, protocol), ``tensorflow``, ``onnxruntime``,
``openvino`` (one runtime each), ``convert`` + ``onnx_store`` (Keras -> ONNX, verified store),
``named`` (open one by name, with the fallback), ``choose`` (auto). No framework is imported at
module level anywhere here.
"""

from __future__ import annotations

from pipeline.bases.extractor import Extractor
from pipeline.bases.runtimes.base import (
    AUTO,
    BFLOAT16,
    FAST_EXTRA,
    FLOAT32,
    ONNXRUNTIME,
    OPENVINO,
    PRECISIONS,
    RUNTIMES,
    TENSORFLOW,
    Runtime,
    RuntimeRequest,
    installed,
    threads,
)
from pipeline.bases.runtimes.choose import choose_runtime
from pipeline.bases.runtimes.named import open_named
from pipeline.errors import UsageError
from pipeline.progress import Reporter


def check_request(runtime: str, precision: str) -> None:
    """Refuse, in one line and before any work, a precision the runtime or CPU cannot run:
    bfloat16 runs in OpenVINO only, on a CPU with native bfloat16 instructions."""
    if precision != BFLOAT16:
        return
    if runtime not in (AUTO, OPENVINO):
        raise UsageError(f"--precision bfloat16 runs in OpenVINO only, not --runtime "
                            f"{runtime}; use --runtime openvino (or auto)")
    if not installed(OPENVINO):
        raise UsageError("--precision bfloat16 needs OpenVINO, which is not installed; "
                            f"{FAST_EXTRA}")
    from pipeline.bases.runtimes.openvino import cpu_has_bf16

    if not cpu_has_bf16():
        raise UsageError("--precision bfloat16: this CPU has no native bfloat16 (OpenVINO "
                            "reports no BF16 capability); use --precision float32")


def open_runtime(extractor: Extractor, request: RuntimeRequest, report: Reporter) -> Runtime:
    """The runtime ``request`` names for ``extractor`` (``auto``: the fastest installed one,
    timed once per machine). A runtime that is not installed, or whose conversion fails,
    falls back to TensorFlow with one line saying why (bfloat16 has no fallback)."""
    check_request(request.runtime, request.precision)
    if request.runtime == AUTO:
        return choose_runtime(extractor, request, report)
    return open_named(extractor, request.runtime, request, report)


__all__ = ["AUTO", "BFLOAT16", "FLOAT32", "ONNXRUNTIME", "OPENVINO", "PRECISIONS", "RUNTIMES",
           "TENSORFLOW", "Runtime", "RuntimeRequest", "check_request", "installed",
           "open_named", "open_runtime", "threads"]
