"""Peak memory of `pipeline extract` does not grow with the number of images.

Runs ``pipeline extract`` (random-init MobileNetV2-0.35, ``--pooling none``: at 160 px a
5x5x1280 spatial map, 125 KiB a row, lzf-compressed in the file) on N and on 8N random PNGs,
each in a fresh process, and reports each run's peak RSS net of the RSS of a process that
only imported what ``extract`` imports (Python, TensorFlow, pipeline). With the default N the
8N run writes more than 256 MiB of feature rows, so a writer holding the rows would grow by at
least that. Target: the net peak grows by less than 10% from N to 8N.

What still grows is per-image bookkeeping (the sample list, ids, hashes: a few KiB an image
whatever the row size), so the smaller the rows, the more images 256 MiB takes and the more
it shows: ``--input-size 96 --n 760`` (45 KiB rows) measures that case.

Then the heads on caches larger than memory (:mod:`pipeline.heads.out_of_core`), on caches
written directly with the same rows (no TensorFlow; ``--fit-only`` runs only these):

- ``fit_logreg_out_of_core_peak_rss_growth_8x_rows``: ``fit_cache_out_of_core(CACHE,
  "logreg")`` with the ranges ``--max-memory 256M`` reads, at N and 8N rows, net of a process
  that only imported what it imports. Target: < 10%.
- ``fit_head_256M_peak_rss_growth_8x_rows`` (the scale-out issue's measure): ``pipeline
  fit-head CACHE --head logreg --max-memory 256M`` at N rows (they fit: in memory) and 8N
  (they do not: out of core), net of the same command on a 32-row cache (imports, saving the
  run, plots and leaderboard). Target: < 10%.
- ``fit_head_out_of_core_rss_growth_per_feature_growth``: with ``--max-memory 1M`` (out of
  core at N and 8N, so both nets are near 0 and their ratio says nothing): how much the peak
  grew from N to 8N as a share of how much the features grew. Target: < 10%.
- ``fit_head_out_of_core_vs_in_memory_peak_rss`` at 8N: ``--max-memory 1M`` against
  ``--max-memory 1T`` (in memory), net peaks side by side, with their wall times.

Why the out-of-core fit used to grow (+28% from N to 8N, 38 -> 48 MiB net, measured with the
former ``SGDClassifier.partial_fit`` code): each of its chunks allocated new 8-32 MiB arrays
(the chunk, a shuffled copy, the scaled copy, SGD's float64 copy); glibc serves such sizes
from the heap once its dynamic mmap threshold has risen, and the freed blocks fragment, so the
peak crept up with the number of chunks. The fit now reads ranges of at most
``--max-memory``/8 (8 MiB at most) and steps on float32 minibatches of 64 rows, so no
allocation is larger than one range and its scaled copy.

Reuses ``peak_rss_mib`` and ``write_random_pngs`` of benchmarks/run.py (its
``memory_growth_4x_images`` measures pooled features at N and 4N; this one the spatial maps
of the scale-out issue, at 8N).

    python benchmarks/memory.py [--n 270] [--input-size 160] [--fit-only] [--out memory.json]

To measure another checkout side by side, run it from outside any checkout (``python -m
pipeline`` puts the working folder first on the path)::

    cd /tmp && PYTHONPATH=/path/to/other python /path/to/benchmarks/memory.py --extract-only
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RUN = Path(__file__).resolve().parent / "run.py"
CHANNELS = 1280  # MobileNetV2-0.35's last map; its side is input size / 32
IMPORTS = "import pipeline.cli, pipeline.extract.run, pipeline.bases.forward, tensorflow"
FIT_IMPORTS = ("import sklearn.linear_model, sklearn.calibration, pipeline.heads.out_of_core, "
               "pipeline.heads.metrics")
FIT = (FIT_IMPORTS + "; import sys; from pipeline.heads.out_of_core import "
       "fit_cache_out_of_core as f, chunk_bytes; f(sys.argv[1], 'logreg', "
       "max_bytes=chunk_bytes(256 << 20))")
#: Rows of the baseline cache of the fit-head measures (everything imported, little data).
BASELINE_ROWS = 32


def _run_module():
    spec = importlib.util.spec_from_file_location("benchmarks_run", RUN)
    module = importlib.util.module_from_spec(spec)
    sys.modules["benchmarks_run"] = module
    spec.loader.exec_module(module)
    return module


def extract_cmd(folder: Path, cache_dir: Path, size: int) -> list[str]:
    return [sys.executable, "-m", "pipeline", "extract", str(folder), "--base",
            "mobilenet_v2_0.35", "--weights", "none", "--input-size", str(size), "--pooling",
            "none", "--cache-dir", str(cache_dir), "--quiet"]


def measure_extract(n: int, px: int, size: int, work: Path) -> dict:
    bench = _run_module()
    baseline = bench.peak_rss_mib([sys.executable, "-c", IMPORTS])
    peaks = {}
    for k in (n, 8 * n):
        folder = bench.write_random_pngs(work / f"images_{k}", k, px, seed=k)
        peaks[k] = bench.peak_rss_mib(extract_cmd(folder, work / f"cache_{k}", size))
        shutil.rmtree(folder, ignore_errors=True)
    return extract_result(n, size, px, baseline, peaks)


def write_cache(path: Path, n: int, size: int, seed: int = 0) -> Path:
    """``n`` rows of the extract's spatial maps at ``size`` px: two noisy classes, stored
    as ``extract`` stores them (lzf chunks), written without TensorFlow."""
    from pipeline.cache import FeatureSetInfo, write_feature_set

    side = -(-size // 32)
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(n) % 2)
    centers = rng.normal(0, 0.3, size=(2, side, side, CHANNELS)).astype(np.float32)
    x = centers[y] + rng.normal(size=(n, side, side, CHANNELS)).astype(np.float32)
    n_tr, n_va = int(0.6 * n), int(0.2 * n)
    split = ["train"] * n_tr + ["validation"] * n_va + ["test"] * (n - n_tr - n_va)
    return write_feature_set(
        path, features=x, labels=y, ids=[f"c{y[i]}/{i:06d}.png" for i in range(n)],
        sha256=[f"{i:064x}" for i in range(n)], split=split,
        info=FeatureSetInfo(class_names=["a", "b"], dataset="memory", base="generated",
                            key=f"memory-{n}", pooling="none"))


def fit_head_cmd(cache: Path, max_memory: str, reports: Path) -> list[str]:
    return [sys.executable, "-m", "pipeline", "fit-head", str(cache), "--head", "logreg",
            "--max-memory", max_memory, "--jobs", "1", "--cv", "0", "--quiet",
            "--reports-dir", str(reports)]


def _timed_peak(bench, cmd: list[str]) -> tuple[float, float]:
    t0 = time.perf_counter()
    peak = bench.peak_rss_mib(cmd)
    return peak, time.perf_counter() - t0


def measure_fit(n: int, size: int, work: Path) -> list[dict]:
    """The out-of-core fit's and fit-head's net peak RSS at N and 8N rows, and fit-head out of
    core against in memory at 8N, side by side in this run."""
    bench = _run_module()
    caches = {k: write_cache(work / f"rows_{k}.h5", k, size, seed=k)
              for k in (BASELINE_ROWS, n, 8 * n)}
    fit_base = bench.peak_rss_mib([sys.executable, "-c", FIT_IMPORTS])
    api = {k: bench.peak_rss_mib([sys.executable, "-c", FIT, str(caches[k])]) - fit_base
           for k in (n, 8 * n)}
    peaks: dict[tuple[str, int], float] = {}
    secs: dict[tuple[str, int], float] = {}
    for budget in ("256M", "1M", "1T"):
        for k in (BASELINE_ROWS, n, 8 * n):
            if budget == "1T" and k == n:
                continue
            peaks[budget, k], secs[budget, k] = _timed_peak(
                bench, fit_head_cmd(caches[k], budget, work / f"reports_{budget}_{k}"))
    net = {key: peaks[key] - peaks[key[0], BASELINE_ROWS] for key in peaks}
    common = {"n": n, "row_kib": round(row_bytes(size) / 1024, 1),
              "load_avg": [round(x, 2) for x in os.getloadavg()]}
    out = [growth("fit_logreg_out_of_core_peak_rss_growth_8x_rows", api[n], api[8 * n],
                  import_rss_mib=round(fit_base, 1), **common)]
    def timings(budget: str) -> dict:
        return {"baseline_rss_mib": round(peaks[budget, BASELINE_ROWS], 1),
                "seconds_n": round(secs[budget, n], 1),
                "seconds_8n": round(secs[budget, 8 * n], 1), **common}

    out.append(growth("fit_head_256M_peak_rss_growth_8x_rows", net["256M", n],
                      net["256M", 8 * n], **timings("256M")))
    grew, rows_grew = net["1M", 8 * n] - net["1M", n], 7 * n * row_bytes(size) / 2**20
    out.append({"name": "fit_head_out_of_core_rss_growth_per_feature_growth",
                "value": round(100 * grew / rows_grew, 2), "unit": "%", "target": "< 10",
                "met": grew / rows_grew < 0.10,
                "detail": {"peak_growth_mib": round(grew, 1),
                           "feature_growth_mib": round(rows_grew, 1),
                           "net_n_mib": round(net["1M", n], 1),
                           "net_8n_mib": round(net["1M", 8 * n], 1), **timings("1M")}})
    ooc, mem = net["1M", 8 * n], net["1T", 8 * n]
    out.append({"name": "fit_head_out_of_core_vs_in_memory_peak_rss", "value": round(
        ooc / mem, 3), "unit": "ratio", "target": "< 0.5", "met": ooc / mem < 0.5,
        "detail": {"rows": 8 * n, "net_out_of_core_mib": round(ooc, 1),
                   "net_in_memory_mib": round(mem, 1),
                   "seconds_out_of_core": round(secs["1M", 8 * n], 1),
                   "seconds_in_memory": round(secs["1T", 8 * n], 1), **common}})
    return out


def growth(name: str, at_n: float, at_8n: float, **detail) -> dict:
    g = at_8n / at_n - 1
    return {"name": name, "value": round(100 * g, 1), "unit": "%", "target": "< 10",
            "met": g < 0.10, "detail": {"net_n_mib": round(at_n, 1),
                                        "net_8n_mib": round(at_8n, 1), **detail}}


def extract_result(n: int, size: int, px: int, baseline: float, peaks: dict) -> dict:
    net = {k: v - baseline for k, v in peaks.items()}
    growth = net[8 * n] / net[n] - 1
    return {"name": "extract_peak_rss_growth_8x_images", "value": round(100 * growth, 1),
            "unit": "%", "target": "< 10", "met": growth < 0.10,
            "detail": {"n": n, "input_size": size,
                       "rows_mib_8n": round(8 * n * row_bytes(size) / 2**20, 1),
                       "import_rss_mib": round(baseline, 1),
                       "peak_rss_n_mib": round(peaks[n], 1),
                       "peak_rss_8n_mib": round(peaks[8 * n], 1),
                       "net_n_mib": round(net[n], 1), "net_8n_mib": round(net[8 * n], 1),
                       "image_px": px, "load_avg": [round(x, 2) for x in os.getloadavg()]}}


def row_bytes(size: int) -> int:
    side = -(-size // 32)
    return side * side * CHANNELS * 4


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=270, help="N (8N rows exceed 256 MiB)")
    parser.add_argument("--input-size", type=int, default=160, help="model input size")
    parser.add_argument("--px", type=int, default=32, help="side of the random PNGs")
    parser.add_argument("--out", type=Path, help="write the result as JSON here")
    parser.add_argument("--extract-only", action="store_true",
                        help="skip the heads (e.g. to measure a checkout without them)")
    parser.add_argument("--fit-only", action="store_true",
                        help="only the heads, on generated caches (no TensorFlow)")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    result = []
    with tempfile.TemporaryDirectory(prefix="pipeline-memory-") as tmp:
        if not args.fit_only:
            result.append(measure_extract(args.n, args.px, args.input_size, Path(tmp)))
        if not args.extract_only:
            result += measure_fit(args.n, args.input_size, Path(tmp))
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
