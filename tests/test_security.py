"""Loading a run folder never runs code from it (issue 10).

For every kind of file a run folder holds (a scikit-learn head, a Keras head, a fine-tuned
``model.keras``, and head files renamed to the other format or to the old ``head.joblib``), a
payload whose loading would execute code (a pickle whose ``__reduce__`` creates a marker file;
a ``.keras`` whose config holds a Lambda that creates it, or names a module outside Keras) is
written in place and the recorded sha256 updated to match, as an attacker would. Then
``pipeline predict``, ``export``, ``finetune`` refuse it with one line and a non-zero exit,
``pipeline runs`` lists it without loading it, and the marker never appears.
"""

from __future__ import annotations

import io
import json
import pickle
import shutil
import subprocess
import sys
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from helpers import make_class_folder

from pipeline.errors import PipelineError
from pipeline.fileio import file_sha256, read_json, write_json
from pipeline.finetune.predict import load_classifier
from pipeline.runs.store import load_head

SIZE = 32


class Touch:
    """Unpickling this creates ``marker`` (``open(marker, "w")``)."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A tiny cache (random-init base) with a logreg and a dense head run."""
    from pipeline.extract import run_extraction
    from pipeline.runs import fit_heads

    base = tmp_path_factory.mktemp("security")
    data = make_class_folder(base / "data", {"a": 8, "b": 8})
    cache = run_extraction(data, ["mobilenet_v2_0.35"], weights="none", input_size=SIZE,
                           cache_dir=base / "cache", quiet=True)[0].path
    result = fit_heads([cache], ["logreg", {"kind": "dense", "epochs": 2}],
                       reports_dir=base / "clean", quiet=True, jobs=1)
    runs = {r.config.kind: r.run_dir for r in result.runs}
    return {"base": base, "data": data, "runs": runs}


def _pickle_bytes(marker: Path) -> bytes:
    return pickle.dumps(Touch(str(marker)))


def _lambda_keras(marker: Path, path: Path) -> bytes:
    """A .keras model whose Lambda layer creates ``marker`` when the model is rebuilt."""
    import keras

    fn = eval(f"lambda x: (__import__('pathlib').Path({str(marker)!r}).touch(), x)[1]")
    inp = keras.Input((SIZE, SIZE, 3))
    model = keras.Model(inp, keras.layers.Lambda(fn)(inp))
    model.save(path)
    marker.unlink(missing_ok=True)  # building the model called it once, here
    return path.read_bytes()


def _foreign_module_keras(source: Path) -> bytes:
    """A copy of a real .keras file whose config names a class outside Keras."""
    buf = io.BytesIO()
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(buf, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename == "config.json":
                cfg = json.loads(data)
                layer = cfg["config"]["layers"][-1]
                layer.update(module="subprocess", class_name="Popen", registered_name=None)
                layer["config"] = {"args": ["touch", "marker"]}
                data = json.dumps(cfg).encode()
            zout.writestr(item, data)
    return buf.getvalue()


def _plant(run_dir: Path, file: str, payload: bytes, *, finetuned: bool = False) -> None:
    """Replace the run's head file by ``payload`` under the name ``file`` and record its
    sha256, as an attacker holding the folder would."""
    cfg = read_json(run_dir / "config.json")
    (run_dir / cfg["head"]["file"]).unlink()
    (run_dir / file).write_bytes(payload)
    cfg["head"].update(file=file, sha256=file_sha256(run_dir / file))
    if finetuned:
        cfg["stage"] = "finetune"
        cfg["finetune"] = {"source_run": "somewhere"}
    write_json(run_dir / "config.json", cfg)


def _payloads(world: dict, marker: Path, scratch: Path) -> dict[str, tuple[str, str, bytes, bool]]:
    """name -> (source head kind, file name, payload bytes, as a fine-tuned run)."""
    dense_file = world["runs"]["dense"] / "head.keras"
    lam = _lambda_keras(marker, scratch / "lambda.keras")
    pick = _pickle_bytes(marker)
    return {
        "sklearn-pickle-as-skops": ("logreg", "head.skops", pick, False),
        "sklearn-old-joblib": ("logreg", "head.joblib", pick, False),
        "sklearn-renamed-keras": ("logreg", "head.keras", pick, False),
        "keras-lambda": ("dense", "head.keras", lam, False),
        "keras-foreign-module": ("dense", "head.keras", _foreign_module_keras(dense_file),
                                 False),
        "keras-pickle": ("dense", "head.keras", pick, False),
        "keras-renamed-skops": ("dense", "head.skops", pick, False),
        "finetuned-lambda": ("dense", "model.keras", lam, True),
        "finetuned-pickle": ("dense", "model.keras", pick, True),
        "finetuned-pickle-as-h5": ("dense", "model.h5", pick, True),
    }


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def _one_line_error(p: subprocess.CompletedProcess) -> str:
    err = p.stderr.strip().splitlines()
    assert p.returncode != 0, p.stdout
    assert "Traceback" not in p.stderr, p.stderr
    errors = [line for line in err if line.startswith("error:")]
    assert errors == [err[-1]], p.stderr
    return err[-1]


@pytest.fixture(scope="module")
def attacked(world: dict) -> dict:
    """Every payload planted in its own run folder under one reports folder, and the four
    commands run on each (in parallel subprocesses)."""
    base = world["base"]
    reports = base / "attacked"
    marker = base / "MARKER"
    scratch = base / "scratch"
    scratch.mkdir()
    payloads = _payloads(world, marker, scratch)
    for name, (kind, file, payload, finetuned) in payloads.items():
        run_dir = reports / name
        shutil.copytree(world["runs"][kind], run_dir)
        _plant(run_dir, file, payload, finetuned=finetuned)
    image = str(next(world["data"].rglob("*.png")))
    out = scratch / "out.keras"
    jobs = {(name, cmd): args for name in payloads for cmd, args in {
        "predict": ("predict", name, image),
        "export": ("export", name, "--out", str(out)),
        "finetune": ("finetune", name, "--epochs", "1"),
    }.items()}
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {key: pool.submit(_cli, *args, "--reports-dir", str(reports), cwd=base)
                   for key, args in jobs.items()}
        results = {key: f.result() for key, f in futures.items()}
    runs = _cli("runs", "--json", "--reports-dir", str(reports), cwd=base)
    return {"results": results, "runs": runs, "marker": marker, "names": list(payloads),
            "out": out, "reports": reports}


NAMES = ["sklearn-pickle-as-skops", "sklearn-old-joblib", "sklearn-renamed-keras",
         "keras-lambda", "keras-foreign-module", "keras-pickle", "keras-renamed-skops",
         "finetuned-lambda", "finetuned-pickle", "finetuned-pickle-as-h5"]
REFUSAL = ("refus", "never loaded", "pickle", "already fine-tuned", "not a .keras")


@pytest.mark.parametrize("command", ["predict", "export", "finetune"])
@pytest.mark.parametrize("name", NAMES)
def test_payload_is_refused_in_one_line_and_never_runs(attacked, name, command):
    line = _one_line_error(attacked["results"][(name, command)])
    assert any(word in line for word in REFUSAL), line
    assert not attacked["marker"].exists()
    assert not attacked["out"].exists()


def test_every_payload_is_tested(attacked):
    assert sorted(attacked["names"]) == sorted(NAMES)


def test_runs_lists_every_planted_run_without_loading_it(attacked):
    p = attacked["runs"]
    assert p.returncode == 0, p.stderr
    listed = {row["run_id"] for row in json.loads(p.stdout)}
    assert listed and listed <= set(NAMES)  # identical configurations may share a row
    assert not attacked["marker"].exists()


def test_old_joblib_head_says_refit(attacked):
    line = _one_line_error(attacked["results"][("sklearn-old-joblib", "predict")])
    assert "pipeline fit-head" in line


def _copy_run(world: dict, kind: str, dest: Path) -> Path:
    return Path(shutil.copytree(world["runs"][kind], dest / world["runs"][kind].name))


@pytest.mark.parametrize("kind", ["logreg", "dense"])
@pytest.mark.parametrize("sha", ["", None, "0" * 12])
def test_missing_or_empty_sha256_is_refused(world, tmp_path, kind, sha):
    run_dir = _copy_run(world, kind, tmp_path)
    cfg = read_json(run_dir / "config.json")
    cfg["head"]["sha256"] = sha
    write_json(run_dir / "config.json", cfg)
    with pytest.raises(PipelineError, match="no valid sha256"):
        load_head(run_dir)


def _finetuned_named(world: dict, tmp_path: Path, file: str) -> Path:
    """A fine-tuned run record naming ``file`` for its model, a valid model planted there."""
    run_dir = _copy_run(world, "dense", tmp_path / "reports")
    target = (run_dir / file)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(run_dir / "head.keras", target)
    cfg = read_json(run_dir / "config.json")
    cfg["stage"] = "finetune"
    cfg["head"].update(file=file, sha256=file_sha256(target))
    write_json(run_dir / "config.json", cfg)
    return run_dir


@pytest.mark.parametrize("file", ["../../elsewhere/model.keras", "sub/model.keras"])
def test_model_file_outside_the_run_folder_is_refused(world, tmp_path, file):
    run_dir = _finetuned_named(world, tmp_path, file)
    with pytest.raises(PipelineError, match="not a file name inside the run folder"):
        load_classifier(run_dir)


def test_absolute_model_path_is_refused(world, tmp_path):
    elsewhere = tmp_path / "elsewhere.keras"
    shutil.copy(world["runs"]["dense"] / "head.keras", elsewhere)
    run_dir = _finetuned_named(world, tmp_path, "model.keras")
    cfg = read_json(run_dir / "config.json")
    cfg["head"]["file"] = str(elsewhere)
    write_json(run_dir / "config.json", cfg)
    with pytest.raises(PipelineError, match="not a file name inside the run folder"):
        load_classifier(run_dir)


@pytest.mark.parametrize("kind", ["logreg", "dense"])
def test_symlinked_head_file_is_refused(world, tmp_path, kind):
    run_dir = _copy_run(world, kind, tmp_path)
    name = read_json(run_dir / "config.json")["head"]["file"]
    outside = tmp_path / f"outside-{name}"
    (run_dir / name).rename(outside)
    (run_dir / name).symlink_to(outside)
    with pytest.raises(PipelineError, match="symbolic link"):
        load_head(run_dir)


def test_empty_sha256_of_a_finetuned_model_is_refused(world, tmp_path):
    run_dir = _finetuned_named(world, tmp_path, "model.keras")
    cfg = read_json(run_dir / "config.json")
    cfg["head"]["sha256"] = ""
    write_json(run_dir / "config.json", cfg)
    with pytest.raises(PipelineError, match="no valid sha256"):
        load_classifier(run_dir)


def test_untampered_runs_load_and_predict(world):
    """The control: the same folders, unmodified, load and predict."""
    from pipeline.finetune.predict import predict

    image = next(world["data"].rglob("*.png"))
    for kind in ("logreg", "dense"):
        [p] = predict(world["runs"][kind], [image])
        assert p.error is None and p.label in ("a", "b")
        assert sum(p.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
