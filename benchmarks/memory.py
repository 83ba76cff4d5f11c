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

Then fits ``logreg`` out of core (:mod:`pipeline.heads.out_of_core`, as ``fit-head
--max-memory`` does over budget) on each of the two caches and reports the same growth of its
net peak RSS.

Reuses ``peak_rss_mib`` and ``write_random_pngs`` of benchmarks/run.py (its
``memory_growth_4x_images`` measures pooled features at N and 4N; this one the spatial maps
of the scale-out issue, at 8N).

    python benchmarks/memory.py [--n 270] [--input-size 160] [--out memory.json]

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
from pathlib import Path

RUN = Path(__file__).resolve().parent / "run.py"
CHANNELS = 1280  # MobileNetV2-0.35's last map; its side is input size / 32
IMPORTS = "import pipeline.cli, pipeline.extract.run, pipeline.bases.forward, tensorflow"
FIT_IMPORTS = "import sklearn.linear_model, pipeline.heads.out_of_core, pipeline.heads.metrics"
FIT = (FIT_IMPORTS + "; import sys; from pipeline.heads.out_of_core import "
       "fit_cache_out_of_core as f; f(sys.argv[1], 'logreg')")


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


def measure(n: int, px: int, size: int, work: Path, fit: bool = True) -> list[dict]:
    bench = _run_module()
    baseline = bench.peak_rss_mib([sys.executable, "-c", IMPORTS])
    fit_baseline = bench.peak_rss_mib([sys.executable, "-c", FIT_IMPORTS]) if fit else 0.0
    peaks, fits = {}, {}
    for k in (n, 8 * n):
        folder = bench.write_random_pngs(work / f"images_{k}", k, px, seed=k)
        peaks[k] = bench.peak_rss_mib(extract_cmd(folder, work / f"cache_{k}", size))
        shutil.rmtree(folder, ignore_errors=True)
        cache = next((work / f"cache_{k}").glob("*.h5"))
        if fit:
            fits[k] = bench.peak_rss_mib([sys.executable, "-c", FIT, str(cache)]) - fit_baseline
    if not fit:
        return [extract_result(n, size, px, baseline, peaks)]
    return [extract_result(n, size, px, baseline, peaks), {
        "name": "fit_logreg_out_of_core_peak_rss_growth_8x_rows",
        "value": round(100 * (fits[8 * n] / fits[n] - 1), 1), "unit": "%", "target": "< 10",
        "met": fits[8 * n] / fits[n] - 1 < 0.10,
        "detail": {"net_n_mib": round(fits[n], 1), "net_8n_mib": round(fits[8 * n], 1),
                   "import_rss_mib": round(fit_baseline, 1)}}]


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
                        help="skip the out-of-core fit (e.g. to measure a checkout without it)")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with tempfile.TemporaryDirectory(prefix="pipeline-memory-") as tmp:
        result = measure(args.n, args.px, args.input_size, Path(tmp), not args.extract_only)
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
