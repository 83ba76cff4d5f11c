"""Cross-validated selection (``fit-head --cv``) and bootstrap intervals on test metrics."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import make_cache, make_class_folder
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.errors import PipelineError
from pipeline.heads import make_grid
from pipeline.heads.metrics import bootstrap_ci, classification_metrics, paired_bootstrap_diff
from pipeline.heads.options import FitOptions
from pipeline.runs import RunMetrics, RunRecord, fit_heads, leaderboard


def _record(run):
    return RunRecord.read(run.run_dir), RunMetrics.read(run.run_dir)


def _log_fits(monkeypatch, cls, what):
    """Every ``cls.fit`` call appends ``what(head, y, y_val)`` (after the fit) to the list
    returned."""
    log, orig = [], cls.fit

    def fit(self, x, y, x_val=None, y_val=None):
        out = orig(self, x, y, x_val, y_val)
        log.append(what(self, y, y_val))
        return out

    monkeypatch.setattr(cls, "fit", fit)
    return log


# -- the whole path through the CLI, on a 40-image folder -----------------------------------


def test_fit_head_cv_5_on_a_40_image_folder(tmp_path):
    data = make_class_folder(tmp_path / "data", {"cat": 20, "dog": 20})
    runner = CliRunner()
    out = runner.invoke(app, ["extract", str(data), "--base", "mobilenet_v2_0.35",
                              "--weights", "none", "--input-size", "32",
                              "--cache-dir", str(tmp_path / "cache"), "--quiet"])
    assert out.exit_code == 0, out.output
    (cache,) = (tmp_path / "cache").glob("*.h5")
    reports = tmp_path / "reports"
    out = runner.invoke(app, ["fit-head", str(cache), "--cv", "5", "--head", "logreg",
                              "--param", "C=0.1,1", "--head", "knn", "--reports-dir",
                              str(reports)])
    assert out.exit_code == 0, out.output
    assert "5-fold cross-validation" in out.output
    rows = leaderboard(reports)
    assert len(rows) == 2
    for row in rows:
        record, metrics = RunRecord.read(row["run_dir"]), RunMetrics.read(row["run_dir"])
        assert record.selection.on == "cv" and record.selection.cv_folds == 5
        assert record.selection.refit is True
        cv = metrics.cv
        assert cv["folds"] == 5 and len(cv["scores"]) == 5
        assert cv["mean"] == pytest.approx(np.mean(cv["scores"]))
        assert cv["std"] == pytest.approx(np.std(cv["scores"]))
        # The leaderboard's validation column is the cross-validated score.
        assert row["val_balanced_accuracy"] == pytest.approx(cv["mean"])
        low, high = metrics.test_ci["balanced_accuracy"]
        assert low <= metrics.test["balanced_accuracy"] <= high
        assert row["test_ci_low"] == low and row["rank"] is not None
    out = runner.invoke(app, ["runs", "--reports-dir", str(reports), "--json"])
    assert out.exit_code == 0
    assert {r["selection"] for r in json.loads(out.output)} == {"cv"}


def test_cv_larger_than_the_smallest_class_is_one_line(tmp_path):
    cache = make_cache(tmp_path / "c.h5", n=20)  # 10 per class over train+validation+test
    out = CliRunner().invoke(app, ["fit-head", str(cache), "--cv", "9", "--head", "logreg",
                                   "--reports-dir", str(tmp_path / "r"), "--quiet"])
    # main() prints a PipelineError as its one line and exits non-zero.
    assert out.exit_code != 0 and isinstance(out.exception, PipelineError)
    assert "--cv 9" in str(out.exception) and "use --cv 7 or fewer" in str(out.exception)
    assert not (tmp_path / "r").exists() or not list((tmp_path / "r").glob("*/config.json"))


@pytest.mark.parametrize("value", ["1", "x", "-3"])
def test_bad_cv_values_are_refused_before_any_work(value):
    with pytest.raises(PipelineError, match="cv"):
        FitOptions(cv=value)


# -- the Python API: selection, refit, record -------------------------------------------------


def test_cv_selects_on_the_fold_mean_and_refits_on_train_and_validation(tmp_path, monkeypatch):
    from pipeline.heads.sklearn_heads import LogRegHead

    sizes = _log_fits(monkeypatch, LogRegHead, lambda head, y, y_val: len(y))
    cache = make_cache(tmp_path / "c.h5", n=100, sep=1.0)  # 60 train + 20 validation
    result = fit_heads(cache, [make_grid("logreg", {"C": [0.001, 1.0]})], cv=4, jobs=1,
                       reports_dir=tmp_path / "r", quiet=True)
    # 4 folds of each configuration on 3/4 of the 80 pooled rows, then one refit on all 80.
    assert sorted(sizes[:-1]) == [60] * 8 and sizes[-1] == 80
    (run,) = result.runs
    pool = result.pool(run)
    assert all(c.cv is not None and len(c.cv["scores"]) == 4 for c in pool)
    best = max(pool, key=lambda c: c.cv["mean"])
    assert run.config == best.config
    assert run.validation["balanced_accuracy"] == pytest.approx(best.cv["mean"])
    record, metrics = _record(run)
    assert record.selection.on == "cv"
    assert metrics.cv == best.cv
    # The sweep curve: every configuration with its cross-validated score.
    points = {c["params"]["C"]: c["cv"]["mean"] for c in record.selection.candidates}
    assert points == {c.config.params["C"]: c.cv["mean"] for c in pool}


def test_cv_validation_predictions_are_out_of_fold(tmp_path):
    cache = make_cache(tmp_path / "c.h5", n=100, sep=1.5)
    result = fit_heads(cache, ["logreg"], cv=5, jobs=1, save=False, quiet=True)
    (run,) = result.runs
    val = run.predictions["validation"]
    assert val.proba.shape == (20, 2)
    np.testing.assert_allclose(val.proba.sum(axis=1), 1.0)
    # Out-of-fold: the refitted head (which saw these rows) would predict them otherwise.
    refit = run.head.predict_proba(result.splits[0].x["validation"])
    assert not np.allclose(refit, val.proba)


def test_auto_cross_validates_small_validation_and_says_so(tmp_path, capsys):
    small = make_cache(tmp_path / "small.h5", n=100)  # validation: 10 rows per class
    large = make_cache(tmp_path / "large.h5", n=600, dataset="big")  # 60 per class
    result = fit_heads([small, large], ["logreg"], jobs=1, save=False)
    err = capsys.readouterr().err
    assert "small.h5: selecting by 5-fold cross-validation" in err
    assert "cv=auto" in err and "large.h5" not in err
    by_cache = {r.cache.name: r for r in result.runs}
    assert by_cache["small.h5"].cv["folds"] == 5
    assert by_cache["large.h5"].cv is None
    off = fit_heads(small, ["logreg"], cv=0, jobs=1, save=False, quiet=True)
    assert off.runs[0].cv is None


def test_dense_heads_stop_early_inside_each_fold_and_refit_for_the_median(tmp_path,
                                                                          monkeypatch):
    from pipeline.heads.keras_heads import KerasDenseHead

    fits = _log_fits(monkeypatch, KerasDenseHead, lambda head, y, y_val: (
        len(y), None if y_val is None else len(y_val), head.params["epochs"], head.best_epoch))
    cache = make_cache(tmp_path / "c.h5", n=50, d=4)  # 30 train + 10 validation
    # jobs=1: the folds fit in this process, where the spy is installed
    result = fit_heads(cache, [make_grid("dense", {"epochs": [6], "patience": [2]})], cv=4,
                       jobs=1, save=False, quiet=True)
    *folds, refit = fits
    assert len(folds) == 4
    # Each fold trains on 80% of its 30 training rows and stops early on the other 20%;
    # the fold's 10 held-out rows only score.
    assert all((n, n_stop) == (24, 6) for n, n_stop, _, _ in folds)
    assert refit[1] is None and refit[0] == 40
    assert refit[2] == int(round(np.median([best for *_, best in folds])))
    assert result.runs[0].cv["folds"] == 4


# -- bootstrap intervals ----------------------------------------------------------------------


def _predictions(n, k=2, seed=0, skill=0.6):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    proba = rng.dirichlet(np.ones(k), n)
    proba[np.arange(n), y] += skill
    return y, proba / proba.sum(axis=1, keepdims=True)


def test_bootstrap_interval_is_seeded_holds_the_estimate_and_narrows_with_rows():
    y, p = _predictions(400)
    ci = bootstrap_ci(y, p, seed=3)
    assert ci == bootstrap_ci(y, p, seed=3)
    point = classification_metrics(y, p)
    for m, (low, high) in ci.items():
        assert low <= point[m] <= high, m
    y_small, p_small = y[:50], p[:50]
    small = bootstrap_ci(y_small, p_small, seed=3)
    width = lambda c: c["balanced_accuracy"][1] - c["balanced_accuracy"][0]  # noqa: E731
    assert width(small) > width(ci)


def test_paired_difference_contains_zero_only_when_the_runs_agree():
    y, p = _predictions(300, k=3)
    assert paired_bootstrap_diff(y, p, p) == [0.0, 0.0]
    _, noise = _predictions(300, k=3, seed=9, skill=0.0)
    low, high = paired_bootstrap_diff(y, p, noise)
    assert low > 0  # the skilled run is better on every plausible resample


# -- the leaderboard: intervals and ranks -----------------------------------------------------


def test_leaderboard_ranks_ties_as_tied_and_lists_old_runs(tmp_path):
    cache = make_cache(tmp_path / "c.h5", n=300, sep=1.5)
    reports = tmp_path / "r"
    for c in (1.0, 0.9, 0.8):  # three runs whose test decisions (all but) coincide
        fit_heads(cache, [make_grid("logreg", {"C": [c]})], cv=0, jobs=1,
                  reports_dir=reports, quiet=True)
    rows = leaderboard(reports)
    assert [r["rank"] for r in rows] == ["1", "\u22481", "\u22481"]
    assert all(r["test_ci_low"] <= r["test_balanced_accuracy"] <= r["test_ci_high"]
               for r in rows)
    # A run from before intervals and predictions: still listed, no interval, no rank.
    old = rows[-1]["run_dir"]
    metrics = json.loads((tmp_path / "r" / old / "metrics.json").read_text())
    metrics.pop("test_ci")
    (tmp_path / "r" / old / "metrics.json").write_text(json.dumps(metrics))
    (tmp_path / "r" / old / "predictions.csv").unlink()
    rows = {r["run_dir"]: r for r in leaderboard(reports)}
    assert len(rows) == 3
    assert rows[old]["test_ci"] is None and rows[old]["rank"] is None


def test_leaderboard_does_not_tie_a_clearly_worse_run(tmp_path):
    cache = make_cache(tmp_path / "c.h5", n=300, sep=3.0)
    reports = tmp_path / "r"
    fit_heads(cache, ["logreg"], cv=0, jobs=1, reports_dir=reports, quiet=True)
    fit_heads(cache, ["knn"], cv=0, jobs=1, reports_dir=reports, quiet=True)
    # Make the knn run's test predictions the other class: same rows, clearly worse.
    bad = next(r for r in leaderboard(reports) if r["head"] == "knn")
    path = tmp_path / "r" / bad["run_dir"] / "predictions.csv"
    lines = path.read_text().splitlines()
    flipped = [lines[0]] + [",".join(f[:4] + [f[5], f[4]]) for f in
                            (line.split(",") for line in lines[1:])]
    path.write_text("\n".join(flipped) + "\n")
    ranks = {r["head"]: r["rank"] for r in leaderboard(reports)}
    assert sorted(ranks.values()) == ["1", "2"]



def test_experiment_fit_table_takes_cv():
    from pipeline.experiment import parse_experiment

    assert parse_experiment({"data": "x", "fit": {"cv": 5}}).fit.cv_folds == 5
    with pytest.raises(PipelineError, match=r"\[fit\]: cv = 1"):
        parse_experiment({"data": "x", "fit": {"cv": 1}})


@pytest.mark.parametrize("k", [2, 3])
def test_each_resample_is_scored_as_classification_metrics_scores_it(k):
    from pipeline.heads.metrics import CI_METRICS, resample_indices, resampled_metrics

    y, p = _predictions(120, k=k, seed=k)
    p = np.round(p, 1)  # tied scores, as ROC-AUC must handle
    p /= p.sum(axis=1, keepdims=True)
    idx = resample_indices(len(y), 20, seed=1)
    fast = resampled_metrics(y, p, idx)
    for j in range(len(idx)):
        slow = classification_metrics(y[idx[j]], p[idx[j]])
        for m in CI_METRICS:
            want = np.nan if slow[m] is None else slow[m]
            np.testing.assert_allclose(fast[m][j], want, atol=1e-12, err_msg=m)
