"""Throughput of the ONNX export in onnxruntime next to the ``.keras`` export, side by side.

    python benchmarks/onnx_vs_keras.py [--base efficientnet_lite0] [--batch 32] [--repeats 5]

One model, two files: a base (``--base``, ImageNet weights unless ``--weights``) and a logistic
regression head fitted on 32 random images (darker / brighter), written once as ONNX
(``pipeline.finetune.onnx_export.export_onnx``) and once as ``.keras`` (the head as a folded
``Dense`` + softmax, wrapped by ``export_model``: uint8 of any size in, probabilities out). Both
get the same uint8 batch (``--image-size``, resized inside each model), after a warm-up call,
in alternating order (onnx, keras, keras, onnx, ...); the best time of each is kept. Keras runs
``model.predict`` (what a user calls) and ``predict_on_batch`` (no per-call data pipeline).
Needs the ONNX extra: ``pip install -e ".[onnx]"``.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="efficientnet_lite0")
    ap.add_argument("--weights", default="imagenet")
    ap.add_argument("--input-size", type=int, default=None, help="default: the base's own")
    ap.add_argument("--image-size", default="256x320", help="HxW of the uint8 test images")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    return ap.parse_args()


def build_models(args: argparse.Namespace, folder: Path) -> tuple[Path, Path, dict]:
    """The ONNX and the .keras file of the same base + logistic-regression head."""
    import keras

    from pipeline.bases import build_extractor
    from pipeline.finetune.model import export_model
    from pipeline.finetune.onnx_export import export_onnx
    from pipeline.heads import make_head

    ex = build_extractor(args.base, weights=args.weights, input_size=args.input_size)
    rng = np.random.default_rng(0)
    labels = np.arange(32) % 2  # two classes of random images: darker and brighter
    train = (labels[:, None, None, None] * 100
             + rng.integers(0, 156, (len(labels), ex.input_size, ex.input_size, 3)))
    features = ex.model.predict(train.astype(np.float32), verbose=0).reshape(len(train), -1)
    head = make_head("logreg", n_classes=2).fit(features, labels)
    t0 = time.perf_counter()
    onnx_path = export_onnx(ex.model, head, ["a", "b"], folder / "model.onnx")
    t_onnx = time.perf_counter() - t0
    kernel, bias = head.dense_weights()
    inp = keras.Input(ex.model.inputs[0].shape[1:], name="image")
    x = keras.layers.Flatten()(ex.model(inp)) if len(ex.feature_shape) > 1 else ex.model(inp)
    dense = keras.layers.Dense(2, name="head")
    probs = keras.layers.Softmax()(dense(x))
    dense.set_weights([kernel, bias])
    t0 = time.perf_counter()
    keras_path = folder / "model.keras"
    export_model(keras.Model(inp, probs, name="classifier")).save(keras_path)
    t_keras = time.perf_counter() - t0
    return onnx_path, keras_path, {"export_s": {"onnx": t_onnx, "keras": t_keras},
                                   "input_size": ex.input_size, "base": ex.spec.name}


def best_times(runners: dict[str, Callable[[], np.ndarray]], repeats: int) -> dict[str, float]:
    """Best wall time of each runner; the order alternates so drift hits all alike."""
    names = list(runners)
    best = {name: float("inf") for name in names}
    for r in range(repeats):
        for name in (names if r % 2 == 0 else names[::-1]):
            t0 = time.perf_counter()
            runners[name]()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def main() -> None:
    args = parse_args()
    import keras
    import onnxruntime as ort

    h, w = (int(v) for v in args.image_size.split("x"))
    batch = np.random.default_rng(1).integers(0, 256, (args.batch, h, w, 3), dtype=np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path, keras_path, info = build_models(args, Path(tmp))
        sizes = {p.suffix: p.stat().st_size / 1e6 for p in (onnx_path, keras_path)}
        session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
        model = keras.models.load_model(keras_path, compile=False)
    runners = {
        "onnxruntime": lambda: session.run(["probabilities"], {"image": batch})[0],
        "keras predict": lambda: model.predict(batch, batch_size=len(batch), verbose=0),
        "keras predict_on_batch": lambda: np.asarray(model.predict_on_batch(batch)),
    }
    outputs = {name: run() for name, run in runners.items()}  # warm-up (graphs traced here)
    diff = float(np.abs(outputs["onnxruntime"] - outputs["keras predict"]).max())
    best = best_times(runners, args.repeats)
    report(args, info, sizes, best, diff)


def report(args: argparse.Namespace, info: dict, sizes: dict, best: dict, diff: float) -> None:
    import importlib.metadata as md

    versions = ", ".join(f"{p} {md.version(p)}" for p in
                         ("tensorflow-cpu", "keras", "onnxruntime", "onnx", "tf2onnx", "skl2onnx"))
    print(f"machine: {os.cpu_count()} cores, {platform.processor() or platform.machine()}, "
          f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(f"versions: {versions}")
    print(f"model: {info['base']} ({args.weights}) at {info['input_size']} px + logreg head; "
          f"batch of {args.batch} uint8 images {args.image_size}, best of {args.repeats}")
    print(f"files: model.onnx {sizes['.onnx']:.1f} MB, model.keras {sizes['.keras']:.1f} MB; "
          f"export took {info['export_s']['onnx']:.1f} s (onnx), "
          f"{info['export_s']['keras']:.1f} s (keras)")
    print(f"max |p_onnx - p_keras| on the batch: {diff:.2e}")
    onnx_rate = args.batch / best["onnxruntime"]
    print(f"{'runtime':<24}{'images/s':>10}{'ms/batch':>10}{'onnx / this':>13}")
    for name, seconds in best.items():
        rate = args.batch / seconds
        print(f"{name:<24}{rate:>10.1f}{seconds * 1e3:>10.1f}{onnx_rate / rate:>12.2f}x")


if __name__ == "__main__":
    main()
