"""ONNX export: the Keras feature graph + any head as one model, run in plain onnxruntime.

A tiny world: a random-init ``mobilenet_v2_0.35`` at 32 px cut at an early layer (uncut,
random-init activations shrink to ~1e-11, which would hide any error), three classes that differ
in brightness, heads fitted through the heads stage's Python API. Images of two sizes check the
resize inside the graph. The reference is the project's own path in Python: bilinear resize of
the float image, the Keras extractor, the head's ``predict_proba``.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

for _module in ("onnx", "onnxruntime", "skl2onnx", "tf2onnx"):
    pytest.importorskip(_module, reason="the ONNX extra is not installed: pip install -e "
                        "'.[onnx]'")

import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
import tensorflow as tf  # noqa: E402

from pipeline.bases import build_extractor  # noqa: E402
from pipeline.errors import PipelineError  # noqa: E402
from pipeline.finetune.onnx_export import (  # noqa: E402
    check_onnx,
    export_onnx,
    join_graphs,
    onnx_class_names,
    onnx_feature_graph,
    onnx_head_graph,
)
from pipeline.finetune.onnx_resize import bilinear_resize_graph  # noqa: E402
from pipeline.heads import make_head  # noqa: E402

SIZE = 32
LAYER = "block_3_expand_relu"
CLASSES = ["dark", "mid", "bright"]
SIZES = [(40, 48), (23, 31)]  # (height, width) of the two test batches
ALL_KINDS = ["logreg", "linear_svm", "rbf_svm", "knn", "random_forest", "gradient_boosting",
             "mlp", "dense", "dense_mlp"]


def images(n: int, hw: tuple[int, int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` uint8 images and their labels; the class sets the brightness range."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % len(CLASSES)
    low = (y * 70)[:, None, None, None]
    x = (low + rng.integers(0, 110, (n, *hw, 3))).astype(np.uint8)
    return x, y


def keras_features(model, x: np.ndarray) -> np.ndarray:
    """The project's own path: bilinear resize (no antialias) of the float image -> extractor."""
    resized = tf.image.resize(tf.cast(x, tf.float32), (SIZE, SIZE), "bilinear").numpy()
    out = model.predict(resized, verbose=0)
    return out.reshape(len(out), -1)


@pytest.fixture(scope="module")
def world():
    ex = build_extractor("mobilenet_v2_0.35", weights="none", input_size=SIZE, layer=LAYER,
                         pooling="avg")
    x_train, y_train = images(60, (36, 44), seed=0)
    tests = [images(9, hw, seed=10 + i)[0] for i, hw in enumerate(SIZES)]
    return {
        "extractor": ex, "features": keras_features(ex.model, x_train), "y": y_train,
        "graph": onnx_feature_graph(ex.model), "tests": tests,
        "test_features": [keras_features(ex.model, t) for t in tests],
    }


#: Smaller than the defaults, to keep the tests fast.
PARAMS = {"gradient_boosting": {"max_iter": 20}, "random_forest": {"n_estimators": 30}}


@pytest.fixture(scope="module")
def fitted(world):
    """``fitted(kind)``: a head of ``kind`` fitted on the world's training features, once."""
    heads = {}
    x, y = world["features"], world["y"]

    def get(kind: str):
        if kind not in heads:
            heads[kind] = (standardised_keras_head(kind, x, y) if kind in ("dense", "dense_mlp")
                           else make_head(kind, PARAMS.get(kind), n_classes=len(CLASSES))
                           .fit(x, y))
        return heads[kind]

    return get


def standardised_keras_head(kind: str, x: np.ndarray, y: np.ndarray):
    """A Keras head fitted on standardised features, the standardisation then put in front of
    it as a layer: its logits are of order one on raw features (softmax far from uniform)."""
    import keras

    head = make_head(kind, {"epochs": 20, "learning_rate": 0.05}, n_classes=len(CLASSES))
    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-6
    head.fit((x - mean) / std, y)
    inp = keras.Input((x.shape[1],), name="features")
    scaled = keras.layers.Normalization(mean=mean, variance=std**2, name="standardise")(inp)
    head.model = keras.Model(inp, head.model(scaled), name=head.kind)
    return head


def session(model: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def test_feature_graph_takes_uint8_of_any_size(world):
    graph = world["graph"]
    (inp,), (out,) = graph.graph.input, graph.graph.output
    assert inp.name == "image" and inp.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert dims == ["N", "H", "W", 3]
    n_features = world["features"].shape[1]
    assert [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim] == [
        "N", n_features]
    run = session(graph)
    for x, want in zip(world["tests"], world["test_features"], strict=True):
        got = run.run(["features"], {"image": x})[0]
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.abs(want).max())


def test_feature_graph_flattens_spatial_features():
    ex = build_extractor("mobilenet_v2_0.35", weights="none", input_size=SIZE, layer=LAYER,
                         pooling="none")
    x = images(3, (27, 35), seed=5)[0]
    want = keras_features(ex.model, x)
    got = session(onnx_feature_graph(ex.model)).run(None, {"image": x})[0]
    assert got.shape == want.shape and want.shape[1] == int(np.prod(ex.feature_shape))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.abs(want).max())


def test_feature_graph_of_an_exported_keras_model(world):
    """A model taking uint8 images of any size is converted whole (ONNX Resize inside, which
    rounds coordinates differently from TensorFlow: close, not equal)."""
    from pipeline.finetune.model import export_model

    graph = onnx_feature_graph(export_model(world["extractor"].model))
    x, want = world["tests"][0], world["test_features"][0]
    got = session(graph).run(["features"], {"image": x})[0]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-3 * np.abs(want).max())


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_head_graph_matches_predict_proba(world, fitted, kind):
    x = world["features"]
    head = fitted(kind)
    graph = onnx_head_graph(head, x.shape[1], n_classes=len(CLASSES))
    assert [o.name for o in graph.graph.output] == ["probabilities"]
    rows = np.concatenate(world["test_features"] + [x])
    got = session(graph).run(None, {"features": rows.astype(np.float32)})[0]
    want = head.predict_proba(rows)
    assert got.shape == want.shape == (len(rows), len(CLASSES))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)
    assert np.mean(got.argmax(1) == want.argmax(1)) >= 0.999


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_binary_head_graph(kind):
    """Two classes take other converter paths (one logit, LOGISTIC post-transforms)."""
    rng = np.random.default_rng(3)
    y = np.arange(80) % 2
    x = (rng.normal(size=(80, 12)) + 0.8 * y[:, None]).astype(np.float32)
    params = {"epochs": 10} if kind in ("dense", "dense_mlp") else PARAMS.get(kind)
    head = make_head(kind, params, n_classes=2).fit(x, y)
    got = session(onnx_head_graph(head, 12)).run(None, {"features": x})[0]
    want = head.predict_proba(x)
    assert got.shape == (80, 2)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)


@pytest.mark.parametrize("kind", ["logreg", "random_forest", "rbf_svm", "dense"])
def test_joined_model_matches_python(world, fitted, kind, tmp_path):
    x = world["features"]
    head = fitted(kind)
    assert head.predict_proba(x).max(axis=1).mean() > 0.5  # a head that learnt something
    model = join_graphs(world["graph"], onnx_head_graph(head, x.shape[1]))
    assert [i.name for i in model.graph.input] == ["image"]
    assert [o.name for o in model.graph.output] == ["probabilities"]
    path = tmp_path / f"{kind}.onnx"
    path.write_bytes(model.SerializeToString())
    for imgs, feats in zip(world["tests"], world["test_features"], strict=True):
        report = check_onnx(path, imgs, head.predict_proba(feats))
        assert report["ok"], report
        assert report["max_abs_diff"] <= 1e-4 and report["same_class_fraction"] == 1.0
        assert report["rows"] == len(imgs) and report["off_rows"] == []


def test_export_onnx_writes_one_self_describing_file(world, fitted, tmp_path):
    head = fitted("gradient_boosting")
    path = export_onnx(world["extractor"].model, head, CLASSES, tmp_path / "out" / "model.onnx",
                       metadata={"source_run": "run-1", "input_size": SIZE})
    assert path == tmp_path / "out" / "model.onnx"
    assert [p.name for p in path.parent.iterdir()] == ["model.onnx"]  # no temporary left
    assert onnx_class_names(path) == CLASSES
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert props["source_run"] == "run-1" and props["input_size"] == str(SIZE)
    run = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [(i.name, i.type) for i in run.get_inputs()] == [("image", "tensor(uint8)")]
    assert [(o.name, o.type) for o in run.get_outputs()] == [("probabilities", "tensor(float)")]
    # Plain onnxruntime in a process that never imports pipeline (nor TensorFlow).
    np.save(tmp_path / "x.npy", world["tests"][0])
    code = ("import sys, json, numpy as np, onnxruntime as ort; "
            "s = ort.InferenceSession(sys.argv[1], providers=['CPUExecutionProvider']); "
            "p = s.run(['probabilities'], {'image': np.load(sys.argv[2])})[0]; "
            "names = json.loads(s.get_modelmeta().custom_metadata_map['class_names']); "
            "print(json.dumps([names, p.tolist(), sorted(sys.modules)]))")
    done = subprocess.run([sys.executable, "-c", code, str(path), str(tmp_path / "x.npy")],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    names, proba, modules = json.loads(done.stdout)
    assert names == CLASSES and not any(m.split(".")[0] in ("pipeline", "tensorflow")
                                        for m in modules)
    np.testing.assert_allclose(proba, head.predict_proba(world["test_features"][0]), atol=1e-4)
    # A list of images of mixed sizes, in order, against the two batches' probabilities.
    mixed = [im for batch in world["tests"] for im in batch]
    want = np.concatenate([head.predict_proba(f) for f in world["test_features"]])
    report = check_onnx(path, mixed, want)
    assert report["ok"] and report["rows"] == len(mixed), report


@pytest.mark.parametrize("size", [32, 224])
def test_resize_graph_equals_tf_image_resize(size):
    graph = bilinear_resize_graph(size, 17)
    onnx.checker.check_model(graph, full_check=True)
    run = session(graph)
    rng = np.random.default_rng(size)
    for hw in [(40, 48), (23, 31), (size, size), (2 * size, 2 * size), (1, 1), (300, 7)]:
        x = rng.integers(0, 256, (2, *hw, 3), dtype=np.uint8)
        want = tf.image.resize(tf.cast(x, tf.float32), (size, size), "bilinear").numpy()
        np.testing.assert_array_equal(run.run(None, {"image": x})[0], want)


def test_export_a_whole_classifier(world, tmp_path):
    import keras

    ex = world["extractor"]
    inp = keras.Input((SIZE, SIZE, 3))
    dense = keras.layers.Dense(len(CLASSES))
    probs = keras.layers.Softmax()(dense(ex.model(inp)))
    classifier = keras.Model(inp, probs, name="classifier")
    x = world["features"]
    dense.set_weights([np.random.default_rng(0).normal(size=dense.kernel.shape) / x.std(0)[:, None],
                       np.zeros(len(CLASSES))])
    path = export_onnx(classifier, None, CLASSES, tmp_path / "c.onnx")
    imgs = world["tests"][1]
    want = classifier.predict(tf.image.resize(tf.cast(imgs, tf.float32), (SIZE, SIZE)).numpy(),
                              verbose=0)
    assert want.max(axis=1).mean() > 0.5
    report = check_onnx(path, imgs, want)
    assert report["ok"] and report["max_abs_diff"] <= 1e-4, report


def test_head_fitted_without_a_class_gets_a_zero_column(world):
    x, y = world["features"], world["y"]
    keep = y != 1
    head = make_head("logreg", n_classes=3).fit(x[keep], y[keep])
    graph = onnx_head_graph(head, x.shape[1], n_classes=3)
    got = session(graph).run(None, {"features": x})[0]
    assert got.shape == (len(x), 3) and np.all(got[:, 1] == 0)
    np.testing.assert_allclose(got, head.predict_proba(x), rtol=0, atol=1e-5)


def test_check_reports_rows_that_differ(world, fitted, tmp_path):
    head = fitted("logreg")
    path = tmp_path / "m.onnx"
    n_features = world["features"].shape[1]
    path.write_bytes(join_graphs(world["graph"], onnx_head_graph(head, n_features))
                     .SerializeToString())
    imgs, feats = world["tests"][0], world["test_features"][0]
    want = head.predict_proba(feats)
    want[2] = want[2][::-1]  # as if the row had flipped to another class
    report = check_onnx(path, imgs, want)
    assert not report["ok"] and report["n_off_rows"] >= 1
    assert [r["row"] for r in report["off_rows"]] == [2]
    assert report["off_rows"][0]["max_abs_diff"] > 1e-4


def test_missing_onnxruntime_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    with pytest.raises(PipelineError, match=r"pipeline\[onnx\]"):
        check_onnx(tmp_path / "m.onnx", np.zeros((1, 8, 8, 3), np.uint8), np.ones((1, 2)))


def test_no_module_imports_an_onnx_library_at_import_time():
    """The package imports without the extra: ONNX libraries only inside functions."""
    root = Path(__file__).resolve().parents[1] / "pipeline"
    optional = {"onnx", "onnxruntime", "skl2onnx", "tf2onnx"}
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.parse(path.read_text()).body:  # module level only
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            else:
                continue
            found += [f"{path.name}: {n}" for n in names if n.split(".")[0] in optional]
    assert found == []
