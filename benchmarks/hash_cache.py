"""The hash cache on a cache hit: ``python benchmarks/hash_cache.py [--images 2000]``.

Generates a class folder of random PNGs (mtimes set 10 minutes back, as on a real dataset),
extracts it once (``mobilenet_v2_0.35``, ``--weights none``, 32 px: the features do not
matter here), then times cache hits of ``run_extraction`` in this process, alternating
(a b b a a b ...): (a) with the hash cache (the default: every file's stat matches, nothing is
read), (b) with ``--rehash`` (every file read and hashed, as before the hash cache). Prints
the medians, their ratio, and where the time goes (``load_dataset`` alone both ways), with the
load average: the machine may be shared. The files are in the page cache, so (b) hashes from
memory; on a cold disk or object storage the gap is wider.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from pipeline.data.hash_cache import HASHES_DIR, HashCache, Hasher  # noqa: E402
from pipeline.data.sources import load_dataset  # noqa: E402
from pipeline.engines import EngineOptions  # noqa: E402
from pipeline.extract import run_extraction  # noqa: E402

TINY = dict(bases=["mobilenet_v2_0.35"], weights="none", input_size=32, batch_size=64,
            quiet=True)


def make_folder(root: Path, n: int, size: int) -> Path:
    rng = np.random.default_rng(0)
    for i in range(n):
        path = root / f"class{i % 2}" / f"img{i:05d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
    when = time.time() - 600
    for f in root.rglob("*"):
        os.utime(f, (when, when))
    return root


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--size", type=int, default=160, help="image side in pixels")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-hash-cache-") as tmp:
        data = make_folder(Path(tmp) / "data", args.images, args.size)
        mb = sum(f.stat().st_size for f in data.rglob("*.png")) / 1e6
        cache = Path(tmp) / "cache"
        first = run_extraction(data, cache_dir=cache, **TINY)[0]
        assert not first.hit
        ways = {"hash_cache": EngineOptions(), "rehash": EngineOptions(rehash=True)}
        hits: dict[str, list[float]] = {k: [] for k in ways}
        lists: dict[str, list[float]] = {k: [] for k in ways}
        load = os.getloadavg()
        for r in range(args.repeats):
            for name in (list(ways) if r % 2 == 0 else list(reversed(ways))):
                hits[name].append(timed(lambda n=name: _hit(data, cache, ways[n])))
                lists[name].append(timed(lambda n=name: load_dataset(data, hasher=Hasher(
                    HashCache(cache / HASHES_DIR), rehash=ways[n].rehash))))
        med = {k: statistics.median(v) for k, v in hits.items()}
        med_list = {k: statistics.median(v) for k, v in lists.items()}
        print(f"{args.images} PNGs of {args.size}x{args.size} ({mb:.0f} MB), "
              f"load average at start {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, "
              f"{os.cpu_count()} cores, python {sys.version.split()[0]}")
        print(f"{'':28}{'hash cache':>12}{'--rehash':>12}{'ratio':>8}")
        print(f"{'cache-hit extract (s)':28}{med['hash_cache']:12.3f}{med['rehash']:12.3f}"
              f"{med['rehash'] / med['hash_cache']:8.1f}")
        print(f"{'  of which load_dataset (s)':28}{med_list['hash_cache']:12.3f}"
              f"{med_list['rehash']:12.3f}{med_list['rehash'] / med_list['hash_cache']:8.1f}")
        print(f"(median of {args.repeats}, alternating; all runs: {hits}, listing {lists})")


def _hit(data: Path, cache: Path, engine: EngineOptions) -> None:
    result = run_extraction(data, cache_dir=cache, engine=engine, **TINY)[0]
    assert result.hit


if __name__ == "__main__":
    main()
