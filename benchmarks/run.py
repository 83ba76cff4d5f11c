"""Benchmarks of the feature-extraction cache: ``python benchmarks/run.py [--quick] [--out F]``.

Six measures, each a small function below, every ratio measured side by side in one run
(same images, same base, same machine):

1. ``extract_vs_*``      extraction throughput: ``pipeline`` (run_extraction) against the
                         tutorials' recipe (image_dataset_from_directory + model.predict +
                         np.save) and against the bare forward pass on pre-decoded batches.
2. ``*_vs_e2e_epoch``    one dense head fit, the default sweep, its median configuration and
                         a linear probe on the cache against one epoch of frozen-base
                         end-to-end training on the same training images (median of 3).
2b. ``sweep_scaling_10x_rows``  the default sweep on 50,000 against 5,000 synthetic rows.
3. ``cache_hit_*`` and ``increment_*``  a repeated extract, and 10% new images against a full
                         re-extraction.
4. ``memory_growth``     peak RSS of extraction on N and 4N generated images (subprocesses).
5. ``cache_read_*``      feature rows/s loaded from the HDF5 cache against ``np.load`` of the
                         same array from ``.npy``.
6. ``cli_startup_*``     ``pipeline runs --json`` on a reports folder of 20 runs against
                         ``python -c "import sklearn"`` (fresh processes, alternating).

Prints the machine, a table and a Markdown table; ``--out`` writes the JSON list of
``{name, value, unit, target, met, detail}``. ``--only NAME`` runs one measure
(``throughput``, ``heads``, ``scaling``, ``cache``, ``memory``, ``reads``, ``runtimes``,
``startup``). Timings are
wall-clock on a machine that may be shared: read them with the load averages printed in the
header.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

MEASURES = ("throughput", "heads", "scaling", "cache", "memory", "reads", "runtimes",
            "startup")
DEFAULT_BASE = "efficientnet_lite0"
MEMORY_BASE = "mobilenet_v2_0.35"


# --------------------------------------------------------------------------- results


@dataclass
class Result:
    """One row of the report."""

    name: str
    value: float
    unit: str
    target: str  # e.g. ">= 0.9"
    met: bool
    detail: dict[str, Any] = field(default_factory=dict)


def check(value: float, target: str) -> bool:
    """Whether ``value`` meets ``target`` (``">= x"``, ``"> x"``, ``"<= x"`` or ``"< x"``)."""
    op, _, num = target.strip().partition(" ")
    x = float(num)
    ops: dict[str, Callable[[float, float], bool]] = {
        ">=": lambda a, b: a >= b, ">": lambda a, b: a > b,
        "<=": lambda a, b: a <= b, "<": lambda a, b: a < b,
    }
    if op not in ops:
        raise ValueError(f"unknown target {target!r}")
    return bool(ops[op](value, x))


def result(name: str, value: float, unit: str, target: str, **detail: Any) -> Result:
    return Result(name, round(float(value), 4), unit, target, check(value, target), detail)


@dataclass
class Sizes:
    """How big each measure runs: ``--quick`` (about 10 minutes on 2 cores) or full."""

    n_images: int | None  # ELPV subset for measures 1-3 and 5 (None: all 2,624)
    memory_n: int  # N for the memory measure (it also runs 4N)
    memory_image_px: int
    bulk_rows: int  # rows of the bulk cache in the read measure
    repeats: int = 2  # throughput: each way this many times (order alternating), best kept

    @classmethod
    def for_mode(cls, quick: bool) -> Sizes:
        if quick:
            return cls(n_images=1024, memory_n=256, memory_image_px=160, bulk_rows=20_000)
        return cls(n_images=None, memory_n=512, memory_image_px=160, bulk_rows=100_000)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


# --------------------------------------------------------------------------- data


def elpv_labels() -> list[tuple[str, int]]:
    """``(relative path, label)`` of every ELPV image; label 1 = defective (p >= 0.5)."""
    from pipeline.data.builtin import elpv_root

    rows = []
    with open(elpv_root() / "labels.csv", encoding="ascii") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2:
                rows.append((parts[0], int(float(parts[1]) >= 0.5)))
    return rows


def pick_subset(rows: list[Any], n: int | None) -> list[Any]:
    """``n`` rows spread evenly over ``rows`` (all of them for ``None``), order kept."""
    if n is None or n >= len(rows):
        return list(rows)
    idx = np.linspace(0, len(rows) - 1, n).round().astype(int)
    return [rows[i] for i in np.unique(idx)]


CLASS_NAMES = ("functional", "defective")


def link_class_folder(root: Path, rows: list[tuple[str, int]], src: Path) -> Path:
    """A folder of class subfolders holding ``src / rel`` for every row: hard links where
    the file system allows, else copies (the data layer refuses symlinks that leave the
    dataset root)."""
    for rel, label in rows:
        dst = root / CLASS_NAMES[label] / Path(rel).name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if not dst.exists():
            try:
                os.link(src / rel, dst)
            except OSError:
                shutil.copyfile(src / rel, dst)
    return root


def write_random_pngs(root: Path, n: int, px: int, seed: int = 0) -> Path:
    """``n`` random RGB PNGs of ``px x px`` in two class subfolders under ``root``."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for i in range(n):
        arr = rng.integers(0, 256, (px, px, 3), dtype=np.uint8)
        path = root / f"c{i % 2}" / f"img{i:05d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr).save(path, compress_level=1)
    return root


def warm_page_cache(folder: Path) -> int:
    """Read every file once so no way of extracting pays the first disk read alone."""
    total = 0
    for p in sorted(folder.rglob("*.png")):
        total += len(p.read_bytes())
    return total


class Context:
    """What several measures share: the temp folder, the ELPV subset, one extracted cache."""

    def __init__(self, sizes: Sizes, base: str, tmp: Path):
        self.sizes = sizes
        self.base = base
        self.tmp = tmp
        self._folder: Path | None = None
        self._cache: Path | None = None
        self._warm = False
        self.batches: list[np.ndarray] | None = None  # pre-decoded images for way (c)

    def rows(self) -> list[tuple[str, int]]:
        return pick_subset(elpv_labels(), self.sizes.n_images)

    @property
    def folder(self) -> Path:
        """The ELPV subset as a class-subfolder tree of hard links or copies (built once)."""
        if self._folder is None:
            from pipeline.data.builtin import elpv_root

            self._folder = link_class_folder(self.tmp / "elpv_subset", self.rows(), elpv_root())
            warm_page_cache(self._folder)
        return self._folder

    @property
    def n_images(self) -> int:
        return sum(1 for _ in self.folder.rglob("*.png"))

    def fresh_dir(self, name: str) -> Path:
        d = self.tmp / name
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        return d

    def warm_up(self) -> None:
        """Start TensorFlow's runtime (thread pools, oneDNN kernels for full batches) before
        anything is timed, so the first way measured does not pay it alone."""
        if self._warm:
            return
        from pipeline.bases import build_extractor
        from pipeline.bases.forward import forward_fn

        ex = build_extractor(self.base, weights="imagenet")
        fn = forward_fn(ex)
        for n in (32, 32, self.n_images % 32 or 32):
            fn(np.zeros((n, ex.input_size, ex.input_size, 3), np.float32))
        self._warm = True

    def extract(self, folder: Path, cache_dir: Path) -> tuple[float, Any]:
        """Wall time of one ``run_extraction`` call (model build, hashing, writing included)."""
        from pipeline.extract import run_extraction

        return timed(lambda: run_extraction(folder, [self.base], weights="imagenet",
                                            cache_dir=cache_dir, quiet=True)[0])

    def cache(self) -> Path:
        """A cache of the subset (the one measure 1 wrote, or a new one)."""
        if self._cache is None:
            self.warm_up()
            _, res = self.extract(self.folder, self.fresh_dir("cache_shared"))
            self._cache = res.path
        return self._cache


# --------------------------------------------------------------------------- 1. throughput


def way_pipeline(ctx: Context) -> tuple[float, dict[str, Any]]:
    """(a) ``run_extraction`` into a fresh cache."""
    seconds, res = ctx.extract(ctx.folder, ctx.fresh_dir("cache_a"))
    assert res.n_new == ctx.n_images, (res.n_new, ctx.n_images)
    ctx._cache = res.path
    return seconds, {"extraction_loop_s": round(res.seconds, 2),
                     "extraction_loop_images_per_s": round(res.images_per_s, 1)}


def way_tutorial(ctx: Context) -> tuple[float, dict[str, Any]]:
    """(b) The tutorials' recipe: image_dataset_from_directory + model.predict + np.save."""
    import keras

    from pipeline.bases import build_extractor

    out = ctx.fresh_dir("tutorial_out")

    def run() -> int:
        ex = build_extractor(ctx.base, weights="imagenet")
        s = ex.input_size
        ds = keras.utils.image_dataset_from_directory(
            ctx.folder, image_size=(s, s), batch_size=32, shuffle=False, verbose=False)
        features = ex.model.predict(ds, verbose=0)
        # Labels from the file list (no second decode of the images).
        labels = np.array([ds.class_names.index(Path(p).parent.name) for p in ds.file_paths])
        np.save(out / "features.npy", features)
        np.save(out / "labels.npy", labels)
        return len(features)

    seconds, n = timed(run)
    assert n == ctx.n_images
    return seconds, {}


def predecode(folder: Path, size: int, batch_size: int = 32) -> list[np.ndarray]:
    """Every image of ``folder`` decoded and resized once, as float32 batches in memory."""
    from pipeline.data.reader import read_batches

    paths = [str(p) for p in sorted(folder.rglob("*.png"))]
    return [images[0] for _, _, images in read_batches(paths, [size], batch_size)]


def way_forward(ctx: Context) -> tuple[float, dict[str, Any]]:
    """(c) The bare forward pass on pre-decoded batches: the faster of the compiled
    ``forward_fn`` (what ``pipeline`` calls) and ``model.predict_on_batch``."""
    from pipeline.bases import build_extractor, get_base
    from pipeline.bases.forward import forward_fn

    if ctx.batches is None:  # decoded once, outside the timings
        ctx.batches = predecode(ctx.folder, get_base(ctx.base).default_size)
    batches = ctx.batches

    def with_forward_fn() -> float:
        t_build, ex = timed(lambda: build_extractor(ctx.base, weights="imagenet"))
        fn = forward_fn(ex)
        for b in batches:
            fn(b)
        return t_build

    def with_predict_on_batch() -> None:
        ex = build_extractor(ctx.base, weights="imagenet")
        for b in batches:
            np.asarray(ex.model.predict_on_batch(b))

    t_fn, t_build = timed(with_forward_fn)
    t_pob, _ = timed(with_predict_on_batch)
    return min(t_fn, t_pob), {"forward_fn_s": round(t_fn, 2),
                              "predict_on_batch_s": round(t_pob, 2),
                              "model_build_s": round(t_build, 2),
                              "ceiling": "forward_fn" if t_fn <= t_pob else "predict_on_batch"}


def best_runs(ways: dict[str, Callable[[], tuple[float, dict[str, Any]]]], repeats: int
              ) -> dict[str, tuple[float, dict[str, Any], list[float]]]:
    """Run every way ``repeats`` times, order reversed each round (a b c, c b a, ...); keep
    each way's fastest run (its detail) and all its times."""
    best: dict[str, tuple[float, dict[str, Any], list[float]]] = {}
    names = list(ways)
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            t, detail = ways[name]()
            times = [*best[name][2], t] if name in best else [t]
            if name not in best or t < best[name][0]:
                best[name] = (t, detail, times)
            else:
                best[name] = (best[name][0], best[name][1], times)
    return best


def measure_throughput(ctx: Context) -> list[Result]:
    """1. Images/s three ways, model build (about 1 s) included in all three alike; each way
    runs ``repeats`` times in alternating order and its best run counts."""
    ctx.warm_up()
    n = ctx.n_images
    best = best_runs({"a": lambda: way_pipeline(ctx), "b": lambda: way_tutorial(ctx),
                      "c": lambda: way_forward(ctx)}, ctx.sizes.repeats)
    (t_a, d_a, all_a), (t_b, d_b, all_b), (t_c, d_c, all_c) = (best[k] for k in "abc")
    ctx.batches = None
    d_a, d_b, d_c = (dict(d, all_runs_s=[round(t, 2) for t in ts])
                     for d, ts in ((d_a, all_a), (d_b, all_b), (d_c, all_c)))
    rate = {k: n / t for k, t in (("a", t_a), ("b", t_b), ("c", t_c))}
    common = {"images": n, "base": ctx.base, "includes": "model build, in all three",
              "pipeline_images_per_s": round(rate["a"], 1),
              "tutorial_images_per_s": round(rate["b"], 1),
              "forward_images_per_s": round(rate["c"], 1)}
    return [
        result("extract_images_per_s", rate["a"], "images/s", "> 0", **common, **d_a),
        result("extract_vs_forward", rate["a"] / rate["c"], "ratio", ">= 0.9",
               pipeline_s=round(t_a, 2), forward_s=round(t_c, 2), **d_c),
        result("extract_vs_tutorial", rate["a"] / rate["b"], "ratio", ">= 1.0",
               pipeline_s=round(t_a, 2), tutorial_s=round(t_b, 2), **d_b),
    ]


# --------------------------------------------------------------------------- 2. heads


# Kornblith et al.'s linear probe: L2 logistic regression over a grid of C, 10 configurations.
LINEAR_PROBE_SWEEP = [{"kind": "logreg", "C": [float(c) for c in np.logspace(-4, 1, 10)]}]


def run_sweep(cache: Path, heads: Any = None) -> tuple[float, dict[str, Any]]:
    """A head sweep of ``pipeline.runs.fit_heads`` on one cache (nothing saved); ``None``
    is the default sweep. Selection on validation (``cv=0``): the timing must not depend on
    whether the subset's validation split is small enough for ``cv="auto"`` to switch on."""
    from pipeline.runs import fit_heads

    seconds, res = timed(lambda: fit_heads([cache], heads=heads, save=False, quiet=True, cv=0))
    failed = [c.config.label for c in res.candidates if c.error]
    best = res.best
    return seconds, {
        "n_configs": len(res.candidates), "failed": failed,
        "fit_s_by_config": {c.config.label: round(c.fit_seconds, 2) for c in res.candidates},
        "config_s": [c.fit_seconds + c.predict_seconds for c in res.candidates if not c.error],
        "best": best.config.label,
        "best_validation_balanced_accuracy": round(best.validation["balanced_accuracy"], 4),
    }


def image_dataset(paths: list[str], labels: np.ndarray, size: int, batch_size: int = 32) -> Any:
    """A tf.data pipeline of decoded, resized training images (float32 in [0, 255])."""
    import tensorflow as tf

    def load(path: tf.Tensor, label: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        img = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        img = tf.image.resize(tf.cast(img, tf.float32), (size, size), method="bilinear")
        return img, label

    return (tf.data.Dataset.from_tensor_slices((paths, labels.astype(np.int32)))
            .shuffle(len(paths), seed=0)
            .map(load, num_parallel_calls=tf.data.AUTOTUNE)
            .batch(batch_size)
            .prefetch(tf.data.AUTOTUNE))


def run_end_to_end_epoch(ctx: Context, cache: Path) -> tuple[float, dict[str, Any]]:
    """One epoch of frozen base + Dropout/Dense head with ``model.fit`` on the cache's
    training images: the median of 3 epochs (model build and compile not timed; the first
    epoch's tracing is, the median leaves it out)."""
    import keras

    from pipeline.bases import build_extractor
    from pipeline.cache import load_feature_set

    fs = load_feature_set(cache)
    train = fs.mask("train")
    root = Path(fs.meta["dataset_root"])
    paths = [str(root / i) for i in fs.ids[train]]
    labels = fs.labels[train]
    ex = build_extractor(ctx.base, weights="imagenet")
    ex.model.trainable = False
    keras.utils.set_random_seed(0)
    inp = keras.Input((ex.input_size, ex.input_size, 3))
    x = ex.model(inp, training=False)
    x = keras.layers.Dropout(0.2)(x)
    out = keras.layers.Dense(len(fs.class_names))(x)
    model = keras.Model(inp, out)
    model.compile(optimizer="adam", metrics=["accuracy"],
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    ds = image_dataset(paths, labels, ex.input_size)
    epochs = [timed(lambda: model.fit(ds, epochs=1, shuffle=False, verbose=0))[0]
              for _ in range(3)]
    return float(np.median(epochs)), {"train_images": len(paths),
                                      "epochs_s": [round(e, 2) for e in epochs]}


def run_dense_fit(cache: Path, repeats: int = 3) -> tuple[float, dict[str, Any]]:
    """One ``dense`` head (its defaults) fitted on the cache's training rows with early
    stopping on validation, as a sweep fits it: the median of ``repeats`` fits."""
    from pipeline.cache import load_feature_set
    from pipeline.heads import make_head
    from pipeline.heads.sweep import prepare

    d = prepare(load_feature_set(cache))
    times, epochs = [], []
    for _ in range(repeats):
        head = make_head("dense", n_classes=len(d.class_names))
        t, _ = timed(lambda head=head: head.fit(d.x["train"], d.y["train"],
                                                d.x["validation"], d.y["validation"]))
        times.append(t)
        epochs.append(len(head.history["loss"]))
    return float(np.median(times)), {"dense_fit_s": [round(t, 3) for t in times],
                                     "dense_epochs": epochs}


def measure_heads(ctx: Context) -> list[Result]:
    """2. Heads on the cache vs one end-to-end epoch (median of 3, model build excluded).

    ``dense_head_vs_e2e_epoch``: one ``dense`` head fit (median of 3) against the epoch.
    ``default_sweep_vs_e2e_epoch``: the whole default sweep (11 configurations, the dense
    head and a random forest among them) against the epoch; ``median_config_vs_e2e_epoch``:
    the epoch against the median configuration's fit + validation predict inside that sweep.
    ``linear_probe_sweep_vs_e2e_epoch``: a 10-configuration linear probe against the epoch.
    The head kinds' modules (scikit-learn's estimators, which the heads import on first use)
    are imported before anything is timed, as the epoch's model is built (and TensorFlow
    imported) before its timing.
    """
    from pipeline.heads.sklearn_heads import import_estimators

    import_estimators()  # imports not timed (as the epoch's model build)

    cache = ctx.cache()
    t_epoch, d_e2e = run_end_to_end_epoch(ctx, cache)
    t_dense, d_dense = run_dense_fit(cache)
    out = [result("dense_head_vs_e2e_epoch", t_epoch / t_dense, "x", ">= 30",
                  dense_s=round(t_dense, 3), epoch_s=round(t_epoch, 2), **d_dense, **d_e2e)]
    for name, heads, target in (("default_sweep_vs_e2e_epoch", None, ">= 10"),
                                ("linear_probe_sweep_vs_e2e_epoch", LINEAR_PROBE_SWEEP,
                                 ">= 50")):
        t_sweep, d_sweep = run_sweep(cache, heads)
        n = d_sweep["n_configs"]
        out.append(result(name, t_epoch / t_sweep, "x", target, sweep_s=round(t_sweep, 2),
                          epoch_s=round(t_epoch, 2),
                          per_config_speedup=round(n * t_epoch / t_sweep, 1), **d_sweep))
        if heads is None:
            t_med = float(np.median(d_sweep.pop("config_s")))
            out.append(result("median_config_vs_e2e_epoch", t_epoch / t_med, "x", ">= 100",
                              median_config_s=round(t_med, 3), epoch_s=round(t_epoch, 2)))
        else:
            d_sweep.pop("config_s")
    return out


def clustered_cache(path: Path, n: int, d: int = 1280, k: int = 4, clusters: int = 5,
                    seed: int = 0) -> Path:
    """``n`` synthetic feature rows, ``d`` wide: ``k`` classes, each a few Gaussian clusters
    (overlapping a little, as pooled CNN features of similar images do); splits 60/20/20."""
    from pipeline.cache.info import FeatureSetInfo
    from pipeline.cache.store import write_feature_set

    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 0.15, size=(k * clusters, d)).astype(np.float32)
    which = rng.integers(0, k * clusters, n)
    y = which % k
    x = centres[which] + rng.normal(0.0, 1.0, size=(n, d)).astype(np.float32)
    n_tr, n_va = int(n * 0.6), int(n * 0.2)
    split = np.array(["train"] * n_tr + ["validation"] * n_va + ["test"] * (n - n_tr - n_va))
    return write_feature_set(
        path, features=np.maximum(x, 0.0), labels=y,
        ids=[f"c{y[i]}/row{i:06d}" for i in range(n)], sha256=[f"{i:064x}" for i in range(n)],
        split=split, info=FeatureSetInfo(class_names=[f"class{c}" for c in range(k)],
                                         dataset=f"synthetic{n}", base="synthetic",
                                         key=f"synthetic-{n}-{d}", pooling="avg"))


def measure_scaling(ctx: Context) -> list[Result]:
    """The default sweep on 50,000 against 5,000 synthetic 1,280-wide clustered rows (60%
    of them training rows): at most 15x for 10x the rows (close to linear; the kinds whose
    cost grows faster switch to their scalable forms past their row threshold)."""
    small = clustered_cache(ctx.fresh_dir("rows_small") / "small.h5", 5_000)
    big = clustered_cache(ctx.fresh_dir("rows_big") / "big.h5", 50_000)
    t_small, d_small = run_sweep(small)
    t_big, d_big = run_sweep(big)
    for d in (d_small, d_big):
        d.pop("config_s")
    return [result("sweep_scaling_10x_rows", t_big / t_small, "x", "<= 15",
                   small_s=round(t_small, 2), big_s=round(t_big, 2),
                   small_fit_s=d_small["fit_s_by_config"], big_fit_s=d_big["fit_s_by_config"],
                   small_best=d_small["best"], big_best=d_big["best"],
                   small_best_val_bacc=d_small["best_validation_balanced_accuracy"],
                   big_best_val_bacc=d_big["best_validation_balanced_accuracy"])]


# --------------------------------------------------------------------------- 3. cache


def startup_seconds() -> float:
    """A fresh process importing ``pipeline.extract`` and TensorFlow."""
    cmd = [sys.executable, "-c", "import pipeline.extract; import tensorflow"]
    seconds, _ = timed(lambda: subprocess.run(cmd, check=True, capture_output=True))
    return seconds


def hit_breakdown(ctx: Context, folder: Path, cache: Path) -> dict[str, float]:
    """Where a cache hit's time goes: hashing the dataset, building the model, reading the
    cache file."""
    from pipeline.bases import build_extractor
    from pipeline.cache import load_feature_set
    from pipeline.data.sources import load_dataset

    t_hash, _ = timed(lambda: load_dataset(folder))
    t_build, _ = timed(lambda: build_extractor(ctx.base, weights="imagenet"))
    t_read, _ = timed(lambda: load_feature_set(cache))
    return {"hash_dataset_s": round(t_hash, 3), "build_model_s": round(t_build, 3),
            "load_cache_file_s": round(t_read, 3)}


def measure_cache(ctx: Context) -> list[Result]:
    """3. Repeated extract (in-process call) and 10% new images vs a full re-extraction."""
    from pipeline.data.builtin import elpv_root

    ctx.warm_up()
    rows = ctx.rows()
    # Full extraction into a fresh cache, then the same call again: a cache hit.
    full_dir = ctx.fresh_dir("cache_full")
    t_full, full = ctx.extract(ctx.folder, full_dir)
    t_hit, hit = ctx.extract(ctx.folder, full_dir)
    assert hit.hit and hit.n_new == 0, hit
    breakdown = hit_breakdown(ctx, ctx.folder, full.path)
    t_start = startup_seconds()

    # 90% extracted first (not timed), then the last 10% added to the same folder.
    n_new = max(1, round(len(rows) / 10))
    old, new = rows[: len(rows) - n_new], rows[len(rows) - n_new:]
    inc = ctx.fresh_dir("incremental") / ctx.folder.name
    link_class_folder(inc, old, elpv_root())
    inc_cache = ctx.fresh_dir("cache_inc")
    ctx.extract(inc, inc_cache)
    link_class_folder(inc, new, elpv_root())
    t_inc, res = ctx.extract(inc, inc_cache)
    assert res.n_new == n_new and not res.hit, res
    return [
        result("cache_hit_s", t_hit, "s", "< 2", images=len(rows), process_startup_s=round(
            t_start, 2), **breakdown),
        result("increment_10pct_vs_full", t_inc / t_full, "ratio", "<= 0.15",
               incremental_s=round(t_inc, 2), full_s=round(t_full, 2), new_images=n_new,
               images=len(rows), incremental_loop_s=round(res.seconds, 2),
               full_loop_s=round(full.seconds, 2),
               loop_only_ratio=round(res.seconds / full.seconds, 3)),
    ]


# --------------------------------------------------------------------------- 4. memory


# Runs the command and prints the peak RSS (KiB) of its process tree. The helper is needed:
# Linux keeps ru_maxrss across exec, so a child forked straight from this (large, TensorFlow-
# loaded) process would report this process's peak, not its own.
_RSS_HELPER = ("import resource, subprocess, sys; "
               "p = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL); "
               "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, p.returncode)")


def peak_rss_mib(cmd: list[str]) -> float:
    """Peak resident set size of ``cmd`` run in a fresh process, in MiB."""
    proc = subprocess.run([sys.executable, "-c", _RSS_HELPER, *cmd], capture_output=True,
                          text=True, check=True)
    kib, code = proc.stdout.split()
    if int(code):
        raise RuntimeError(f"{' '.join(cmd)} failed ({code}): {proc.stderr[-2000:]}")
    return int(kib) / 1024  # ru_maxrss is in KiB on Linux


def extract_cmd(folder: Path, cache_dir: Path) -> list[str]:
    return [sys.executable, "-m", "pipeline", "extract", str(folder), "--base", MEMORY_BASE,
            "--weights", "none", "--input-size", "96", "--cache-dir", str(cache_dir), "--quiet"]


def measure_memory(ctx: Context) -> list[Result]:
    """4. Peak RSS of ``pipeline extract`` on N and 4N random PNGs, each in a fresh process."""
    n, px = ctx.sizes.memory_n, ctx.sizes.memory_image_px
    rss = {}
    for k in (n, 4 * n):
        folder = write_random_pngs(ctx.fresh_dir(f"random_{k}") / "images", k, px, seed=k)
        rss[k] = peak_rss_mib(extract_cmd(folder, ctx.fresh_dir(f"cache_random_{k}")))
        shutil.rmtree(folder.parent, ignore_errors=True)
    growth = rss[4 * n] / rss[n] - 1
    return [result("memory_growth_4x_images", 100 * growth, "%", "< 10",
                   n=n, peak_rss_n_mib=round(rss[n], 1), peak_rss_4n_mib=round(rss[4 * n], 1),
                   image_px=px, base=MEMORY_BASE, input_size=96)]


# --------------------------------------------------------------------------- 5. reads


def best_of(fn: Callable[[], Any], repeats: int = 5) -> float:
    return min(timed(fn)[0] for _ in range(repeats))


def read_rates(cache: Path, npy: Path) -> dict[str, float]:
    """Train rows/s via ``load_feature_set(...).xy("train")`` and via ``np.load`` of the same
    array (both warm in the page cache; best of 5)."""
    from pipeline.cache import load_feature_set

    x, _ = load_feature_set(cache).xy("train")
    np.save(npy, x)
    t_h5 = best_of(lambda: load_feature_set(cache).xy("train"))
    t_npy = best_of(lambda: np.load(npy))
    return {"rows": len(x), "h5_rows_per_s": len(x) / t_h5, "npy_rows_per_s": len(x) / t_npy,
            "h5_s": t_h5, "npy_s": t_npy, "mib": x.nbytes / 2**20}


def bulk_cache(path: Path, real: Path, rows: int) -> Path:
    """A cache of ``rows`` rows made by tiling the real cache's features (so they compress
    like real ones), written by the package's own writer."""
    from pipeline.cache import load_feature_set
    from pipeline.cache.store import write_feature_set

    fs = load_feature_set(real)
    idx = np.arange(rows) % len(fs)
    return write_feature_set(path, features=fs.features[idx], labels=fs.labels[idx],
                             ids=[f"{i}/{fs.ids[j]}" for i, j in enumerate(idx)],
                             sha256=[f"{i:064x}" for i in range(rows)],
                             split=list(fs.split[idx]), meta=fs.meta)


def measure_reads(ctx: Context) -> list[Result]:
    """5. HDF5 cache reads against ``.npy`` on the real cache and on a bulk one (the real
    features tiled to ``bulk_rows``).

    The value is the bulk ratio (per-file overheads amortised: what matters when reads could
    be slow); the real cache's ratio and rows/s are in the detail. Target 0.5: a chunked HDF5
    read of uncompressed float32 runs near memory speed, so half of ``np.load`` leaves room
    for the ids, hashes, labels and split read alongside.
    """
    d = ctx.fresh_dir("reads")
    real = read_rates(ctx.cache(), d / "real.npy")
    bulk = read_rates(bulk_cache(d / "bulk.h5", ctx.cache(), ctx.sizes.bulk_rows),
                      d / "bulk.npy")
    rnd = {k: round(v, 4 if k.endswith("_s") else 1) for k, v in real.items()}
    return [result("cache_read_h5_vs_npy", bulk["h5_rows_per_s"] / bulk["npy_rows_per_s"],
                   "ratio", ">= 0.5",
                   bulk_rows=bulk["rows"], bulk_mib=round(bulk["mib"], 1),
                   bulk_h5_rows_per_s=round(bulk["h5_rows_per_s"]),
                   bulk_npy_rows_per_s=round(bulk["npy_rows_per_s"]),
                   real={**rnd, "ratio": round(real["h5_rows_per_s"] / real["npy_rows_per_s"], 3)})]


# --------------------------------------------------------------------------- 6. runtimes

#: ``auto`` must never pick a runtime slower than TensorFlow on these (base, weights, size, cut);
#: weights do not change the speed, so the bases without offline weights run with none.
RUNTIME_CASES = (("efficientnet_lite0", "imagenet", 224, None),
                 ("efficientnet_lite0", "imagenet", 300, "block6d_add"),
                 ("resnet50", "none", 224, None),
                 ("mobilenet_v2", "none", 224, None))
#: A re-timed choice may come out this much below TensorFlow from load noise alone.
RUNTIME_NOISE = 0.95
#: Interleaved batches per runtime when re-timing a choice (fastest kept): more than auto's
#: own 3, so one batch disturbed by other load does not decide the check.
RUNTIME_ROUNDS = 7


def auto_choice_vs_tensorflow(base: str, weights: str, size: int, layer: str | None
                              ) -> dict[str, Any]:
    """What ``auto`` picks for one case (first time on this machine: converts and times), then
    the chosen runtime against TensorFlow re-timed side by side on the same random batch."""
    from pipeline.bases import build_extractor
    from pipeline.bases.runtimes import RuntimeRequest, open_named, open_runtime
    from pipeline.bases.runtimes.choose import time_runtimes
    from pipeline.bases.runtimes.onnx_store import random_images
    from pipeline.progress import Reporter

    report = Reporter(quiet=True)
    ex = build_extractor(base, weights=weights, input_size=size, layer=layer)
    choose_s, chosen = timed(lambda: open_runtime(ex, RuntimeRequest(batch_size=32), report))
    tf = open_named(ex, "tensorflow", RuntimeRequest(), report)
    rates = time_runtimes([tf, chosen] if chosen.name != "tensorflow" else [tf],
                          random_images(32, size), report, rounds=RUNTIME_ROUNDS)
    ratio = rates[chosen.name] / rates["tensorflow"]
    return {"case": f"{base} {size} px" + (f" cut at {layer}" if layer else ""),
            "chosen": chosen.name, "first_choice_s": round(choose_s, 1),
            "retimed_images_per_s": rates, "ratio": round(ratio, 3)}


def measure_runtimes(ctx: Context) -> list[Result]:
    """6. ``extract --runtime auto`` against ``--runtime tensorflow`` (EfficientNet-Lite0,
    224 px, the ELPV subset, each into a fresh cache), after auto's first run on a machine it
    has not seen (a fresh runtimes folder); and auto's choice re-timed against TensorFlow on
    four bases/sizes/cuts."""
    from pipeline.cache import read_info
    from pipeline.extract import run_extraction

    os.environ["PIPELINE_RUNTIMES_DIR"] = str(ctx.fresh_dir("runtimes"))
    folder = ctx.folder
    warm_page_cache(folder)
    n = sum(1 for _ in folder.rglob("*.png"))

    def way(runtime: str) -> Callable[[], tuple[float, dict[str, Any]]]:
        def run() -> tuple[float, dict[str, Any]]:
            seconds, res = timed(lambda: run_extraction(
                folder, [DEFAULT_BASE], weights="imagenet", runtime=runtime,
                cache_dir=ctx.fresh_dir(f"cache_runtime_{runtime}"), quiet=True)[0])
            return seconds, {"ran": read_info(res.path).runtime}
        return run

    first_s, first = way("auto")()
    best = best_runs({"auto": way("auto"), "tensorflow": way("tensorflow")}, ctx.sizes.repeats)
    (t_auto, d_auto, all_auto), (t_tf, _, all_tf) = best["auto"], best["tensorflow"]
    cases = [auto_choice_vs_tensorflow(*case) for case in RUNTIME_CASES]
    return [
        result("extract_auto_vs_tensorflow", t_tf / t_auto, "ratio", ">= 1.2",
               images=n, base=DEFAULT_BASE, auto_ran=d_auto["ran"],
               auto_images_per_s=round(n / t_auto, 1), tensorflow_images_per_s=round(n / t_tf, 1),
               auto_runs_s=[round(t, 2) for t in all_auto],
               tensorflow_runs_s=[round(t, 2) for t in all_tf],
               first_auto_run_s=round(first_s, 1), first_auto_ran=first["ran"]),
        result("auto_never_slower_than_tensorflow", min(c["ratio"] for c in cases), "ratio",
               f">= {RUNTIME_NOISE}", cases=cases),
    ]
# --------------------------------------------------------------------------- 6. startup

STARTUP_RUNS = 20
STARTUP_HEADS = ("logreg", "linear_svm", "knn", "random_forest", "gradient_boosting")


def synthetic_runs(root: Path, n_caches: int = 4) -> Path:
    """A reports folder of ``n_caches`` x 5 scikit-learn head runs on small generated caches."""
    from pipeline.cache import FeatureSetInfo, write_feature_set
    from pipeline.heads import make_grid
    from pipeline.runs import fit_heads

    rng = np.random.default_rng(0)
    caches = []
    for i in range(n_caches):
        y = np.arange(200) % 2
        x = (rng.normal(size=(2, 16))[y] * 3 + rng.normal(size=(200, 16))).astype(np.float32)
        split = np.array(["train"] * 120 + ["validation"] * 40 + ["test"] * 40)
        caches.append(write_feature_set(
            root / f"synth{i}.h5", features=x, labels=y, split=split,
            ids=[f"c{y[j]}/img{j:04d}.png" for j in range(200)],
            sha256=[f"{j:064x}" for j in range(200)],
            info=FeatureSetInfo(class_names=["a", "b"], dataset=f"synth{i}", base="fakenet",
                                key=f"synth{i}-fakenet", pooling="avg")))
    grids = [make_grid(k, {"n_estimators": [20]} if k == "random_forest" else {})
             for k in STARTUP_HEADS]
    reports = root / "reports"
    fit_heads(caches, grids, jobs=1, reports_dir=reports, quiet=True)
    return reports


def measure_startup(ctx: Context) -> list[Result]:
    """Fresh-process wall time of ``pipeline runs --json`` on 20 runs, next to importing
    scikit-learn (best of 7 each, alternating, so load hits both alike)."""
    reports = synthetic_runs(ctx.fresh_dir("startup"))
    n_runs = sum(1 for _ in reports.glob("*/config.json"))
    cmds = {"cli": [sys.executable, "-m", "pipeline", "runs", "--json", "--reports-dir",
                    str(reports)],
            "sklearn": [sys.executable, "-c", "import sklearn"]}
    best = {k: float("inf") for k in cmds}
    for _ in range(7):
        for k, cmd in cmds.items():
            seconds, _ = timed(lambda cmd=cmd: subprocess.run(cmd, check=True,
                                                              capture_output=True))
            best[k] = min(best[k], seconds)
    ratio = best["cli"] / best["sklearn"]
    detail = {"runs": n_runs, "runs_json_s": round(best["cli"], 3),
              "import_sklearn_s": round(best["sklearn"], 3)}
    return [result("cli_startup_s", best["cli"], "s", f"<= {1.5 * best['sklearn']:.3f}",
                   **detail),
            result("cli_startup_vs_import_sklearn", ratio, "x", "<= 1.5", **detail)]


# --------------------------------------------------------------------------- report

RUNNERS: dict[str, Callable[[Context], list[Result]]] = {
    "throughput": measure_throughput,
    "heads": measure_heads,
    "scaling": measure_scaling,
    "cache": measure_cache,
    "memory": measure_memory,
    "reads": measure_reads,
    "runtimes": measure_runtimes,
    "startup": measure_startup,
}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def header(quick: bool) -> dict[str, Any]:
    import importlib.metadata as md

    versions = {}
    for pkg in ("tensorflow-cpu", "tensorflow", "keras", "numpy", "h5py", "scikit-learn"):
        with contextlib.suppress(md.PackageNotFoundError):
            versions[pkg] = md.version(pkg)
    return {"date": _dt.datetime.now().isoformat(timespec="seconds"),
            "mode": "quick" if quick else "full", "cores": os.cpu_count(), "cpu": cpu_model(),
            "python": platform.python_version(), "versions": versions,
            "load_average_start": [round(v, 2) for v in os.getloadavg()]}


def fmt_value(v: float) -> str:
    return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"


def table_rows(results: list[Result]) -> list[list[str]]:
    return [[r.name, fmt_value(r.value), r.unit, r.target, "yes" if r.met else "NO"]
            for r in results]


COLUMNS = ["name", "value", "unit", "target", "met"]


def text_table(results: list[Result]) -> str:
    rows = [COLUMNS, *table_rows(results)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(results: list[Result], head: dict[str, Any]) -> str:
    lines = [f"Benchmarks ({head['mode']} mode, {head['date'][:10]}, {head['cores']} cores "
             f"{head['cpu']}):", "", "| " + " | ".join(COLUMNS) + " |",
             "|" + "|".join(["---"] * len(COLUMNS)) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in table_rows(results)]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sizes (about 10 min on 2 cores)")
    p.add_argument("--out", type=Path, help="write the results as JSON here")
    p.add_argument("--markdown", type=Path, help="write the Markdown table here too")
    p.add_argument("--only", choices=MEASURES, action="append",
                   help="run only this measure (repeatable)")
    p.add_argument("--base", default=DEFAULT_BASE, help="base for measures 1-3 and 5")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    head = header(args.quick)
    print(f"pipeline benchmarks  {head['date']}  mode={head['mode']}")
    print(f"machine: {head['cores']} cores, {head['cpu']}, Python {head['python']}, "
          + ", ".join(f"{k} {v}" for k, v in head["versions"].items()))
    print(f"load average at start: {head['load_average_start']} "
          "(timings are wall-clock; concurrent load disturbs them)\n", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="pipeline-bench-"))
    ctx = Context(Sizes.for_mode(args.quick), args.base, tmp)
    results: list[Result] = []
    t_start = time.perf_counter()
    try:
        for name in args.only or MEASURES:
            load = round(os.getloadavg()[0], 2)
            seconds, out = timed(lambda name=name: RUNNERS[name](ctx))
            for r in out:
                r.detail["load_avg_1m_at_start"] = load
                print(f"  {r.name}: {fmt_value(r.value)} {r.unit} (target {r.target}, "
                      f"{'met' if r.met else 'NOT met'})  {json.dumps(r.detail)}", flush=True)
            print(f"[{name} done in {seconds:.0f} s]\n", flush=True)
            results.extend(out)
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    head["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    head["total_s"] = round(time.perf_counter() - t_start, 1)
    print(text_table(results))
    print(f"\ntotal {head['total_s']} s; load average at end: {head['load_average_end']}\n")
    md = markdown_table(results, head)
    print(md)
    if args.markdown:
        args.markdown.write_text(md + "\n")
    if args.out:
        args.out.write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n")
        print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
