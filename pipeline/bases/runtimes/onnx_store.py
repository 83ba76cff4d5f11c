"""Extractors converted to ONNX once per machine, and never loaded unverified.

A converted model is keyed by the extractor's identity (base, weights identity, input size,
layer, pooling, preprocessing) and the converter's versions. Beside ``<name>.onnx`` the project
writes ``<name>.onnx.json`` with the file's sha256 and that identity; a file is used only when
its bytes hash to the recorded sha256 under the expected identity (the bytes that were checked
are the bytes handed to the runtime), else it is converted again. A fresh conversion is checked
against the Keras model on random images before it is stored.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.bases.extractor import Extractor
from pipeline.bases.runtimes.base import ONNXRUNTIME, OPENVINO, installed
from pipeline.bases.runtimes.convert import DEFAULT_OPSET, keras_to_onnx
from pipeline.errors import PipelineError
from pipeline.fileio import (
    atomic_path,
    file_lock,
    json_sha256,
    read_json,
    utc_timestamp,
    write_json,
)
from pipeline.progress import Reporter

RUNTIMES_DIR_ENV = "PIPELINE_RUNTIMES_DIR"
#: float32 runtimes agree with TensorFlow to about 1e-6 of the feature scale; this is the
#: bar (relative to the largest reference feature) past which a runtime is not used.
RTOL_FLOAT32 = 1e-3
CONVERTER_PACKAGES = ("tensorflow-cpu", "tensorflow", "keras", "tf2onnx", "onnx")


class ConversionError(PipelineError):
    """The extractor could not be converted, or its conversion disagrees with Keras."""


def runtimes_dir() -> Path:
    """Per-machine folder of converted models and remembered choices:
    ``$PIPELINE_RUNTIMES_DIR``, else ``$XDG_CACHE_HOME/pipeline/runtimes``, else
    ``~/.cache/pipeline/runtimes``."""
    if os.environ.get(RUNTIMES_DIR_ENV):
        return Path(os.environ[RUNTIMES_DIR_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "pipeline" / "runtimes"


def package_versions(packages: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for pkg in packages:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out[pkg] = importlib.metadata.version(pkg)
    return out


def model_identity(extractor: Extractor) -> dict[str, Any]:
    """What the converted graph depends on: the extractor and the converter."""
    return {"extractor": extractor.key_options(), "opset": DEFAULT_OPSET,
            "versions": package_versions(CONVERTER_PACKAGES)}


def disagreement(reference: np.ndarray, got: np.ndarray, rtol: float) -> str | None:
    """Why ``got`` is not ``reference`` within ``rtol`` of the largest reference value, or
    None when it is."""
    reference, got = np.asarray(reference, np.float64), np.asarray(got, np.float64)
    if reference.shape != got.shape:
        return f"features of shape {got.shape[1:]}, expected {reference.shape[1:]}"
    scale = max(float(np.abs(reference).max(initial=0.0)), 1e-12)
    err = float(np.abs(reference - got).max(initial=0.0)) / scale
    if not np.isfinite(got).all() or err > rtol:
        return f"features differ from TensorFlow's by {err:.2g} of their scale (> {rtol:g})"
    return None


def random_images(n: int, size: int, seed: int = 0) -> np.ndarray:
    """Float32 RGB images in [0, 255], fixed by ``seed`` (for checks and timing)."""
    rng = np.random.default_rng(seed)
    return rng.uniform(0.0, 255.0, (n, size, size, 3)).astype(np.float32)


def converted_model(extractor: Extractor, store: Path | None, report: Reporter) -> bytes:
    """The extractor's ONNX graph (serialized, sha256-verified), converting it once per
    machine. ``ConversionError`` when it cannot be converted or does not match Keras."""
    identity = model_identity(extractor)
    digest = json_sha256(identity)
    folder = (store or runtimes_dir()) / "onnx"
    path = folder / f"{extractor.spec.name}-{digest[:20]}.onnx"
    sidecar = path.with_name(path.name + ".json")
    with file_lock(path.with_name(path.name + ".lock")):
        data = _verified_bytes(path, sidecar, digest, report)
        if data is not None:
            return data
        start = time.perf_counter()
        report.line(f"converting {extractor.spec.name} ({extractor.input_size} px"
                    f"{', cut at ' + extractor.layer if extractor.layer else ''}) to ONNX, "
                    "once on this machine ...")
        data = _convert(extractor)
        _check_conversion(extractor, data)
        with atomic_path(path, suffix=".onnx") as tmp:
            tmp.write_bytes(data)
        write_json(sidecar, {"sha256": hashlib.sha256(data).hexdigest(), "identity": identity,
                             "digest": digest, "written_at": utc_timestamp(),
                             "seconds": round(time.perf_counter() - start, 1)})
    return data


def _verified_bytes(path: Path, sidecar: Path, digest: str, report: Reporter) -> bytes | None:
    """The stored model's bytes when its sidecar vouches for them, else None (and one line
    when a file is there but does not verify)."""
    if not path.exists():
        return None
    record = read_json(sidecar, default=None)
    data = path.read_bytes()
    if not isinstance(record, dict) or record.get("digest") != digest or \
            record.get("sha256") != hashlib.sha256(data).hexdigest():
        report.warn(f"{path}: does not match the sha256 recorded beside it; converting again")
        return None
    return data


def _convert(extractor: Extractor) -> bytes:
    import tensorflow as tf

    s = extractor.input_size
    spec = tf.TensorSpec([None, s, s, 3], tf.float32, name="pixels")
    try:
        with _quiet_converter():
            proto = keras_to_onnx(extractor.model, spec, DEFAULT_OPSET)
    except Exception as e:  # the converter fails in many ways; each is a fallback, not a crash
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise ConversionError(f"converting {extractor.spec.name} to ONNX failed "
                              f"({type(e).__name__}: {first})") from None
    return proto.SerializeToString()


@contextlib.contextmanager
def _quiet_converter() -> Any:
    """tf2onnx logs every step at INFO; keep the extraction's output to its own lines."""
    import logging

    logger = logging.getLogger("tf2onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _check_conversion(extractor: Extractor, data: bytes) -> None:
    """The converted graph against the Keras model on two random images (in ONNX Runtime,
    else OpenVINO): a conversion that changes the numbers is never stored."""
    from pipeline.bases.forward import forward_fn

    images = random_images(2, extractor.input_size)
    reference = forward_fn(extractor)(images)
    if installed(ONNXRUNTIME):
        from pipeline.bases.runtimes.onnxruntime import OnnxRuntime

        got = OnnxRuntime(data).forward(images)
    elif installed(OPENVINO):
        from pipeline.bases.runtimes.openvino import OpenVinoRuntime

        got = OpenVinoRuntime(data).forward(images)
    else:  # pragma: no cover - a runtime needing the conversion is installed to get here
        return
    problem = disagreement(reference, got, RTOL_FLOAT32)
    if problem:
        raise ConversionError(f"the ONNX conversion of {extractor.spec.name} is wrong: {problem}")
