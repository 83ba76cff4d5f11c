"""One command line (issue 13): exit statuses, class weights, lists, --json, the environment
variables in --help, and progress that works in logs. Scikit-learn heads on generated caches
only: nothing here builds a model."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import make_cache

from pipeline.cli import main
from pipeline.cli.app import ENVIRONMENT
from pipeline.cli.args import split_list
from pipeline.errors import PipelineError, UsageError
from pipeline.experiment import parse_experiment
from pipeline.finetune.options import FinetuneOptions
from pipeline.heads import FitOptions
from pipeline.progress import Reporter
from pipeline.runs.leaderboard import COLUMNS

PACKAGE = Path(__file__).resolve().parents[1] / "pipeline"


def cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """``pipeline ARGS`` through the console entry point: (exit status, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["pipeline", *args])
    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def cache(tmp_path) -> Path:
    return make_cache(tmp_path / "cache" / "synth-fakenet.h5", k=3)


def fit(monkeypatch, capsys, cache: Path, *args: str) -> tuple[int, str, str]:
    return cli(monkeypatch, capsys, "fit-head", str(cache), "--jobs", "1", "-q", *args)


# --------------------------------------------------------------------------- exit statuses


@pytest.mark.parametrize("args, fragment", [
    (["fit-head", "{cache}", "--head", "logreg", "--class-weight", "maybe"],
     "expected one of none, balanced"),
    (["fit-head", "{cache}", "--head", "lgreg"], "unknown head 'lgreg'"),
    (["fit-head", "{cache}", "--head", "logreg", "--param", "C=abc"], "expected a number"),
    (["fit-head", "{cache}", "--metric", "speed"], "unknown selection metric"),
    (["runs", "--sort", "nope"], "cannot sort by 'nope'"),
    (["extract", "{cache}", "--base", "resnet5"], "unknown base 'resnet5'"),
    (["extract", "{cache}", "--pooling", "median"], "unknown pooling"),
    (["bases", "--layers"], "--layers needs a base NAME"),
])
def test_a_usage_error_exits_2_with_one_line(monkeypatch, capsys, cache, args, fragment):
    code, _, err = cli(monkeypatch, capsys, *[a.format(cache=cache) for a in args])
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert code == 2 and len(lines) == 1 and fragment in lines[0], err


def test_an_unknown_flag_exits_2(monkeypatch, capsys):
    code, _, err = cli(monkeypatch, capsys, "runs", "--no-such-flag")
    assert code == 2 and "No such option" in err


@pytest.mark.parametrize("args, fragment", [
    (["fit-head", "{missing}", "--head", "logreg"], "no such feature cache"),
    (["fit-head", "{empty}", "--head", "logreg"], "has no samples"),
    (["cache", "info", "{missing}"], "no such feature cache"),
    (["finetune", "nope-run"], "no run 'nope-run'"),
])
def test_a_failure_while_running_exits_1(monkeypatch, capsys, tmp_path, args, fragment):
    fill = {"missing": str(tmp_path / "missing.h5"),
            "empty": str(make_cache(tmp_path / "e.h5", fractions=(0.8, 0.2, 0.0)))}
    code, _, err = cli(monkeypatch, capsys, *[a.format(**fill) for a in args])
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert code == 1 and len(lines) == 1 and fragment in lines[0], err


def test_usage_error_is_a_pipeline_error_with_its_own_status():
    assert issubclass(UsageError, PipelineError)
    assert (UsageError("x").exit_code, PipelineError("x").exit_code) == (2, 1)
    with pytest.raises(UsageError, match="seed"):
        FitOptions(seed="x")


# --------------------------------------------------------------------------- class weights


def _params(reports: Path) -> list[dict]:
    return [json.loads(p.read_text())["head"]["params"] for p in reports.glob("*/config.json")]


@pytest.mark.parametrize("flags, expected, warned", [
    (["--class-weight", "balanced"], "balanced", False),
    (["--class-weight", "none"], "none", False),
    ([], "none", False),
    (["--class-weight"], "balanced", True),  # the old on/off flag
    (["--no-class-weight"], "none", True),
])
def test_fit_head_class_weight(monkeypatch, capsys, tmp_path, cache, flags, expected, warned):
    reports = tmp_path / "r"
    code, _, err = fit(monkeypatch, capsys, cache, *flags, "--head", "logreg",
                       "--reports-dir", str(reports))
    assert code == 0, err
    assert [p["class_weight"] for p in _params(reports)] == [expected]
    assert ("deprecated" in err) is warned


def test_class_weight_old_toml_spelling_is_accepted_with_a_warning(capsys):
    new = parse_experiment({"data": "elpv", "fit": {"class_weight": "balanced"}})
    old = parse_experiment({"data": "elpv", "fit": {"class_weight": True}})
    assert new.fit.class_weight == old.fit.class_weight == "balanced"
    assert "deprecated; use 'balanced'" in capsys.readouterr().err
    assert FinetuneOptions(class_weight=False).class_weight == "none"
    with pytest.raises(UsageError, match="class_weight"):
        FinetuneOptions(class_weight="sometimes")


# --------------------------------------------------------------------------- lists


def test_split_list_accepts_repeats_and_commas():
    assert split_list(["a,b", "c", " d , ,e"]) == ["a", "b", "c", "d", "e"]
    assert split_list(None) == [] and split_list([]) == []


def _candidates(reports: Path) -> list[tuple[str, list]]:
    out = []
    for p in sorted(reports.glob("*/config.json")):
        c = json.loads(p.read_text())
        out.append((c["head"]["kind"], sorted(
            json.dumps(k["params"], sort_keys=True) for k in c["selection"]["candidates"])))
    return sorted(out)


def test_lists_given_either_way_are_the_same_sweep(monkeypatch, capsys, tmp_path, cache):
    spellings = {
        "repeated": ["--head", "logreg", "--param", "C=0.1", "--param", "C=1",
                     "--head", "knn", "--param", "n_neighbors=3"],
        "commas": ["--head", "logreg", "--param", "C=0.1,1", "--head", "knn",
                   "--param", "n_neighbors=3"],
    }
    got = {}
    for name, args in spellings.items():
        code, _, err = fit(monkeypatch, capsys, cache, *args, "--reports-dir",
                           str(tmp_path / name))
        assert code == 0, err
        got[name] = _candidates(tmp_path / name)
    assert got["repeated"] == got["commas"] and len(got["commas"]) == 2
    code, _, err = fit(monkeypatch, capsys, cache, "--head", "logreg,knn",
                       "--reports-dir", str(tmp_path / "kinds"))
    assert code == 0, err
    assert [k for k, _ in _candidates(tmp_path / "kinds")] == ["knn", "logreg"]
    for spelling in (["--head", "logreg,knn"], ["--head", "logreg", "--head", "knn"]):
        code, out, _ = cli(monkeypatch, capsys, "runs", "--json", "--reports-dir",
                           str(tmp_path / "kinds"), *spelling)
        assert code == 0 and sorted(r["head"] for r in json.loads(out)) == ["knn", "logreg"]


# --------------------------------------------------------------------------- --json


def test_fit_head_json_rows_are_the_leaderboard_rows(monkeypatch, capsys, tmp_path, cache):
    reports = tmp_path / "r"
    code, out, err = fit(monkeypatch, capsys, cache, "--head", "logreg,knn", "--json",
                         "--reports-dir", str(reports))
    assert code == 0, err
    result = json.loads(out)
    assert result["failed"] == [] and len(result["runs"]) == 2
    code, out, _ = cli(monkeypatch, capsys, "runs", "--json", "--reports-dir", str(reports))
    board = {r["run_id"]: r for r in json.loads(out)}
    for row in result["runs"]:
        assert row == board[row["run_id"]] and set(COLUMNS) - {"#"} <= set(row)


def test_fit_head_table_uses_leaderboard_column_names():
    from pipeline.cli.heads_cmd import SWEEP_COLUMNS

    for metric in ("balanced_accuracy", "roc_auc"):
        assert {c.format(m=metric) for c in SWEEP_COLUMNS} <= set(COLUMNS)


@pytest.mark.parametrize("args", [
    ["heads"], ["bases"], ["bases", "vgg16"], ["cache", "ls"], ["cache", "info", "synth"],
    ["cache", "verify"], ["cache", "rm", "synth", "--dry-run"], ["cache", "prune", "--dry-run"],
    ["runs"],
], ids=" ".join)
def test_every_listing_command_prints_json(monkeypatch, capsys, tmp_path, cache, args):
    code, out, err = cli(monkeypatch, capsys, *args, "--json", *(
        ["--cache-dir", str(cache.parent)] if args[0] == "cache" else []))
    assert code == 0, err
    assert json.loads(out) is not None  # one JSON document, nothing else on stdout


# --------------------------------------------------------------------------- --help


def _environment_names_read() -> set[str]:
    """Every environment variable name the package's code reads: string literals on lines
    that touch ``os.environ``/``getenv``, and the ``*_ENV = "..."`` constants they use."""
    names = set()
    for path in PACKAGE.rglob("*.py"):
        for line in path.read_text(encoding="utf-8").splitlines():
            if re.search(r"environ|getenv|_ENV\s*=", line):
                names |= set(re.findall(r"[\"']([A-Z][A-Z0-9_]{2,})[\"']", line))
    return names


def test_every_environment_variable_is_in_help(monkeypatch, capsys):
    read = _environment_names_read()
    assert {"PIPELINE_CACHE_DIR", "PIPELINE_REPORTS_DIR", "PIPELINE_WEIGHTS_DIR"} <= read
    assert read <= set(ENVIRONMENT), f"document in pipeline/cli/app.py: {read - set(ENVIRONMENT)}"
    monkeypatch.setenv("COLUMNS", "200")
    code, out, _ = cli(monkeypatch, capsys, "--help")
    assert code == 0 and "Exit status" in out
    assert all(name in out for name in ENVIRONMENT)


# --------------------------------------------------------------------------- progress


def test_progress_in_a_log_is_plain_lines_with_rate_and_eta(capsys):
    report = Reporter(interval=0.0)  # stderr is captured here: not a terminal
    with report.progress(4, "images") as bar:
        for _ in range(4):
            bar.advance(1)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 4  # one per advance (interval 0); the final count is not repeated
    assert lines[-1].startswith("images: 4/4 (100%), ") and "images/s, ETA 0:00:00" in lines[-1]
    assert lines[0].startswith("images: 1/4 (25%)")


def test_progress_lines_are_spaced_by_the_interval(capsys):
    report = Reporter(interval=3600.0)
    with report.progress(100, "images") as bar:
        for _ in range(100):
            bar.advance(1)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("images: 100/100 (100%)")


def test_a_piped_sweep_logs_its_progress(tmp_path, cache):
    p = subprocess.run([sys.executable, "-m", "pipeline", "fit-head", str(cache), "--head",
                        "logreg", "--jobs", "1", "--reports-dir", str(tmp_path / "r")],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert re.search(r"^configurations: (\d+)/\1 \(100%\), [\d.]+ configurations/s, "
                     r"ETA \d:\d\d:\d\d$",
                     p.stderr, re.M), p.stderr
