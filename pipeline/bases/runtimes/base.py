"""What every runtime module shares: the names, the request, the :class:`Runtime` protocol,
which runtimes are installed, the thread count. Imports no framework."""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

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
    #: Images this extraction will run (None: unknown). ``auto`` does not convert and time
    #: for fewer than ``choose.AUTO_MIN_IMAGES`` unless the choice is already remembered.
    n_images: int | None = None


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
