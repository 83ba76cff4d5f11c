"""The HTML report (pipeline.report): pages render on a generated dataset, every file they
reference exists, nothing comes from the network, thumbnails survive the images, and the
`report`/`interpret` commands. A headless-Chromium check of the page width runs where
Chromium is installed."""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from helpers import TINY, make_class_folder
from PIL import Image
from typer.testing import CliRunner

import pipeline.report
from pipeline.cli import app
from pipeline.errors import PipelineError
from pipeline.extract import run_extraction
from pipeline.report.pages import RUN_PAGE
from pipeline.runs import fit_heads
from pipeline.runs.thumbnails import FOLDER, SIZE

CLASSES = {"cat": 8, "dog": 8, "owl": 8}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Tiny generated images, one extraction (random weights), a logreg grid, knn and a
    dense head; the report is refreshed by the leaderboard hook as the runs are saved."""
    root = tmp_path_factory.mktemp("report")
    data = make_class_folder(root / "data", CLASSES)
    cache = run_extraction(data, cache_dir=root / "cache", **TINY)[0].path
    result = fit_heads([cache], [{"kind": "logreg", "C": [0.01, 1.0, 100.0]}, "knn",
                                 {"kind": "dense", "epochs": 3}],
                       reports_dir=root / "reports", cache_dir=root / "cache", jobs=1,
                       quiet=True)
    return {"root": root, "data": data, "cache": cache, "reports": root / "reports",
            "runs": result.runs}


class _Refs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.refs += [v for k, v in attrs if k in ("src", "href") and v]

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _refs(page: Path) -> tuple[list[str], str]:
    parser = _Refs()
    parser.feed(page.read_text())
    return parser.refs, " ".join(parser.text)


def _check_page(page: Path) -> tuple[list[str], str]:
    """Every reference of ``page`` is a local file that exists; nothing from the network."""
    refs, text = _refs(page)
    assert refs, page
    for ref in refs:
        assert "://" not in ref and not ref.startswith("//"), f"{page}: remote {ref}"
        assert (page.parent / ref).is_file(), f"{page}: {ref} does not exist"
    return refs, text


def _predictions(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "predictions.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_index_and_every_run_page_render(world):
    reports, runs = world["reports"], world["runs"]
    refs, text = _check_page(reports / "index.html")  # written by the leaderboard hook
    for run in runs:
        assert f"{run.run_id}/{RUN_PAGE}" in refs
    assert sum(r.startswith("figures/") and r.endswith(".png") for r in refs) == 2
    for words in ("Datasets and feature caches", "comparison across runs", "Sweep curves",
                  "Validation balanced accuracy", "images/s", "Feature shape"):
        assert words in text
    for name in [*CLASSES, "train", "validation", "test"]:  # class counts per split
        assert name in text
    for run in runs:
        page = run.run_dir / RUN_PAGE
        refs, text = _check_page(page)
        assert "figures/confusion_validation.png" in refs and "figures/curves.png" in refs
        assert ("figures/learning.png" in refs) == (run.config.kind == "dense")
        assert ("figures/sweep.png" in refs) == (run.config.kind == "logreg")
        for name in CLASSES:
            assert name in text
        wrong = [r for r in _predictions(run.run_dir) if r["label"] != r["predicted"]]
        tiles = [r for r in refs if r.startswith(f"{FOLDER}/")]
        assert len(tiles) == min(len(wrong), 2 * 24)  # every misclassified row, thumbnailed
        assert text.count("predicted ") >= len(wrong)


def test_thumbnails_are_small_and_outlive_the_images(world, tmp_path):
    run = world["runs"][0]
    thumbs = sorted((run.run_dir / FOLDER).glob("*.jpg"))
    assert thumbs
    for t in thumbs:
        with Image.open(t) as img:
            assert max(img.size) <= SIZE
    moved = tmp_path / "moved"
    shutil.move(world["data"], moved)
    try:
        page = pipeline.report.write_report(world["reports"], run.run_id,
                                            cache_dir=world["root"] / "cache")
        refs, _ = _check_page(page)
        assert len([r for r in refs if r.startswith(f"{FOLDER}/")]) == len(thumbs)
    finally:
        shutil.move(moved, world["data"])


def test_a_missing_thumbnail_is_a_placeholder(world):
    run = world["runs"][-1]
    backup = run.run_dir.parent / "thumbs.bak"
    shutil.copytree(run.run_dir / FOLDER, backup)
    shutil.rmtree(run.run_dir / FOLDER)
    try:
        page = pipeline.report.write_report(world["reports"], run.run_id)
        refs, text = _check_page(page)
        wrong = [r for r in _predictions(run.run_dir) if r["label"] != r["predicted"]]
        assert not [r for r in refs if r.startswith(f"{FOLDER}/")]
        assert text.count("image not") == min(len(wrong), 48)
    finally:
        shutil.copytree(backup, run.run_dir / FOLDER, dirs_exist_ok=True)
        shutil.rmtree(backup)


def test_interpret_matches_the_saved_predictions(world):
    reports = world["reports"]
    out = CliRunner().invoke(app, ["interpret", "#1", "--json", "--reports-dir", str(reports)])
    assert out.exit_code == 0, out.output
    got = json.loads(out.output)
    rows = [r for r in _predictions(Path(got["run_dir"])) if r["split"] == "test"]
    for c in got["per_class"]["test"]:
        mine = [r for r in rows if r["label"] == c["class"]]
        hits = sum(r["predicted"] == c["class"] for r in mine)
        assert c["support"] == len(mine)
        assert c["recall"] == pytest.approx(hits / len(mine))
    for p in got["confused_pairs"]["test"]:
        assert p["count"] == sum(r["label"] == p["true"] and r["predicted"] == p["predicted"]
                                 for r in rows)
    table = CliRunner().invoke(app, ["interpret", "best", "--reports-dir", str(reports)])
    assert table.exit_code == 0 and "per class" in table.output and "recall" in table.output


def test_report_command_regenerates_and_refuses_an_unknown_run(world):
    reports, run = world["reports"], world["runs"][0]
    (reports / "index.html").unlink()
    page = run.run_dir / RUN_PAGE
    page.unlink()
    out = CliRunner().invoke(app, ["report", run.run_id, "--reports-dir", str(reports),
                                   "--cache-dir", str(world["root"] / "cache")])
    assert out.exit_code == 0, out.output
    assert (reports / "index.html").is_file() and page.is_file()
    assert out.output.strip() == str(page)
    bad = CliRunner().invoke(app, ["report", "nosuchrun", "--reports-dir", str(reports)])
    assert isinstance(bad.exception, PipelineError) and "nosuchrun" in str(bad.exception)


def test_the_sweep_marks_the_chosen_configuration(world):
    from pipeline.report.data import load_run, sweep_points

    run = next(r for r in world["runs"] if r.config.kind == "logreg")
    sweep = sweep_points(load_run(run.run_dir))
    assert sweep["param"] == "C" and [p["x"] for p in sweep["points"]] == [0.01, 1.0, 100.0]
    chosen = [p for p in sweep["points"] if p["chosen"]]
    assert [p["x"] for p in chosen] == [run.config.params["C"]]
    assert chosen[0]["y"] == max(p["y"] for p in sweep["points"])
    assert np.isclose(chosen[0]["y"], run.validation["balanced_accuracy"])


_WIDTH_PROBE = ("<script>window.addEventListener('load',function(){var d=document."
                "createElement('pre');d.id='probe';d.textContent='W='+document."
                "documentElement.scrollWidth;document.body.appendChild(d);});</script>")


@pytest.mark.skipif(shutil.which("chromium") is None and shutil.which("chromium-browser")
                    is None, reason="headless Chromium is not installed")
def test_pages_fit_1280_px_without_horizontal_scrolling(world, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    pages = [world["reports"] / "index.html", world["runs"][-1].run_dir / RUN_PAGE]
    for page in pages:
        probe = page.with_name(f"probe-{page.name}")
        probe.write_text(page.read_text().replace("</body>", _WIDTH_PROBE + "</body>"))
        try:
            out = subprocess.run(
                [str(browser), "--headless", "--no-sandbox", "--disable-gpu",
                 "--window-size=1280,900", "--virtual-time-budget=3000", "--dump-dom",
                 probe.as_uri()], capture_output=True, text=True, timeout=120)
        finally:
            probe.unlink()
        width = re.search(r'id="probe">W=(\d+)<', out.stdout)
        assert width, out.stderr[-500:]
        assert int(width[1]) <= 1280, page


def test_a_fine_tuned_run_page_marks_the_hand_over(world):
    from pipeline.runs.record import FINETUNE_STAGE, FinetuneInfo, RunMetrics, RunRecord

    dense = next(r for r in world["runs"] if r.config.kind == "dense")
    run_dir = dense.run_dir.with_name(dense.run_id + "-ft")
    shutil.copytree(dense.run_dir, run_dir)
    try:
        record, metrics = RunRecord.read(run_dir), RunMetrics.read(run_dir)
        record.stage, record.run_id = FINETUNE_STAGE, run_dir.name
        record.finetune = FinetuneInfo(source_run=dense.run_id)
        metrics.head_history = metrics.history
        record.write(run_dir)
        metrics.write(run_dir)
        page = pipeline.report.write_report(world["reports"], run_dir.name)
        refs, text = _check_page(page)
        assert "figures/learning.png" in refs and "hand-over" in text
        assert dense.run_id in text  # where it was fine-tuned from
    finally:
        shutil.rmtree(run_dir)
