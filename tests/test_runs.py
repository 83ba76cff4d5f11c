"""Leaderboard files, the CLI of stage 2, and experiments from TOML."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest
from heads_helpers import make_cache
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
        assert f"{r.run_id}/confusion_matrix.png" in page
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
