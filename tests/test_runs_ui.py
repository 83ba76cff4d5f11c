"""Run records that survive: row numbers and `best`, repeats, a read-only `runs`, `runs rm`,
saved predictions, and run folders whose cache moved."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
from helpers import make_cache
from typer.testing import CliRunner

from pipeline.cache.store import load_feature_set
from pipeline.cli import app
from pipeline.errors import PipelineError
from pipeline.finetune.data import load_run_cache
from pipeline.finetune.source import resolve_run
from pipeline.heads import finetunable_kinds, make_grid
from pipeline.progress import Reporter
from pipeline.runs import RunMetrics, RunRecord, fit_heads, leaderboard, load_head
from pipeline.runs.leaderboard import CSV_NAME, HTML_NAME, SHOWN, all_rows, remove_runs


def _fit(cache, reports, heads, seed=0):
    # cv=0: these runs are chosen on validation (their validation predictions are the saved
    # head's); cross-validated runs are tested in test_cv.py.
    return fit_heads([cache], heads, jobs=1, reports_dir=reports, quiet=True, seed=seed, cv=0)


@pytest.fixture()
def board(tmp_path):
    """One cache, three head kinds (one of them not fine-tunable) in one reports folder."""
    cache = make_cache(tmp_path / "cache" / "synth.h5", sep=1.0)
    reports = tmp_path / "reports"
    result = _fit(cache, reports, ["logreg", "knn", make_grid("rbf_svm", {"C": [1.0]})])
    return cache, reports, result


def _promote(run_dir, value=2.0):
    """Make ``run_dir`` rank first on validation (above any real score)."""
    metrics = RunMetrics.read(run_dir)
    metrics.validation["balanced_accuracy"] = value
    metrics.write(run_dir)


def test_row_numbers_follow_the_default_order_and_resolve(board, capsys):
    _, reports, result = board
    rows = all_rows(reports)
    assert [r["#"] for r in rows] == list(range(1, len(result.runs) + 1))
    assert [r["run_id"] for r in rows] == [r["run_id"] for r in leaderboard(reports)]
    # a filter or another sort keeps each run's number
    by_id = {r["run_id"]: r["#"] for r in rows}
    for r in leaderboard(reports, sort="test_log_loss") + leaderboard(reports, head="knn"):
        assert r["#"] == by_id[r["run_id"]]
    for ref in ("#2", "2"):
        capsys.readouterr()
        found = resolve_run(ref, reports)
        assert found.run_id == rows[1]["run_id"]
        assert rows[1]["run_id"] in capsys.readouterr().err  # the resolved id is echoed
    prefix = rows[2]["run_id"][:-1]
    assert resolve_run(prefix, reports).run_id == rows[2]["run_id"]
    with pytest.raises(PipelineError, match="no row #9"):
        resolve_run("#9", reports)
    with pytest.raises(PipelineError, match="row number"):
        resolve_run("#x", reports)


def test_best_is_the_top_row_and_finetune_skips_what_it_cannot_start_from(board, capsys):
    _, reports, result = board
    knn = next(r for r in result.runs if r.config.kind == "knn")
    rbf = next(r for r in result.runs if r.config.kind == "rbf_svm")
    _promote(knn.run_dir, 3.0)
    _promote(rbf.run_dir, 2.0)
    capsys.readouterr()
    assert resolve_run("best", reports).run_id == knn.run_id  # predict/export: by validation
    assert knn.run_id in capsys.readouterr().err
    found = resolve_run("best", reports, head_runs_only=True)
    err = capsys.readouterr().err
    assert found.record.head.kind in finetunable_kinds()
    assert found.run_id == all_rows(reports)[2]["run_id"]
    assert f"best -> #3 {found.run_id}" in err
    assert "skipped 2 better run(s)" in err and knn.run_id in err and rbf.run_id in err
    assert "a knn head cannot be fine-tuned" in err
    quiet = Reporter(quiet=True)
    resolve_run("best", reports, head_runs_only=True, report=quiet)
    assert capsys.readouterr().err == ""


def test_identical_reruns_are_one_row_with_a_count(tmp_path):
    cache = make_cache(tmp_path / "c.h5")
    reports = tmp_path / "reports"
    first = _fit(cache, reports, ["logreg"])
    second = _fit(cache, reports, ["logreg"])
    other_seed = _fit(cache, reports, ["logreg"], seed=1)
    rows = leaderboard(reports)
    assert len(rows) == 2
    (repeated,) = [r for r in rows if r["repeats"] == 2]
    assert repeated["run_id"] == second.runs[0].run_id  # the newest stands for the group
    assert set(repeated["repeat_ids"]) == {first.runs[0].run_id, second.runs[0].run_id}
    assert {r["run_id"] for r in rows} == {second.runs[0].run_id, other_seed.runs[0].run_id}
    with open(reports / CSV_NAME) as f:
        csv_rows = list(csv.DictReader(f))
    assert sorted(r["repeats"] for r in csv_rows) == ["1", "2"]


def test_rows_say_what_tells_runs_apart(board):
    _, reports, _ = board
    out = CliRunner().invoke(app, ["runs", "--reports-dir", str(reports)])
    assert out.exit_code == 0, out.output
    for col in ("#", "run_id", "pooling", "repeats", "test_accuracy"):
        assert col in out.output  # the same names as the CSV columns
    with open(reports / CSV_NAME) as f:
        names = next(csv.reader(f))
    out = CliRunner().invoke(app, ["runs", "--reports-dir", str(reports), "--json"])
    assert set(SHOWN) <= set(names) and set(SHOWN) <= set(json.loads(out.output)[0])
    (row, *_) = leaderboard(reports)
    cache = load_feature_set(row["cache_path"]).info
    assert (row["pooling"], row["input_size"], row["layer"]) == (
        cache.pooling, cache.input_size, cache.layer)


def test_runs_only_reads(board):
    _, reports, _ = board
    for name in (CSV_NAME, HTML_NAME):
        (reports / name).unlink()
    before = {p: p.stat().st_mtime_ns for p in reports.rglob("*")}
    reports.chmod(0o555)
    try:
        for args in ([], ["--json"], ["--sort", "test_accuracy"]):
            out = CliRunner().invoke(app, ["runs", "--reports-dir", str(reports), *args])
            assert out.exit_code == 0, out.output
    finally:
        reports.chmod(0o755)
    assert {p: p.stat().st_mtime_ns for p in reports.rglob("*")} == before


def test_runs_rm(board, tmp_path):
    _, reports, result = board
    rows = all_rows(reports)
    outside = tmp_path / "elsewhere" / rows[0]["run_id"]
    shutil.copytree(rows[0]["run_dir"], outside)
    runner = CliRunner()
    for bad in (str(outside), "nosuchrun", str(reports / CSV_NAME)):
        out = runner.invoke(app, ["runs", "rm", "--reports-dir", str(reports), "#1", bad])
        assert out.exit_code != 0
        assert len(all_rows(reports)) == len(rows)  # nothing deleted
    out = runner.invoke(app, ["runs", "rm", "--reports-dir", str(reports), "#1",
                              rows[2]["run_id"][:-1]])
    assert out.exit_code == 0, out.output
    assert f"removed {rows[0]['run_id']}" in out.output
    left = all_rows(reports)
    assert [r["run_id"] for r in left] == [rows[1]["run_id"]]
    assert not (reports / rows[0]["run_id"]).exists() and outside.is_dir()
    with open(reports / CSV_NAME) as f:
        assert [r["run_id"] for r in csv.DictReader(f)] == [rows[1]["run_id"]]
    with pytest.raises(PipelineError, match="no run"):
        remove_runs([rows[0]["run_id"]], reports)


def test_every_head_run_saves_its_predictions(board):
    cache, reports, result = board
    fs = load_feature_set(cache)
    for run in result.runs:
        with open(run.run_dir / "predictions.csv") as f:
            rows = list(csv.DictReader(f))
        classes = list(fs.class_names)
        assert list(rows[0]) == ["id", "split", "label", "predicted",
                                 *(f"p_{c}" for c in classes)]
        head = load_head(run.run_dir)
        for split, metrics in (("validation", run.validation), ("test", run.test)):
            mine = [r for r in rows if r["split"] == split]
            mask = fs.mask(split)
            assert [r["id"] for r in mine] == [str(i) for i in fs.ids[mask]]
            assert [r["label"] for r in mine] == [classes[i] for i in fs.labels[mask]]
            proba = np.array([[float(r[f"p_{c}"]) for c in classes] for r in mine])
            np.testing.assert_allclose(proba, head.predict_proba(fs.features[mask]),
                                       atol=1e-6)
            assert [r["predicted"] for r in mine] == [classes[i] for i in proba.argmax(1)]
            accuracy = np.mean([r["predicted"] == r["label"] for r in mine])
            assert accuracy == pytest.approx(metrics["accuracy"])


def test_a_moved_cache_is_found_by_name_then_key_and_a_rebuilt_one_refused(tmp_path,
                                                                           monkeypatch):
    cache = make_cache(tmp_path / "old" / "cache" / "synth.h5")
    result = _fit(cache, tmp_path / "old" / "reports", ["logreg"])
    shutil.copytree(tmp_path / "old", tmp_path / "new")
    shutil.rmtree(tmp_path / "old")
    run_dir = tmp_path / "new" / "reports" / result.runs[0].run_id
    ref = RunRecord.read(run_dir).cache
    assert ref.file == "synth.h5"
    new_cache = tmp_path / "new" / "cache"
    with pytest.raises(PipelineError, match="pass --cache-dir"):
        ref.locate(tmp_path / "empty")
    assert ref.locate(new_cache) == new_cache / "synth.h5"
    monkeypatch.setenv("PIPELINE_CACHE_DIR", str(new_cache))
    assert ref.locate() == new_cache / "synth.h5"
    (new_cache / "synth.h5").rename(new_cache / "renamed.h5")
    assert ref.locate() == new_cache / "renamed.h5"  # by key
    make_cache(new_cache / "synth.h5", dataset="other")  # same name, other rows
    (new_cache / "renamed.h5").unlink()
    with pytest.raises(PipelineError, match="rebuilt since") as e:
        load_run_cache(ref)
    assert "\n" not in str(e.value)


def test_fit_head_takes_cache_names_from_the_cache_dir(tmp_path, monkeypatch):
    make_cache(tmp_path / "cache" / "synth-fakenet-abc.h5")
    monkeypatch.setenv("PIPELINE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    out = runner.invoke(app, ["fit-head", "synth-fake", "--head", "logreg", "-q",
                              "--reports-dir", str(tmp_path / "reports")])
    assert out.exit_code == 0, out.output
    (row,) = leaderboard(tmp_path / "reports")
    assert row["cache_file"] == "synth-fakenet-abc.h5"
    out = runner.invoke(app, ["runs", "--reports-dir", str(tmp_path / "reports"), "--json"])
    assert json.loads(out.output)[0]["#"] == 1
    out = runner.invoke(app, ["fit-head", "nomatch", "--head", "logreg", "-q"])
    assert out.exit_code != 0 and "no such feature cache" in str(out.exception or out.output)
