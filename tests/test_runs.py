"""Leaderboard files, the CLI of stage 2, and experiments from TOML."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest
from helpers import make_cache
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.errors import PipelineError
from pipeline.experiment import load_experiment, parse_experiment, run_experiment
from pipeline.heads import make_grid
from pipeline.runs import fit_heads, leaderboard, write_leaderboard


@pytest.fixture(scope="module")
def two_bases(tmp_path_factory):
    """One dataset under two bases, fitted together: one comparison."""
    root = tmp_path_factory.mktemp("runs")
    a = make_cache(root / "a.h5", base="net_a", seed=1)
    b = make_cache(root / "b.h5", base="net_b", seed=1, sep=1.0)
    reports = root / "reports"
    result = fit_heads([a, b], [make_grid("logreg", {"C": [0.1, 1.0]}), "knn"], jobs=1,
                       reports_dir=reports, quiet=True)
    return result, reports


def test_two_caches_give_one_comparison(two_bases):
    result, reports = two_bases
    assert len(result.runs) == 4  # 2 bases x 2 head kinds
    assert sum(r.best_overall for r in result.runs) == 1  # one dataset, one overall best
    best = result.best
    assert all(best.validation["balanced_accuracy"] >= r.validation["balanced_accuracy"]
               for r in result.runs)


def test_leaderboard_csv_html_json(two_bases):
    result, reports = two_bases
    rows = leaderboard(reports)
    assert {r["run_id"] for r in rows} == {r.run_id for r in result.runs}
    vals = [r["val_balanced_accuracy"] for r in rows]
    assert vals == sorted(vals, reverse=True)
    with open(reports / "leaderboard.csv") as f:
        csv_rows = list(csv.DictReader(f))
    assert {r["run_id"] for r in csv_rows} == {r.run_id for r in result.runs}
    assert {"dataset", "base", "head", "val_accuracy", "test_accuracy", "test_roc_auc"} <= set(
        csv_rows[0])
    by_id = {r.run_id: r for r in result.runs}
    for r in csv_rows:
        assert float(r["test_accuracy"]) == pytest.approx(by_id[r["run_id"]].test["accuracy"])
    page = (reports / "index.html").read_text()
    for r in result.runs:
        assert r.run_id in page
        assert f"{r.run_id}/report.html" in page  # the run's own page (pipeline.report)
    # filters and sorting
    assert {r["base"] for r in leaderboard(reports, base="net_b")} == {"net_b"}
    assert {r["head"] for r in leaderboard(reports, head="knn")} == {"knn"}
    assert leaderboard(reports, dataset="other") == []
    losses = [r["test_log_loss"] for r in leaderboard(reports, sort="test_log_loss")]
    assert losses == sorted(losses)  # lower is better comes first
    with pytest.raises(PipelineError, match="cannot sort"):
        leaderboard(reports, sort="speed")


def test_runs_command_json_and_table(two_bases):
    result, reports = two_bases
    runner = CliRunner()
    out = runner.invoke(app, ["runs", "--reports-dir", str(reports), "--json",
                              "--head", "logreg"])
    assert out.exit_code == 0, out.output
    rows = json.loads(out.output)
    assert len(rows) == 2 and {r["head"] for r in rows} == {"logreg"}
    out = runner.invoke(app, ["runs", "--reports-dir", str(reports), "--sort", "test_accuracy"])
    assert out.exit_code == 0 and "runs, sorted by test_accuracy" in out.output


def test_fit_head_command_keeps_params_with_their_head(tmp_path):
    cache = make_cache(tmp_path / "c.h5", k=3)
    reports = tmp_path / "reports"
    out = CliRunner().invoke(app, [
        "fit-head", str(cache), "--head", "logreg", "--param", "C=0.1,1",
        "--head", "knn", "--param", "n_neighbors=3,7", "--jobs", "1", "-q",
        "--reports-dir", str(reports)])
    assert out.exit_code == 0, out.output
    configs = [json.loads(p.read_text()) for p in reports.glob("*/config.json")]
    assert sorted(c["head"]["kind"] for c in configs) == ["knn", "logreg"]
    for c in configs:
        tried = [cand["params"] for cand in c["selection"]["candidates"]]
        if c["head"]["kind"] == "knn":
            assert sorted(t["n_neighbors"] for t in tried) == [3, 7]
        else:
            assert sorted(t["C"] for t in tried) == [0.1, 1.0]
    assert (reports / "leaderboard.csv").is_file() and (reports / "index.html").is_file()


def _cli(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def test_cli_errors_are_one_line_and_non_zero(tmp_path):
    cache = make_cache(tmp_path / "c.h5")
    empty = make_cache(tmp_path / "e.h5", fractions=(0.8, 0.2, 0.0))
    cases = [
        (["fit-head", str(cache), "--head", "logreg", "--param", "C=abc"], "expected a number"),
        (["fit-head", str(cache), "--head", "nope"], "unknown head"),
        (["fit-head", str(tmp_path / "missing.h5")], "no such feature cache"),
        (["fit-head", str(empty), "--head", "logreg"], "has no samples"),
    ]
    for args, fragment in cases:
        p = _cli(*args, "--reports-dir", str(tmp_path / "r"), cwd=tmp_path)
        assert p.returncode != 0, args
        err = p.stderr.strip().splitlines()
        assert "Traceback" not in p.stderr
        assert [line for line in err if line.startswith("error:")] == [err[-1]]
        assert fragment in err[-1], (args, p.stderr)


# -- experiments ----------------------------------------------------------------------------


def test_default_experiment_is_valid():
    ex = load_experiment(None)
    assert ex.data == "elpv" and ex.bases == ["efficientnet_lite0"] and ex.heads is None


@pytest.mark.parametrize("doc, fragment", [
    ({"bases": ["x"]}, "'data'"),
    ({"data": "d", "colour": 1}, "unknown key"),
    ({"data": "d", "extract": {"poolng": "avg"}}, "unknown key"),
    ({"data": "d", "fit": {"metric": "speed"}}, "unknown selection metric"),
    ({"data": "d", "heads": [{"kind": "logreg", "C": ["x"]}]}, "expected a number"),
    ({"data": "d", "heads": [{"kind": "nope"}]}, "unknown head"),
])
def test_experiment_errors(doc, fragment):
    with pytest.raises(PipelineError, match=fragment):
        parse_experiment(doc)


def test_run_experiment_extracts_then_fits(tmp_path):
    toml = tmp_path / "exp.toml"
    toml.write_text("""
name = "tiny"
data = "some/folder"
bases = ["net_a", "net_b"]
[extract]
pooling = "avg"
split = [0.6, 0.2, 0.2]
[fit]
metric = "accuracy"
[[heads]]
kind = "logreg"
C = [0.1, 1.0]
[finetune]
epochs = 3
""")
    calls = []

    def fake_extract(data, bases, **kw):
        calls.append((data, bases, kw))
        return [make_cache(tmp_path / f"{b}.h5", base=b) for b in bases]

    result = run_experiment(toml, reports_dir=tmp_path / "reports", jobs=1, quiet=True,
                            extract_fn=fake_extract)
    (data, bases, kw), = calls
    assert data == "some/folder" and bases == ("net_a", "net_b")
    assert kw["pooling"] == "avg" and kw["split"] == (0.6, 0.2, 0.2)
    assert {r.base for r in result.sweep.runs} == {"net_a", "net_b"}
    assert result.sweep.metric == "accuracy"
    cfg = json.loads((result.sweep.best.run_dir / "config.json").read_text())
    assert cfg["experiment"]["finetune"] == {"epochs": 3}
    assert cfg["experiment"]["name"] == "tiny"
    write_leaderboard(result.reports_dir)
    assert len(leaderboard(result.reports_dir)) == 2


def test_run_print_default_is_the_template():
    out = CliRunner().invoke(app, ["run", "--print-default"])
    assert out.exit_code == 0
    assert 'data = "elpv"' in out.output
    import tomllib

    assert tomllib.loads(out.output)["bases"] == ["efficientnet_lite0"]


# -- the run record -------------------------------------------------------------------------


@pytest.fixture
def one_run(tmp_path):
    """A saved logreg run: (its folder, the reports folder)."""
    cache = make_cache(tmp_path / "c.h5")
    result = fit_heads(cache, ["logreg"], jobs=1, reports_dir=tmp_path / "reports", quiet=True)
    return result.best.run_dir, tmp_path / "reports"


def test_run_record_round_trip(one_run, tmp_path):
    from pipeline.runs import SCHEMA_VERSION, RunMetrics, RunRecord

    run_dir, _ = one_run
    record = RunRecord.read(run_dir)
    assert record.schema_version == SCHEMA_VERSION and record.stage == "heads"
    assert record.head.kind == "logreg" and record.cache.class_names == ["class0", "class1"]
    assert record.cache.n_train == 180 and set(record.cache.split_ids_sha256) == {
        "train", "validation", "test"}
    assert record.created.endswith("Z")  # UTC
    record.extra["note"] = {"kept": True}  # unknown keys survive a round trip
    record.write(tmp_path)
    again = RunRecord.read(tmp_path)
    assert again == record and again.to_dict() == record.to_dict()
    assert json.loads((tmp_path / "config.json").read_text())["note"] == {"kept": True}
    metrics = RunMetrics.read(run_dir)
    metrics.write(tmp_path)
    assert RunMetrics.read(tmp_path) == metrics and "test" in metrics.to_dict()
    # Validation of 30 rows per class: chosen by 5-fold CV (cv=auto), with test intervals.
    assert record.selection.on == "cv" and metrics.cv["folds"] == 5
    assert set(metrics.test_ci) >= {"balanced_accuracy", "accuracy", "log_loss"}
    # A metrics.json from before cv and intervals reads and writes back without them.
    old = {k: v for k, v in metrics.to_dict().items() if k not in ("cv", "test_ci")}
    assert RunMetrics.from_dict(old).cv is None
    assert RunMetrics.from_dict(old).to_dict() == old


def _version1_config(record) -> dict:
    """config.json as the previous version wrote it (heads/sweep._write_runs)."""
    c, h, s = record.cache, record.head, record.selection
    return {
        "run_id": record.run_id, "created": "2026-11-20T09:15:00",
        "cache": {"path": c.path, "key": c.key, "dataset": c.dataset,
                  "dataset_source": None, "base": c.base, "weights": None, "weights_id": None,
                  "layer": None, "pooling": "avg", "input_size": None, "preprocessing": None,
                  "dtype": None, "feature_shape": c.feature_shape,
                  "class_names": c.class_names, "n_train": c.n_train,
                  "n_validation": c.n_validation, "n_test": c.n_test,
                  "split_ids_sha256": c.split_ids_sha256},
        "head": {"kind": h.kind, "family": h.family, "params": h.params,
                 "n_classes": h.n_classes, "seed": h.seed, "file": h.file, "sha256": h.sha256},
        "selection": {"metric": s.metric, "on": "validation", "refit": False,
                      "refit_params": None, "best_overall": True,
                      "candidates": s.candidates, "n_configurations_total": 1},
        "versions": {"pipeline": "0.1.0", "scikit-learn": "1.5"},
    }


def test_version1_run_folder_is_migrated_on_read(one_run):
    from pipeline.runs import SCHEMA_VERSION, RunRecord, iter_runs, load_head

    run_dir, reports = one_run
    old = _version1_config(RunRecord.read(run_dir))
    (run_dir / "config.json").write_text(json.dumps(old))
    record = RunRecord.read(run_dir)
    assert record.schema_version == SCHEMA_VERSION and record.stage == "heads"
    assert not record.is_finetuned and record.finetune is None
    assert record.created == "2026-11-20T09:15:00" and record.selection.best_overall
    assert record.to_dict()["cache"] == old["cache"]
    assert load_head(run_dir).class_names == ["class0", "class1"]
    (row,) = leaderboard(reports)
    assert row["run_id"] == run_dir.name and row["head"] == "logreg"
    assert [d for d, _, _ in iter_runs(reports)] == [run_dir]


def test_finetune_config_dict_is_accepted():
    """The dict finetune/train.py builds for config.json reads as a RunRecord."""
    from pipeline.runs import RunRecord

    doc = {
        "run_id": "r2", "created": "2026-11-25T10:00:00", "stage": "finetune",
        "cache": {"dataset": "d", "base": "b", "class_names": ["a", "b"], "input_size": 32},
        "head": {"kind": "logreg+finetune", "family": "keras", "params": {"from": "logreg"},
                 "n_classes": 2, "seed": 0, "file": "model.keras", "sha256": "0" * 64},
        "selection": {"metric": "val_loss (early stopping)", "on": "validation",
                      "refit": False, "best_overall": False},
        "finetune": {"source_run": "r1", "learning_rate": 1e-5, "optimizer": "adam",
                     "unfreeze": {"start": 3}, "sessions": [{"start_epoch": 0}],
                     "digest": "x"},
        "versions": {"pipeline": "0.1.0", "keras": "3"},
    }
    record = RunRecord.from_dict(doc)
    assert record.is_finetuned and record.finetune is not None
    assert record.finetune.source_run == "r1" and record.finetune.unfreeze == {"start": 3}
    assert record.cache.input_size == 32 and record.head.file == "model.keras"
    out = record.to_dict()
    assert out["schema_version"] == 2 and out["finetune"]["digest"] == "x"
    assert RunRecord.from_dict(out) == record


@pytest.mark.parametrize("doc, fragment", [
    ({"schema_version": 99}, "newer than this pipeline reads"),
    ({"schema_version": "two"}, "not a version number"),
    ({"head": ["logreg"]}, "head: expected a table"),
    ([1, 2], "not a run record"),
])
def test_bad_run_records_are_one_line_errors(doc, fragment):
    from pipeline.runs import RunRecord

    with pytest.raises(PipelineError, match=fragment) as e:
        RunRecord.from_dict(doc)
    assert "\n" not in str(e.value)


def test_sweep_writes_nothing_until_saved(tmp_path, monkeypatch):
    from pipeline.context import Context
    from pipeline.heads import FitOptions, run_sweep
    from pipeline.runs import save_sweep

    monkeypatch.chdir(tmp_path)
    cache = make_cache(tmp_path / "c.h5")
    result = run_sweep(cache, ["logreg", "knn"], FitOptions(jobs=1),
                       ctx=Context.create(quiet=True))
    assert result.reports_dir is None and all(r.run_dir is None for r in result.runs)
    assert not (tmp_path / "reports").exists()
    save_sweep(result, Context.create(reports_dir=tmp_path / "out", quiet=True))
    assert result.reports_dir == tmp_path / "out"
    assert {r.run_dir.parent for r in result.runs} == {tmp_path / "out"}
    assert len(leaderboard(tmp_path / "out")) == 2


def test_heads_package_never_imports_runs():
    import ast
    from pathlib import Path

    import pipeline.heads

    for path in Path(pipeline.heads.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(n.startswith("pipeline.runs") for n in names), path


# -- options ------------------------------------------------------------------------------


@pytest.mark.parametrize("table, fragment", [
    ({"jobs": "x"}, "jobs = 'x': expected a whole number"),
    ({"seed": "x"}, "seed = 'x': expected a whole number"),
    ({"refit": "yes"}, "refit = 'yes': expected true or false"),
    ({"metric": 5}, "metric = 5: expected a string"),
    ({"metric": "speed"}, "unknown selection metric"),
    ({"class_weight": "heavy"}, "expected one of none, balanced"),
    ({"jobs": 0}, "positive number of workers"),
    ({"seeds": 1}, "unknown key(s) seeds"),
])
def test_fit_options_from_a_bad_mapping_is_one_line(table, fragment):
    from pipeline.heads import FitOptions

    with pytest.raises(PipelineError) as e:
        FitOptions.from_mapping(table, "exp.toml [fit]")
    assert fragment in str(e.value) and "\n" not in str(e.value)
    assert str(e.value).startswith("exp.toml [fit]")


@pytest.mark.parametrize("fit, fragment", [
    ({"jobs": "x"}, "jobs = 'x'"),
    ({"seed": "x"}, "seed = 'x'"),
    ({"reports_dir": 5}, "reports_dir = 5"),
    ({"refit": 1}, "refit = 1"),
])
def test_experiment_fit_table_is_checked_before_any_work(fit, fragment):
    with pytest.raises(PipelineError) as e:
        parse_experiment({"data": "d", "fit": fit})
    assert fragment in str(e.value) and "[fit]" in str(e.value) and "\n" not in str(e.value)


def test_fit_head_flags_come_from_the_options_schema():
    import typer

    from pipeline.heads import FitOptions

    command = typer.main.get_command(app).commands["fit-head"]
    params = {p.name: p for p in command.params}
    for name in ("metric", "refit", "jobs", "seed", "cv"):
        assert params[name].help == FitOptions.help(name), name
        assert params[name].default == FitOptions.default(name), name
    assert params["class_weight"].help == FitOptions.help("class_weight")
