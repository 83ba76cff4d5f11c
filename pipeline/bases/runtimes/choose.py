"""``--runtime auto``: time the installed runtimes on a couple of batches for this extractor,
keep the fastest that agrees with TensorFlow, and remember the choice on this machine.

The choice is keyed by what changes the speed: base, input size, cut, pooling, precision,
batch size, the CPU model and core count, and the runtimes' package versions. It lives in
``choices.json`` in the per-machine runtimes folder (written atomically under a lock). The first
run pays the conversion and the timing, and says how long they took and what was chosen.
"""

from __future__ import annotations

import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.bases.extractor import Extractor
from pipeline.bases.runtimes.base import (
    BFLOAT16,
    NEEDS,
    ONNXRUNTIME,
    OPENVINO,
    TENSORFLOW,
    Runtime,
    RuntimeRequest,
    installed,
    threads,
)
from pipeline.bases.runtimes.named import open_named
from pipeline.bases.runtimes.onnx_store import (
    RTOL_FLOAT32,
    disagreement,
    package_versions,
    random_images,
    runtimes_dir,
)
from pipeline.fileio import file_lock, json_sha256, read_json, utc_timestamp, write_json
from pipeline.progress import Reporter

#: A converted runtime must beat TensorFlow by this factor to be chosen: timing on a couple
#: of batches is noisy, and TensorFlow needs no conversion.
MARGIN = 1.05
#: Timed batches per runtime (after one warm-up each), interleaved; the fastest counts.
ROUNDS = 3
#: The timing batch is the extraction's batch size, capped to keep the first run short.
MAX_TIMING_BATCH = 32
#: Fewer images than this are not worth a first conversion and timing (tens of seconds; a
#: faster runtime saves a few milliseconds an image): auto runs them in TensorFlow unless a
#: choice is already remembered for this extractor on this machine.
AUTO_MIN_IMAGES = 256
RUNTIME_PACKAGES = ("tensorflow-cpu", "tensorflow", "keras", "onnxruntime", "openvino",
                    "tf2onnx", "onnx")
CHOICES = "choices.json"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def choice_key(extractor: Extractor, request: RuntimeRequest) -> tuple[str, dict[str, Any]]:
    """The key of a remembered choice, and what it covers."""
    what = {"base": extractor.spec.name, "input_size": extractor.input_size,
            "layer": extractor.layer, "pooling": extractor.pooling,
            "precision": request.precision, "batch_size": request.batch_size,
            "cpu": cpu_model(), "cores": threads(),
            "versions": package_versions(RUNTIME_PACKAGES)}
    return json_sha256(what), what


def choose_runtime(extractor: Extractor, request: RuntimeRequest, report: Reporter) -> Runtime:
    """The remembered runtime for this extractor on this machine, or the fastest, timed now
    (TensorFlow, untimed, for an extraction too small to repay a first conversion)."""
    if request.precision == BFLOAT16:  # OpenVINO is the only bfloat16 runtime
        return open_named(extractor, OPENVINO, request, report)
    candidates = [name for name in (ONNXRUNTIME, OPENVINO) if installed(name)]
    if not candidates:
        return open_named(extractor, TENSORFLOW, request, report)
    store = request.store or runtimes_dir()
    key, what = choice_key(extractor, request)
    remembered = _remembered(store, key)
    if remembered is not None:
        runtime = open_named(extractor, remembered, request, report)
        if runtime.name == remembered:
            report.line(f"runtime: {remembered} (auto, remembered for this machine)")
            return runtime
    if request.n_images is not None and request.n_images < AUTO_MIN_IMAGES:
        return open_named(extractor, TENSORFLOW, request, report)
    start = time.perf_counter()
    runtimes = _open_all(extractor, [TENSORFLOW, *candidates], request, report)
    opened = time.perf_counter() - start
    rates = time_runtimes(runtimes, random_images(min(request.batch_size, MAX_TIMING_BATCH),
                                          extractor.input_size), report)
    best = _fastest(rates)
    seconds = time.perf_counter() - start
    _remember(store, key, dict(what, runtime=best, images_per_s=rates, chosen_at=utc_timestamp(),
                               seconds=round(seconds, 1)))
    report.line(f"runtime auto: {best} for {extractor.spec.name} at {extractor.input_size} px "
                f"({', '.join(f'{n} {r:.0f}' for n, r in rates.items())} images/s); chosen in "
                f"{seconds:.0f} s ({opened:.0f} s conversion and loading), remembered for "
                "this machine")
    return next(r for r in runtimes if r.name == best)


def _open_all(extractor: Extractor, names: list[str], request: RuntimeRequest,
              report: Reporter) -> list[Runtime]:
    """Each runtime in ``names`` that opens (a failed one falls back to TensorFlow with one
    line: it is then left out rather than timed twice)."""
    out: list[Runtime] = []
    for name in names:
        runtime = open_named(extractor, name, request, report)
        if runtime.name == name:
            out.append(runtime)
    return out


def time_runtimes(runtimes: list[Runtime], batch: np.ndarray, report: Reporter,
                  rounds: int = ROUNDS) -> dict[str, float]:
    """Images/s of each runtime that agrees with TensorFlow (the first) on ``batch``: one
    warm-up, then ``rounds`` interleaved timed batches, fastest kept."""
    reference = runtimes[0].forward(batch)
    agreeing = [runtimes[0]]
    for runtime in runtimes[1:]:
        problem = disagreement(reference, runtime.forward(batch), RTOL_FLOAT32)
        if problem:
            report.warn(f"runtime {runtime.name} left out: {problem}")
        else:
            agreeing.append(runtime)
    best = {r.name: float("inf") for r in agreeing}
    for round_ in range(rounds):
        order = agreeing if round_ % 2 == 0 else agreeing[::-1]
        for runtime in order:
            t0 = time.perf_counter()
            runtime.forward(batch)
            best[runtime.name] = min(best[runtime.name], time.perf_counter() - t0)
    return {name: round(len(batch) / max(t, 1e-9), 1) for name, t in best.items()}


def _fastest(rates: dict[str, float]) -> str:
    """The fastest runtime, TensorFlow unless another beats it by ``MARGIN``."""
    name, rate = max(rates.items(), key=lambda item: item[1])
    return name if rate >= MARGIN * rates[TENSORFLOW] else TENSORFLOW


def _choices(store: Path) -> dict[str, Any]:
    data = read_json(store / CHOICES, default={})  # a damaged file is timed again, not fatal
    return data if isinstance(data, dict) else {}


def _remembered(store: Path, key: str) -> str | None:
    entry = _choices(store).get(key)
    name = entry.get("runtime") if isinstance(entry, dict) else None
    ok = isinstance(name, str) and name in NEEDS and installed(name)  # a runtime, not auto
    return name if ok else None


def _remember(store: Path, key: str, entry: dict[str, Any]) -> None:
    with file_lock(store / (CHOICES + ".lock")):
        choices = _choices(store)
        choices[key] = entry
        write_json(store / CHOICES, choices)
