"""Smoke tests of the benchmark script's helpers (no model is built, nothing is timed)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

RUN = Path(__file__).resolve().parents[1] / "benchmarks" / "run.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("benchmarks_run", RUN)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def test_check_targets(bench):
    assert bench.check(0.9, ">= 0.9") and not bench.check(0.89, ">= 0.9")
    assert bench.check(1.9, "< 2") and not bench.check(2.0, "< 2")
    assert bench.check(0.15, "<= 0.15") and bench.check(1, "> 0")
    with pytest.raises(ValueError):
        bench.check(1, "== 1")


def test_pick_subset_spreads_and_keeps_order(bench):
    rows = list(range(100))
    sub = bench.pick_subset(rows, 10)
    assert len(sub) == 10 and sub == sorted(sub) and sub[0] == 0 and sub[-1] == 99
    assert bench.pick_subset(rows, None) == rows and bench.pick_subset(rows, 500) == rows


def test_class_folder_of_symlinks(bench, tmp_path):
    src = bench.write_random_pngs(tmp_path / "src", 4, 8)
    files = sorted(src.rglob("*.png"))
    rows = [(p.relative_to(src).as_posix(), i % 2) for i, p in enumerate(files)]
    root = bench.link_class_folder(tmp_path / "linked", rows, src)
    files = sorted(root.rglob("*.png"))
    assert len(files) == 4 and all(f.is_file() and not f.is_symlink() for f in files)
    assert {f.parent.name for f in files} == set(bench.CLASS_NAMES)


def test_tables(bench):
    results = [bench.result("a_ratio", 0.95, "ratio", ">= 0.9", x=1),
               bench.result("b_s", 3.2, "s", "< 2")]
    assert [r.met for r in results] == [True, False]
    text = bench.text_table(results)
    assert "a_ratio" in text and "NO" in text
    md = bench.markdown_table(results, {"mode": "quick", "date": "2026-01-01T00:00:00",
                                        "cores": 2, "cpu": "cpu"})
    assert "| name | value | unit | target | met |" in md and "| b_s | 3.2 | s | < 2 | NO |" in md


def test_peak_rss_of_a_child(bench):
    mib = bench.peak_rss_mib([sys.executable, "-c", "pass"])
    assert 1 < mib < 500
