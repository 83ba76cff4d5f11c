"""Commands that run no model start at once: they never import TensorFlow or Keras.

Each command runs in a fresh interpreter through the console entry point
(:func:`pipeline.cli.main`); afterwards the test reads ``sys.modules``. ``pipeline --help``,
``runs`` (also ``--json``), ``heads``, ``bases``, ``cache ls|info|verify`` and a sweep of
scikit-learn heads must not load the framework (issue 11); ``bases NAME --layers`` may.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from helpers import make_cache

FRAMEWORKS = ("tensorflow", "keras", "matplotlib")

_PROBE = """
import json, sys
sys.argv = ["pipeline", *json.loads(sys.argv[1])]
from pipeline.cli import main
code = 0
try:
    main()
except SystemExit as e:
    code = e.code or 0
loaded = sorted({m.split(".")[0] for m in sys.modules} & set(json.loads(sys.argv[-1])))
sys.stderr.write("\\nPROBE " + json.dumps({"code": code, "loaded": loaded}) + "\\n")
"""


def probe(args: list[str], env: dict[str, str], watch=FRAMEWORKS) -> dict:
    """Run ``pipeline ARGS`` in a fresh interpreter; its exit code and which of ``watch`` it
    imported."""
    p = subprocess.run([sys.executable, "-c", _PROBE.replace("sys.argv[-1]", repr(
        json.dumps(list(watch)))), json.dumps(args)],
        capture_output=True, text=True, env=env, timeout=300)
    line = [ln for ln in p.stderr.splitlines() if ln.startswith("PROBE ")]
    assert line, p.stderr[-2000:]
    return json.loads(line[-1].removeprefix("PROBE "))


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("startup")
    cache_dir = root / "cache"
    cache_dir.mkdir()
    make_cache(cache_dir / "synth-fakenet.h5")
    env = dict(os.environ, PIPELINE_CACHE_DIR=str(cache_dir),
               PIPELINE_REPORTS_DIR=str(root / "reports"), COLUMNS="200")
    # A scikit-learn-only sweep: makes the runs the read-only commands list, and is itself
    # one of the commands that must not import the framework.
    sweep = probe(["fit-head", "synth-fakenet", "--head", "logreg,knn", "--jobs", "1", "-q"],
                  env, watch=("tensorflow", "keras"))
    return {"env": env, "sweep": sweep, "reports": root / "reports"}


def test_a_scikit_learn_sweep_imports_no_tensorflow(world):
    assert world["sweep"] == {"code": 0, "loaded": []}
    assert len(list(world["reports"].glob("*/config.json"))) == 2


@pytest.mark.parametrize("args", [
    ["--help"], ["runs"], ["runs", "--json"], ["heads"], ["heads", "--json"], ["bases"],
    ["bases", "--json"], ["bases", "efficientnet_lite0"], ["cache", "ls"],
    ["cache", "info", "synth-fakenet"], ["cache", "verify"], ["fit-head", "--help"],
    ["extract", "--help"],
], ids=" ".join)
def test_reading_commands_import_no_framework(world, args):
    out = probe(args, world["env"])
    assert out == {"code": 0, "loaded": []}


def test_the_probe_sees_a_command_that_builds_a_model(world):
    """The check above can fail: listing a base's layers builds it and loads TensorFlow."""
    out = probe(["bases", "mobilenet_v3_small", "--layers", "--input-size", "32"],
                world["env"], watch=("tensorflow",))
    assert out == {"code": 0, "loaded": ["tensorflow"]}


def test_the_bases_table_shows_declared_sizes_without_a_model(world):
    p = subprocess.run([sys.executable, "-m", "pipeline", "bases", "--json"],
                       capture_output=True, text=True, env=world["env"], timeout=120)
    rows = {r["name"]: r for r in json.loads(p.stdout)}
    assert all(r["feature_size"] and r["parameters"] for r in rows.values())
    assert rows["efficientnet_lite0"]["feature_size"] == 1280




@pytest.mark.parametrize("args", [["runs", "--json"], ["runs"], ["heads"], ["--help"]],
                         ids=" ".join)
def test_listing_runs_and_heads_imports_no_scikit_learn(world, args):
    """The head registry (run labels, `pipeline heads`) names the kinds; scikit-learn's
    estimators are imported only where a head is built (heads/sklearn_heads.py)."""
    out = probe(args, world["env"], watch=("sklearn", "scipy"))
    assert out == {"code": 0, "loaded": []}


def test_the_probe_sees_scikit_learn_where_a_head_is_fitted(world):
    """The check above can fail: a sweep imports scikit-learn."""
    out = probe(["fit-head", "synth-fakenet", "--head", "logreg", "--jobs", "1", "-q"],
                world["env"], watch=("sklearn",))
    assert out == {"code": 0, "loaded": ["sklearn"]}


def test_reading_an_experiment_file_loads_no_framework(tmp_path):
    """`pipeline run` reads and checks its TOML before it hides TensorFlow's start-up logs;
    checking the `[extract]` pooling must not import the framework (it printed those logs)."""
    code = ("import sys; from pipeline.cli.app import app; from pipeline.experiment import "
            "DEFAULT_EXPERIMENT_TOML, load_experiment; p = sys.argv[1]; "
            "open(p, 'w').write(DEFAULT_EXPERIMENT_TOML); load_experiment(p); "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'tensorflow', 'keras'}))")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "e.toml")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"
