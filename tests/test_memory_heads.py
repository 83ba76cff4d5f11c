"""Heads on caches larger than the memory budget (``--max-memory``): linear heads train out of
core from ranges of the HDF5 file and are saved, ranked, predicted and exported like any run;
heads that need every row in memory are refused in one line."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from helpers import make_cache
from test_cli_surface import cli

from pipeline.cache import write_feature_set
from pipeline.cache.store import load_feature_set, open_feature_rows
from pipeline.errors import PipelineError, UsageError
from pipeline.heads import FitOptions, list_heads
from pipeline.heads.options import parse_memory
from pipeline.heads.out_of_core import (
    evaluate,
    fit_cache_out_of_core,
    fit_head,
    in_memory_bytes,
    out_of_core_kinds,
    plan_memory,
)
from pipeline.progress import Reporter
from pipeline.runs import fit_heads, iter_runs, load_head

TINY_BUDGET = "4K"


class Lines(Reporter):
    def __init__(self):
        super().__init__(quiet=True)
        self.lines: list[str] = []

    def line(self, text: str) -> None:
        self.lines.append(text)


def class_ordered(path: Path, **kw) -> Path:
    """A generated cache whose rows are stored class by class (as folders of classes are)."""
    fs = load_feature_set(make_cache(path.with_suffix(".tmp.h5"), **kw))
    order = np.argsort(fs.labels, kind="stable")
    return write_feature_set(path, features=fs.features[order], labels=fs.labels[order],
                             ids=list(fs.ids[order]), sha256=list(fs.sha256[order]),
                             split=fs.split[order], info=fs.info)


def test_memory_sizes_parse_and_nonsense_is_a_usage_error():
    assert parse_memory("256M") == 256 << 20 and parse_memory("2G") == 2 << 30
    assert parse_memory("1.5k") == 1536 and parse_memory(4096) == 4096
    assert parse_memory("512KiB") == 512 << 10 and parse_memory(None) > 0
    assert FitOptions(max_memory="1M").memory_budget == 1 << 20
    assert FitOptions().memory_budget == parse_memory(None)
    for bad in ("lots", "0", "-5M", 0):
        with pytest.raises(UsageError, match="expected a size such as 512M"):
            FitOptions(max_memory=bad)


def test_the_kinds_that_train_out_of_core_are_declared_on_their_specs():
    assert out_of_core_kinds() == ["logreg", "linear_svm"]
    assert {s.memory for s in list_heads()} == {"rows", "chunks"}


def test_over_budget_linear_heads_go_out_of_core_and_others_are_refused(tmp_path):
    cache = make_cache(tmp_path / "c.h5", n=400, d=16)
    need = in_memory_bytes(open_feature_rows(cache))
    report = Lines()
    assert plan_memory([cache], ["logreg", "rbf_svm"], need, report) == []
    assert plan_memory([cache], ["logreg", "linear_svm"], need - 1, report) == [cache]
    assert "out of core" in report.lines[-1] and "logreg, linear_svm" in report.lines[-1]
    with pytest.raises(PipelineError) as e:
        plan_memory([cache], ["logreg", "rbf_svm", "knn"], need - 1, report)
    assert "knn, rbf_svm need every row in memory" in str(e.value)
    assert "(logreg, linear_svm)" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("kind", ["logreg", "linear_svm"])
@pytest.mark.parametrize("k", [2, 3])
def test_out_of_core_heads_learn_from_class_ordered_ranges_as_well_as_in_memory(tmp_path, kind,
                                                                               k):
    """Ranges of 50 rows, read in a random order: a file stored class by class still trains."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    cache = class_ordered(tmp_path / "c.h5", n=600, d=16, k=k, sep=1.0)
    head, validation = fit_cache_out_of_core(cache, kind, {"C": 1.0}, max_bytes=50 * 16 * 4)
    fs = load_feature_set(cache)
    whole = make_pipeline(StandardScaler(), LogisticRegression()).fit(*fs.xy("train"))
    xv, yv = fs.xy("validation")
    in_memory = float(np.mean(whole.predict(xv) == yv))
    assert validation["accuracy"] >= in_memory - 0.05
    assert evaluate(head, open_feature_rows(cache), "test")["accuracy"] >= in_memory - 0.1
    np.testing.assert_allclose(head.predict_proba(xv).sum(axis=1), 1.0, rtol=1e-6)


@pytest.mark.parametrize("k", [2, 3])
def test_an_out_of_core_logreg_is_the_dense_layer_it_exports(tmp_path, k):
    """Saved and loaded as any logreg head; its folded Dense layer + softmax gives its
    probabilities (what export and fine-tuning build on)."""
    cache = make_cache(tmp_path / "c.h5", n=300, d=8, k=k)
    rows = open_feature_rows(cache)
    head = fit_head(rows, "logreg", {"C": 0.5}, max_bytes=40 * 8 * 4)
    x, _ = load_feature_set(cache).xy("validation")
    kernel, bias = head.dense_weights()
    z = x @ kernel + bias
    soft = np.exp(z - z.max(axis=1, keepdims=True))
    np.testing.assert_allclose(soft / soft.sum(axis=1, keepdims=True), head.predict_proba(x),
                               atol=1e-5)
    saved = head.save(tmp_path)
    again = type(head).load(saved, "logreg", head.params, n_classes=k)
    np.testing.assert_allclose(again.predict_proba(x), head.predict_proba(x))


def _predictions(run_dir: Path) -> dict[str, np.ndarray]:
    with open(run_dir / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    cols = [c for c in rows[0] if c.startswith("p_")]
    return {r["id"]: np.array([float(r[c]) for c in cols]) for r in rows}


def test_fit_head_over_budget_trains_out_of_core_says_so_and_its_runs_predict(
        tmp_path, monkeypatch, capsys):
    cache = make_cache(tmp_path / "c.h5", n=300, d=12, k=3)
    reports = tmp_path / "reports"
    code, out, err = cli(monkeypatch, capsys, "fit-head", str(cache), "--head", "logreg",
                         "--param", "C=0.1,1", "--head", "linear_svm", "--max-memory",
                         TINY_BUDGET, "--reports-dir", str(reports))
    assert code == 0, err
    [said] = [line for line in err.splitlines() if "out of core" in line]
    assert "c.h5" in said and "--max-memory 4.0 KiB" in said
    runs = list(iter_runs(reports))
    assert sorted(r.head.kind for _, r, _ in runs) == ["linear_svm", "logreg"]
    fs = load_feature_set(cache)
    for run_dir, _, metrics in runs:
        assert metrics.validation["trained"] == metrics.test["trained"] == "out_of_core"
        assert set(metrics.test_ci) >= {"balanced_accuracy", "accuracy"}
        head = load_head(run_dir)
        want = _predictions(run_dir)
        assert len(want) == int(fs.mask("validation").sum() + fs.mask("test").sum())
        for s in ("validation", "test"):
            x, _ = fs.xy(s)
            got = head.predict_proba(x)
            ids = [str(i) for i in fs.ids[fs.mask(s)]]
            np.testing.assert_allclose(got, [want[i] for i in ids], atol=1e-5)
    code, out, _ = cli(monkeypatch, capsys, "runs", "--reports-dir", str(reports), "--json")
    assert code == 0 and len(json.loads(out)) == 2


def test_a_head_that_needs_every_row_is_refused_in_one_line_and_nothing_is_written(
        tmp_path, monkeypatch, capsys):
    cache = make_cache(tmp_path / "c.h5", n=200, d=12)
    reports = tmp_path / "reports"
    code, out, err = cli(monkeypatch, capsys, "fit-head", str(cache), "--head", "logreg",
                         "--head", "rbf_svm", "--max-memory", TINY_BUDGET, "-q",
                         "--reports-dir", str(reports))
    assert code == 1
    assert err.strip().count("\n") == 0 and "rbf_svm needs every row in memory" in err
    assert "(logreg, linear_svm)" in err and "Traceback" not in err
    assert not reports.exists()


@pytest.mark.parametrize("command", ["fit-head", "run"])
def test_a_bad_max_memory_is_a_usage_error(tmp_path, monkeypatch, capsys, command):
    cache = make_cache(tmp_path / "c.h5", n=100, d=4)
    args = [str(cache), "--head", "logreg"] if command == "fit-head" else []
    code, _, err = cli(monkeypatch, capsys, command, *args, "--max-memory", "lots",
                       "--reports-dir", str(tmp_path / "reports"))
    assert code == 2
    assert "max_memory = 'lots': expected a size such as 512M" in err
    assert err.strip().count("\n") == 0 and not (tmp_path / "reports").exists()


def test_max_memory_in_the_experiment_toml(tmp_path):
    from pipeline.experiment import load_experiment, run_experiment

    toml = tmp_path / "exp.toml"
    toml.write_text('data = "some/folder"\nbases = ["net_a"]\n[fit]\nmax_memory = "4K"\n'
                    '[[heads]]\nkind = "logreg"\n')
    assert load_experiment(toml).fit.memory_budget == 4096

    def fake_extract(data, bases, **kw):
        return [make_cache(tmp_path / f"{b}.h5", base=b) for b in bases]

    result = run_experiment(toml, reports_dir=tmp_path / "reports", quiet=True,
                            extract_fn=fake_extract)
    [run] = result.sweep.runs
    assert run.test["trained"] == "out_of_core" and run.run_dir is not None
    toml.write_text('data = "d"\nbases = ["net_a"]\n[fit]\nmax_memory = "huge"\n')
    with pytest.raises(UsageError, match=r"\[fit\]: max_memory = 'huge'"):
        load_experiment(toml)


def test_caches_over_and_under_the_budget_are_compared_in_one_sweep(tmp_path):
    """One cache out of core, one in memory: one result, one best run per dataset."""
    small = make_cache(tmp_path / "small.h5", n=120, d=4, base="small", sep=1.0)
    big = make_cache(tmp_path / "big.h5", n=600, d=32, base="big", sep=1.0)
    budget = (in_memory_bytes(open_feature_rows(small))
              + in_memory_bytes(open_feature_rows(big))) // 2
    result = fit_heads([big, small], ["logreg"], max_memory=budget, cv=0,
                       reports_dir=tmp_path / "reports", quiet=True, jobs=1)
    assert [Path(r.cache).name for r in result.runs] == ["big.h5", "small.h5"]
    assert [r.test.get("trained") for r in result.runs] == ["out_of_core", None]
    assert [s.path.name for s in result.splits] == ["big.h5", "small.h5"]
    assert sum(r.best_overall for r in result.runs) == 1
    best = max(result.runs, key=lambda r: r.validation["balanced_accuracy"])
    assert best.best_overall
    assert {rec.cache.base for _, rec, _ in iter_runs(result.reports_dir)} == {"big", "small"}


def test_runs_trained_out_of_core_predict_images_and_export(tmp_path, monkeypatch, capsys):
    """On an extracted cache (random-init base at 32 px): `pipeline predict` gives the run's
    probabilities on the validation images; the .keras export, which checks itself against
    the run's predictions before it is written, is written."""
    from test_predict_export import LAYER, SIZE, _colour_images

    from pipeline.extract import run_extraction
    from pipeline.finetune import export

    cache = run_extraction(_colour_images(tmp_path / "data"), ["mobilenet_v2_0.35"],
                           weights="none", input_size=SIZE, layer=LAYER,
                           cache_dir=tmp_path / "cache", quiet=True)[0].path
    reports = tmp_path / "reports"
    code, _, err = cli(monkeypatch, capsys, "fit-head", str(cache), "--head", "logreg",
                       "--max-memory", TINY_BUDGET, "--reports-dir", str(reports))
    assert code == 0 and "out of core" in err, err
    [(run_dir, _, _)] = list(iter_runs(reports))
    fs = load_feature_set(cache)
    rows = np.flatnonzero(fs.mask("validation"))
    images = [Path(fs.info.dataset_root) / str(fs.ids[i]) for i in rows]
    code, out, err = cli(monkeypatch, capsys, "predict", str(run_dir), *map(str, images),
                         "--json", "--reports-dir", str(reports))
    assert code == 0, err
    want = load_head(run_dir).predict_proba(fs.features[rows].reshape(len(rows), -1))
    got = [p["probability"] for p in json.loads(out)]
    np.testing.assert_allclose(got, want.max(axis=1), atol=1e-4)
    exported = export(run_dir, tmp_path / "logreg.keras", reports_dir=reports)
    assert exported.path.is_file()


def test_an_out_of_core_refit_trains_on_train_and_validation_before_the_test(tmp_path):
    cache = make_cache(tmp_path / "c.h5", n=200, d=8)
    result = fit_heads(cache, ["linear_svm"], max_memory=TINY_BUDGET, refit=True, cv=0,
                       save=False, quiet=True)
    [run] = result.runs
    assert run.refit and run.test["refit_seconds"] > 0 and run.test["trained"] == "out_of_core"
    assert run.head is not run.candidate.head and result.refit
