"""Which EfficientNet-Lite0 cut and input size serve ELPV best? Chosen on validation.

Extracts ELPV at several layers and input sizes (224 px, the base's default; 300 px, the
cells' native resolution), fits the default head sweep on each cache, and prints, per cut,
the validation-chosen head with its validation and test scores. Cache hits after the first
run.

    python benchmarks/elpv_layers.py [--cache-dir cache]
"""

from __future__ import annotations

import argparse
import time

from pipeline.extract import extract
from pipeline.runs import fit_heads

CUTS = [(layer, size) for size in (224, 300)
        for layer in (None, "block6d_expand_activation", "block6a_expand_activation",
                      "block5c_expand_activation")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache-dir", default=None)
    args = ap.parse_args()
    print(f"{'layer':28} {'size':>4} {'extract s':>9} {'chosen head':20} {'val bal.acc':>11} "
          f"{'test acc':>8} {'test bal.acc':>12}")
    for layer, size in CUTS:
        t0 = time.perf_counter()
        cache = extract("elpv", ["efficientnet_lite0"], layer=layer, input_size=size,
                        cache_dir=args.cache_dir, quiet=True)[0]
        seconds = time.perf_counter() - t0
        best = fit_heads([cache], save=False, quiet=True).best
        print(f"{layer or 'top_activation':28} {size:4d} {seconds:9.1f} {best.config.label:20} "
              f"{best.validation['balanced_accuracy']:11.3f} {best.test['accuracy']:8.3f} "
              f"{best.test['balanced_accuracy']:12.3f}", flush=True)


if __name__ == "__main__":
    main()
