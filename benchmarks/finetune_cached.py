"""Epochs at cache speed: per-epoch time of fine-tuning today's way (the whole model on
images) vs from cached activations of the frozen bottom, vs the bound (the unfrozen top
alone, cut exactly where training starts, on in-memory arrays, no feed).

Also profiles what share of today's epoch the frozen bottom costs (its forward pass alone).
Uses a head run's cache (default: the best fine-tunable run under ./reports, e.g. after
`pipeline run` on the ELPV default) and the first N training images, one view (exact
augmentation only changes which cached view is read, not the cost).

    python benchmarks/finetune_cached.py [--reports reports] [--n 256] [--unfreeze 0.5]

Prints seconds per epoch (of the N images; steady state, after one traced warm-up call),
the ratios and the load average (the machine may be shared: ratios measured side by side).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np


def _epoch_seconds(model, feed, repeats: int = 1) -> float:
    model.fit(feed.forever(0), steps_per_epoch=1, epochs=1, shuffle=False, verbose=0)  # trace
    best = float("inf")
    for r in range(repeats):
        t0 = time.perf_counter()
        model.fit(feed.forever(r + 1), steps_per_epoch=feed.steps, epochs=1, shuffle=False,
                  verbose=0)
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reports", default="reports")
    ap.add_argument("--run", default="best")
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--unfreeze", default="0.5")
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args()

    from pipeline.finetune.activations import split_classifier
    from pipeline.finetune.data import image_paths, load_run_cache, read_images
    from pipeline.finetune.feed import Feed, image_source
    from pipeline.finetune.model import find_base, rebuild_classifier
    from pipeline.finetune.options import FinetuneOptions
    from pipeline.finetune.prepare import load_foldable_head
    from pipeline.finetune.setup import compile_model
    from pipeline.finetune.source import resolve_run
    from pipeline.finetune.unfreeze import unfreeze

    src = resolve_run(args.run, args.reports, head_runs_only=True)
    loaded = load_foldable_head(src)
    fs = load_run_cache(src.record.cache)
    rebuilt = rebuild_classifier(src.record.cache, loaded)
    unfrozen = unfreeze(find_base(rebuilt.classifier), args.unfreeze)
    rows = np.flatnonzero(fs.mask("train"))[:args.n]
    paths = image_paths(fs)
    x, _ = read_images([paths[i] for i in rows], rebuilt.input_size)
    y = fs.labels[rows].astype(np.int32)
    n_classes = len(rebuilt.class_names)
    opts = FinetuneOptions(learning_rate=1e-4)
    print(f"{src.run_id}: {rebuilt.base_name} at {rebuilt.input_size} px, "
          f"{unfrozen.describe()}; {len(x)} training images, batch {args.batch_size}")

    def feed(source):
        return Feed(source, y, n_classes, (0,), args.batch_size, 0)

    clf = rebuilt.classifier
    compile_model(clf, opts, 1e-4, feed(None).steps)
    today = _epoch_seconds(clf, feed(image_source(x)))

    split = split_classifier(clf, unfrozen.start)
    split.bottom.predict(x[:args.batch_size], verbose=0)  # trace
    t0 = time.perf_counter()
    acts = [np.asarray(a) for a in _as_list(split.bottom.predict(x, batch_size=args.batch_size,
                                                                 verbose=0))]
    bottom = time.perf_counter() - t0
    compile_model(split.top, opts, 1e-4, feed(None).steps)
    cached = _epoch_seconds(split.top, feed(lambda r, v: [a[r] for a in acts]))

    exact = split_classifier(clf, unfrozen.start, search=False)
    ex_in = [np.asarray(a) for a in _as_list(exact.bottom.predict(x, batch_size=args.batch_size,
                                                                  verbose=0))]
    compile_model(exact.top, opts, 1e-4, feed(None).steps)
    xin = ex_in[0] if len(ex_in) == 1 else ex_in
    onehot = np.eye(n_classes, dtype=np.float32)[y]
    exact.top.fit(xin, onehot, batch_size=args.batch_size, epochs=1, shuffle=False, verbose=0)
    t0 = time.perf_counter()
    exact.top.fit(xin, onehot, batch_size=args.batch_size, epochs=1, shuffle=False, verbose=0)
    bound = time.perf_counter() - t0

    load = os.getloadavg()
    print(f"cut for caching: {split.cut_layer} {split.shapes}; exact start "
          f"{exact.cut_layer} {exact.shapes}")
    print(f"seconds per epoch of {len(x)} images: today (whole model on images) {today:.2f}; "
          f"frozen bottom forward alone {bottom:.2f} ({bottom / today:.0%} of today's epoch); "
          f"cached {cached:.2f}; bound (unfrozen top alone) {bound:.2f}")
    print(f"speed-up of the cached path over today's: {today / cached:.2f}x; "
          f"cached reaches {bound / cached:.2f} of the bound (target >= 0.8)")
    print(f"load average during the run: {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} "
          f"on {os.cpu_count()} cores")


def _as_list(out):
    return list(out) if isinstance(out, list | tuple) else [out]


if __name__ == "__main__":
    main()
