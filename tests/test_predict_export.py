"""Every head kind predicts; exports load without this project (issue 10).

A tiny world: two colour classes, a random-init ``mobilenet_v2_0.35`` at 32 px cut at an
early layer (extracted through the Python API), every head kind fitted with
``pipeline fit-head``. ``pipeline predict`` must give, for every kind, the fitted head's own
probabilities on the cached features of the same images; ``pipeline export`` (``.keras`` for
the kinds layers express, ONNX for every kind) must write files that plain
``keras.models.load_model`` and plain ``onnxruntime`` run in a process where ``pipeline``
cannot be imported, giving what ``pipeline predict`` gives.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.errors import PipelineError
from pipeline.finetune import export, predict
from pipeline.finetune.data import load_run_cache
from pipeline.heads import export_kinds, list_heads
from pipeline.runs import iter_runs, load_head

SIZE = 32
LAYER = "block_3_expand_relu"
ALL_KINDS = [s.kind for s in list_heads()]
#: ONNX exports convert the base each time (slow): one kind of each head family and form.
ONNX_KINDS = ["logreg", "dense", "knn", "random_forest", "gradient_boosting"]
HEAD_ARGS = ["--head", "logreg", "--head", "linear_svm", "--head", "rbf_svm",
             "--head", "knn", "--param", "n_neighbors=3",
             "--head", "random_forest", "--param", "n_estimators=10",
             "--head", "gradient_boosting", "--param", "max_iter=10",
             "--head", "mlp", "--param", "hidden_layer_sizes=16",
             "--head", "dense", "--param", "epochs=3",
             "--head", "dense_mlp", "--param", "epochs=3", "--param", "units=8"]


def _colour_images(root: Path, n: int = 12) -> Path:
    rng = np.random.default_rng(3)
    for name, colour in (("blue", (40, 60, 200)), ("red", (210, 50, 40))):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            h, w = (int(v) for v in rng.integers(30, 60, 2))
            arr = np.clip(rng.normal(colour, 40, (h, w, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(arr).save(root / name / f"{i:03d}.png")
    return root


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=600)


def _tiny_cache(base: Path) -> Path:
    """The colour images extracted by the random-init base (the extract API)."""
    from pipeline.extract import run_extraction

    return run_extraction(_colour_images(base / "data"), ["mobilenet_v2_0.35"],
                          weights="none", input_size=SIZE, layer=LAYER,
                          cache_dir=base / "cache", quiet=True)[0].path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    base = tmp_path_factory.mktemp("predict_export")
    data, reports = base / "data", base / "reports"
    cache = _tiny_cache(base)
    p = _cli("fit-head", str(cache), *HEAD_ARGS, "--jobs", "1", "--quiet",
             "--reports-dir", str(reports), cwd=base)
    assert p.returncode == 0, p.stderr
    runs = {record.head.kind: run_dir for run_dir, record, _ in iter_runs(reports)}
    return {"base": base, "data": data, "reports": reports, "runs": runs}


def _validation(run_dir: Path) -> tuple[list[Path], np.ndarray]:
    """The validation images of the run's cache and the head's probabilities on their cached
    features."""
    loaded = load_head(run_dir)
    fs = load_run_cache(loaded.cache)
    rows = np.flatnonzero(fs.mask("validation"))
    paths = [Path(fs.info.dataset_root) / str(fs.ids[i]) for i in rows]
    return paths, loaded.predict_proba(fs.features[rows])


def _proba(predictions, class_names) -> np.ndarray:
    return np.array([[p.probabilities[c] for c in class_names] for p in predictions])


def test_every_kind_was_fitted(world):
    assert sorted(world["runs"]) == sorted(ALL_KINDS)


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_predict_gives_the_fitted_heads_probabilities(world, kind):
    """Extractor rebuilt as the cache was made + the fitted head: the cached features'
    probabilities, for every kind (forests and boosting included)."""
    run_dir = world["runs"][kind]
    paths, expected = _validation(run_dir)
    results = predict(run_dir, paths, reports_dir=world["reports"])
    names = load_head(run_dir).class_names
    assert [r.error for r in results] == [None] * len(paths)
    np.testing.assert_allclose(_proba(results, names), expected, atol=1e-4)
    assert [r.label for r in results] == [names[i] for i in expected.argmax(axis=1)]


@pytest.fixture(scope="module")
def exported(world) -> dict:
    """Each kind's .keras export (where it has one) and the ONNX exports of ONNX_KINDS, made
    through the API, plus ``best`` through the command line in both formats."""
    out = world["base"] / "exports"
    files: dict[tuple[str, str], Path] = {}
    for kind in export_kinds("keras"):
        files[(kind, "keras")] = export(world["runs"][kind], out / f"{kind}.keras",
                                        reports_dir=world["reports"]).path
    for kind in ONNX_KINDS:
        files[(kind, "onnx")] = export(world["runs"][kind], out / f"{kind}.onnx", fmt="onnx",
                                       reports_dir=world["reports"]).path
    cli = {}
    for fmt in ("keras", "onnx"):
        path = out / f"best.{fmt}"
        cli[fmt] = _cli("export", "best", "--format", fmt, "--out", str(path),
                        "--reports-dir", str(world["reports"]), cwd=world["base"])
        files[("best", fmt)] = path
    return {"files": files, "cli": cli}


PLAIN = r"""
import json, sys
sys.modules["pipeline"] = None  # this process must never import the project
import numpy as np
from PIL import Image
files, images = json.loads(sys.argv[1]), json.loads(sys.argv[2])
arrays = [np.asarray(Image.open(p).convert("RGB")) for p in images]
out = {}
for f in files:
    if f.endswith(".keras"):
        import keras
        model = keras.models.load_model(f)
        out[f] = [np.asarray(model(a[None]))[0].tolist() for a in arrays]
    else:
        import onnxruntime as ort
        s = ort.InferenceSession(f, providers=["CPUExecutionProvider"])
        out[f] = [s.run(["probabilities"], {"image": a[None]})[0][0].tolist() for a in arrays]
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def plain(world, exported) -> dict:
    """Every exported file run in a plain process on the validation images of the cache."""
    paths, _ = _validation(world["runs"]["logreg"])
    files = [str(f) for f in exported["files"].values()]
    p = subprocess.run([sys.executable, "-c", PLAIN, json.dumps(files),
                        json.dumps([str(x) for x in paths])], capture_output=True, text=True,
                       timeout=600, cwd=world["base"])
    assert p.returncode == 0, p.stderr
    return {"paths": paths, "proba": json.loads(p.stdout.strip().splitlines()[-1])}


def _check_plain(world, plain, file: Path, run: str) -> None:
    results = predict(run, plain["paths"], reports_dir=world["reports"])
    names = list(results[0].probabilities)
    np.testing.assert_allclose(np.array(plain["proba"][str(file)]), _proba(results, names),
                               atol=1e-4)


@pytest.mark.parametrize("kind", export_kinds("keras"))
def test_keras_export_runs_without_pipeline_like_predict(world, exported, plain, kind):
    _check_plain(world, plain, exported["files"][(kind, "keras")], world["runs"][kind])


@pytest.mark.parametrize("kind", ONNX_KINDS)
def test_onnx_export_runs_without_pipeline_like_predict(world, exported, plain, kind):
    _check_plain(world, plain, exported["files"][(kind, "onnx")], world["runs"][kind])


@pytest.mark.parametrize("fmt", ["keras", "onnx"])
def test_export_best_from_the_command_line(world, exported, plain, fmt):
    p = exported["cli"][fmt]
    assert p.returncode == 0, p.stderr
    assert "exported run" in p.stdout
    _check_plain(world, plain, exported["files"][("best", fmt)], "best")


@pytest.mark.parametrize("fmt", ["keras", "onnx"])
def test_predict_an_exported_file_matches_the_run(world, exported, fmt):
    """``pipeline predict MODEL.keras|MODEL.onnx IMAGES`` labels as the run does."""
    paths, _ = _validation(world["runs"]["logreg"])
    file = exported["files"][("logreg", fmt)]
    p = _cli("predict", str(file), *map(str, paths), "--json", cwd=world["base"])
    assert p.returncode == 0, p.stderr
    got = json.loads(p.stdout)
    want = predict(world["runs"]["logreg"], paths, reports_dir=world["reports"])
    assert [g["label"] for g in got] == [w.label for w in want]
    np.testing.assert_allclose([g["probability"] for g in got],
                               [w.probability for w in want], atol=1e-4)


def test_predict_best_from_the_command_line(world):
    paths, _ = _validation(world["runs"]["logreg"])
    p = _cli("predict", "best", str(paths[0]), "--json", "--reports-dir",
             str(world["reports"]), cwd=world["base"])
    assert p.returncode == 0, p.stderr
    [row] = json.loads(p.stdout)
    [want] = predict("best", [paths[0]], reports_dir=world["reports"])
    assert row["label"] == want.label


@pytest.mark.parametrize("kind", sorted(set(ALL_KINDS) - set(export_kinds("keras"))))
def test_keras_export_of_a_kind_layers_cannot_express_names_the_formats(world, tmp_path,
                                                                         kind):
    out = tmp_path / "m.keras"
    with pytest.raises(PipelineError, match="cannot be exported as keras; it can be exported "
                       "as: onnx") as e:
        export(world["runs"][kind], out, reports_dir=world["reports"])
    assert "exporting" in str(e.value) and "fine-tun" not in str(e.value)
    assert not out.exists()


def test_knn_past_the_size_limit_is_refused_saying_so(world, tmp_path, monkeypatch):
    from pipeline.finetune import kernel_layers

    monkeypatch.setattr(kernel_layers, "KNN_MAX_ROWS_X_FEATURES", 10)
    out = tmp_path / "knn.keras"
    with pytest.raises(PipelineError, match="KNN_MAX_ROWS_X_FEATURES"):
        export(world["runs"]["knn"], out, reports_dir=world["reports"])
    assert not out.exists()


@pytest.mark.parametrize("fmt, name", [("keras", "m.onnx"), ("onnx", "m.keras"),
                                       ("tflite", "m.tflite")])
def test_export_format_and_file_name_must_agree(world, tmp_path, fmt, name):
    with pytest.raises(PipelineError, match="--format|--out"):
        export(world["runs"]["logreg"], tmp_path / name, fmt=fmt, reports_dir=world["reports"])
    assert not (tmp_path / name).exists()


@pytest.mark.parametrize("kind", ["rbf_svm", "random_forest"])
def test_finetuning_a_head_that_cannot_be_trained_through_names_finetuning(world, kind):
    from pipeline.finetune import finetune

    with pytest.raises(PipelineError, match="fine-tun") as e:
        finetune(world["runs"][kind], epochs=1, reports_dir=world["reports"], quiet=True)
    assert "export" not in str(e.value)
