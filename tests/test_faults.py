"""Faults: datasets that share a name, corrupted caches, litter, a full disk, a read-only
cache folder, Ctrl-C, nothing decodable, file names that are not UTF-8, and what extract says.

Tests run as root, so permission bits prove nothing: machine failures are injected at the
writer (the shard save, the HDF5 write, the lock) as the ``OSError`` the kernel would raise.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from helpers import TINY, make_cache, make_class_folder, make_image
from test_extract import extract_until_shards
from typer.testing import CliRunner

import pipeline.cache.store as store
import pipeline.cache.writer as writer_mod
from pipeline.cache import load_feature_set, read_info, verify_feature_set
from pipeline.cache.work import WorkShards
from pipeline.cli import app
from pipeline.data.hash_cache import HASHES_DIR
from pipeline.errors import PipelineError
from pipeline.extract import run_extraction


def one_line_error(call, *args, **kwargs) -> str:
    with pytest.raises(PipelineError) as e:
        call(*args, **kwargs)
    assert "\n" not in str(e.value)
    return str(e.value)


# -- 1. identity: a folder's name never decides its cache file -----------------------------
def test_two_datasets_with_the_same_folder_name_never_share_a_cache(tmp_path):
    a = make_class_folder(tmp_path / "a" / "data", {"cat": 4, "dog": 4}, start_seed=0)
    b = make_class_folder(tmp_path / "b" / "data", {"x": 3, "y": 3}, start_seed=100)
    ra = run_extraction(a, **TINY)[0]
    rb = run_extraction(b, **TINY)[0]
    assert ra.path != rb.path and ra.path.name.startswith("data-")
    fa = load_feature_set(ra.path)
    assert fa.class_names == ["cat", "dog"] and len(fa) == 8  # not replaced by b
    assert run_extraction(a, **TINY)[0].hit
    make_image(a / "cat" / "more.png", 555)
    grown = run_extraction(a, **TINY)[0]
    assert grown.path == ra.path and grown.n_new == 1 and grown.n_reused == 8


def test_two_manifests_with_the_same_name_never_share_a_cache(tmp_path):
    paths = []
    for side, seed in (("a", 0), ("b", 50)):
        root = make_class_folder(tmp_path / side, {"p": 3, "q": 3}, start_seed=seed)
        rows = [f"{c}/img{i:03d}.png,{c}" for c in ("p", "q") for i in range(3)]
        (root / "train.csv").write_text("\n".join(rows) + "\n")
        paths.append(run_extraction(root / "train.csv", **TINY)[0].path)
    assert paths[0] != paths[1]
    assert {load_feature_set(p).info.dataset_source for p in paths} == \
        {str(tmp_path / s / "train.csv") for s in "ab"}


def test_a_file_under_the_previous_naming_is_not_adopted(tmp_path):
    a = make_class_folder(tmp_path / "a" / "data", {"cat": 4, "dog": 4})
    b = make_class_folder(tmp_path / "b" / "data", {"cat": 4, "dog": 4}, start_seed=40)
    rb = run_extraction(b, **TINY)[0]
    info = read_info(rb.path)
    previous = rb.path.parent / f"data-{info.base}-{info.options_key[:12]}.h5"
    rb.path.rename(previous)  # b's rows, under the name a would have had before
    ra = run_extraction(a, **TINY)[0]
    assert ra.path != previous and ra.n_new == 8 and ra.n_reused == 0
    assert load_feature_set(previous).info.dataset_source == str(b)  # left alone


# -- 2. integrity on every load ---------------------------------------------------------------
def flip_label(f):
    f["labels"][0] = (int(f["labels"][0]) + 1) % 2


def flip_split(f):
    s = f["split"][()]
    s[0] = b"test" if s[0] != b"test" else b"train"
    f["split"][...] = s


def flip_sha(f):
    s = f["sha256"][()]
    s[0] = s[0][:-1] + (b"0" if s[0][-1:] != b"0" else b"1")
    f["sha256"][...] = s


def bad_id_bytes(f):
    raw = f["ids"][()]
    raw[0] = b"cat/\xff\xfe.png"
    f["ids"][...] = raw


def flip_feature(f):
    f["features"][0] = f["features"][0] + 1.0


FLIPS = [flip_label, flip_split, flip_sha, bad_id_bytes, flip_feature]


@pytest.mark.parametrize("flip", FLIPS, ids=lambda f: f.__name__)
def test_a_flipped_byte_is_refused_on_load_and_rebuilt_by_extract(image_folder, flip):
    first = run_extraction(image_folder, **TINY)[0]
    with h5py.File(first.path, "r+") as f:
        flip(f)
    assert verify_feature_set(first.path) != []
    message = one_line_error(load_feature_set, first.path)
    assert "pipeline extract" in message and str(image_folder) in message
    again = run_extraction(image_folder, **TINY)[0]
    assert not again.hit and again.n_new == 24 and again.n_reused == 0  # nothing reused
    assert verify_feature_set(again.path) == []
    assert len(load_feature_set(again.path)) == 24


def test_verify_reports_bad_bytes_and_fit_head_refuses_in_one_line(tmp_path):
    cache = make_cache(tmp_path / "cache" / "synth.h5", n=60)
    with h5py.File(cache, "r+") as f:
        bad_id_bytes(f)
        flip_split(f)
    runner = CliRunner()
    out = runner.invoke(app, ["cache", "verify", str(cache)])
    assert out.exit_code == 1 and out.output.startswith("BAD")
    fit = runner.invoke(app, ["fit-head", str(cache), "--head", "logreg", "--jobs", "1", "-q",
                              "--reports-dir", str(tmp_path / "reports")])
    assert isinstance(fit.exception, PipelineError)
    assert "\n" not in str(fit.exception) and "pipeline extract" in str(fit.exception)
    assert not (tmp_path / "reports").exists()


# -- 3. rm and prune ------------------------------------------------------------------------
def test_cache_rm_and_prune(tmp_path):
    cache = tmp_path / "cache"
    used, spare, old = (make_cache(cache / f"{n}.h5", n=60) for n in ("used", "spare", "old"))
    (cache / "spare.work").mkdir()
    reports = tmp_path / "reports"
    runner = CliRunner()
    out = runner.invoke(app, ["fit-head", str(used), "--head", "logreg", "--jobs", "1", "-q",
                              "--reports-dir", str(reports)])
    assert out.exit_code == 0, out.output
    dry = runner.invoke(app, ["cache", "prune", "--dry-run", "--reports-dir", str(reports)])
    assert dry.exit_code == 0 and sorted(dry.output.split()) == sorted(
        ["would", "remove", str(old), "would", "remove", str(spare)])
    assert spare.exists() and old.exists()
    os.utime(old, (time.time() - 400 * 86400,) * 2)
    by_date = runner.invoke(app, ["cache", "prune", "--older-than",
                                  time.strftime("%Y-%m-%d", time.gmtime(time.time() - 86400 * 30))])
    assert by_date.exit_code == 0 and not old.exists() and spare.exists()
    pruned = runner.invoke(app, ["cache", "prune", "--reports-dir", str(reports)])
    assert pruned.exit_code == 0 and not spare.exists() and not (cache / "spare.work").exists()
    assert used.exists()
    rm = runner.invoke(app, ["cache", "rm", "us"])  # a unique prefix, as `cache info` takes
    assert rm.exit_code == 0 and not used.exists()
    assert sorted(p.name for p in cache.iterdir()) == []
    bad = runner.invoke(app, ["cache", "prune", "--older-than", "yesterday"])
    assert isinstance(bad.exception, PipelineError) and "YYYY-MM-DD" in str(bad.exception)


def test_cache_rm_refuses_a_cache_being_extracted(tmp_path):
    path = make_cache(tmp_path / "cache" / "busy.h5", n=30)
    from pipeline.cache.catalog import remove_caches
    from pipeline.fileio import file_lock

    with file_lock(writer_mod.lock_path(path)):
        assert "running" in one_line_error(remove_caches, [path])
    assert path.exists()


# -- 4. litter and the umask ------------------------------------------------------------------
@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_litter_is_cleaned_and_files_follow_the_umask(image_folder, umask):
    for image in image_folder.rglob("*.*"):  # old enough for the hash cache to remember
        os.utime(image, (image.stat().st_atime, image.stat().st_mtime - 600))
    old = os.umask(umask)
    try:
        first = run_extraction(image_folder, **TINY)[0]
        assert first.path.stat().st_mode & 0o777 == 0o666 & ~umask
        tmp_h5 = first.path.parent / f".{first.path.name}.killed.tmp"
        tmp_h5.write_bytes(b"half an hdf5 file")
        work = first.path.with_suffix(".work")
        WorkShards(work).save(["f" * 64], np.zeros((1, 2), np.float32))  # a finished run's
        (work / ".shard-dead.npz.x1.npz").write_bytes(b"half a shard")
        assert run_extraction(image_folder, **TINY)[0].hit
    finally:
        os.umask(old)
    assert not tmp_h5.exists() and not work.exists()
    # The file, its lock and the hash cache's folder, which holds no temporary files either.
    assert sorted(p.name for p in first.path.parent.iterdir()) == \
        sorted([first.path.name, f".{first.path.stem}.lock", HASHES_DIR])
    assert [p for p in (first.path.parent / HASHES_DIR).iterdir() if p.name.startswith(".")] == []


# -- 5. the machine failing -------------------------------------------------------------------
@pytest.fixture
def read_only_cache(monkeypatch):
    """The cache folder as a read-only mount: taking the lock (which opens a file for
    writing) fails with EROFS."""
    def refuse(path, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(writer_mod, "file_lock", refuse)


def test_read_only_cache_folder_serves_hits_and_refuses_writes_in_one_line(
        image_folder, request):
    first = run_extraction(image_folder, **TINY)[0]
    request.getfixturevalue("read_only_cache")
    again = run_extraction(image_folder, **TINY)[0]
    assert again.hit and len(load_feature_set(again.path)) == 24
    make_image(image_folder / "cat" / "new.png", 321)
    message = one_line_error(run_extraction, image_folder, **TINY)
    assert "Read-only file system" in message and "--cache-dir" in message
    assert len(load_feature_set(first.path)) == 24


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS])
def test_a_full_disk_at_the_shards_keeps_finished_shards_and_resumes(image_folder, monkeypatch,
                                                                     code):
    saved = []
    original = WorkShards.save

    def save(self, sha256, features):
        if len(saved) >= 2:
            raise OSError(code, os.strerror(code))
        saved.append(original(self, sha256, features))
        return saved[-1]

    monkeypatch.setattr(WorkShards, "save", save)
    message = one_line_error(run_extraction, image_folder, **dict(TINY, batch_size=4))
    assert os.strerror(code) in message
    cache = Path(os.environ["PIPELINE_CACHE_DIR"])
    assert not list(cache.glob("*.h5")) and not list(cache.glob(".*.tmp"))
    assert len(list(cache.glob("*.work/shard-*.npz"))) == 2
    monkeypatch.setattr(WorkShards, "save", original)
    resumed = run_extraction(image_folder, **dict(TINY, batch_size=4))[0]
    assert resumed.n_reused == 8 and resumed.n_new == 16
    assert verify_feature_set(resumed.path) == []


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS])
def test_a_full_disk_at_the_hdf5_write_leaves_nothing_that_looks_complete(image_folder,
                                                                          monkeypatch, code):
    def full(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    strings = store._strings
    monkeypatch.setattr(store, "_strings", full)  # fails half-way through the file
    message = one_line_error(run_extraction, image_folder, **TINY)
    assert os.strerror(code) in message
    cache = Path(os.environ["PIPELINE_CACHE_DIR"])
    assert not list(cache.glob("*.h5")) and not list(cache.glob(".*.tmp"))
    assert len(list(cache.glob("*.work/shard-*.npz"))) == 3  # 24 images, batches of 8
    monkeypatch.setattr(store, "_strings", strings)
    resumed = run_extraction(image_folder, **TINY)[0]
    assert resumed.n_new == 0 and resumed.n_reused == 24


def test_ctrl_c_exits_130_saying_finished_work_is_kept(tmp_path):
    data = make_class_folder(tmp_path / "d", {"a": 60, "b": 60})
    cache = tmp_path / "c"
    proc = extract_until_shards(data, cache, 3)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted; finished work is kept and the next run resumes" in err
    assert "Traceback" not in err
    assert len(list(cache.glob("*.work/shard-*.npz"))) >= 3
    assert not list(cache.glob("*.h5"))


# -- 6. nothing decodable --------------------------------------------------------------------
def test_every_image_undecodable_is_one_line_and_no_empty_cache(tmp_path):
    for c in ("a", "b"):
        for i in range(3):
            p = tmp_path / "junk" / c / f"img{i}.png"
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(f"not a png {c}{i}".encode())
    message = one_line_error(run_extraction, tmp_path / "junk", **TINY)
    assert "could be decoded" in message
    assert not list(Path(os.environ["PIPELINE_CACHE_DIR"]).glob("*.h5"))


# -- 7. file names that are not UTF-8 ----------------------------------------------------------
def test_file_names_that_are_not_utf8_extract_load_and_round_trip(image_folder):
    for cls, seed in (("cat", 900), ("dog", 901)):
        src = make_image(image_folder / cls / "tmp.png", seed)
        os.rename(os.fsencode(src), os.path.join(os.fsencode(image_folder / cls), b"caf\xe9.png"))
    first = run_extraction(image_folder, **TINY)[0]
    fs = load_feature_set(first.path)
    odd = sorted(i for i in fs.ids if "caf" in i)
    assert odd == [os.fsdecode(b"cat/caf\xe9.png"), os.fsdecode(b"dog/caf\xe9.png")]
    for i in odd:
        assert os.path.isfile(os.path.join(os.fsencode(image_folder), os.fsencode(i)))
    assert verify_feature_set(first.path) == []
    assert run_extraction(image_folder, **TINY)[0].hit  # and again: no traceback on reruns


# -- 8. what extract says, and what the cache records ------------------------------------------
def test_extract_prints_warnings_and_per_class_splits_and_records_them(tmp_path, capsys):
    root = tmp_path / "kaggle"
    make_class_folder(root / "train", {"cats": 14, "dogs": 14})
    make_class_folder(root / "val", {"cats": 3, "dogs": 3}, start_seed=200)
    make_class_folder(root / "extras", {"misc": 2}, start_seed=300)
    r = run_extraction(root, **dict(TINY, quiet=False))[0]
    err = capsys.readouterr().err
    assert "warning:" in err and "extras/" in err
    assert "given train, validation" in err and "carved test" in err
    info = read_info(r.path)
    assert info.split_origin == {"train": "given", "validation": "given", "test": "carved"}
    counts = info.split_class_counts
    assert counts["validation"] == {"cats": 3, "dogs": 3}
    assert sum(counts["train"].values()) + sum(counts["test"].values()) == 28
    for split, by_class in counts.items():
        assert f"{split:>10}: {sum(by_class.values())} (cats {by_class['cats']}, " \
               f"dogs {by_class['dogs']})" in err
    out = CliRunner().invoke(app, ["cache", "info", r.path.name, "--json"])
    shown = json.loads(out.output)
    assert shown["split_origin"] == info.split_origin
    assert shown["split_class_counts"] == counts


def test_leaderboard_written_by_many_writers_at_once_stays_whole(tmp_path):
    """Two processes refreshing the leaderboard used to share one temporary file name, so one
    writer's rename found the file gone. With unique temporary names every write succeeds and
    the files under their final names are always whole."""
    import csv
    from concurrent.futures import ThreadPoolExecutor

    import pipeline.report  # noqa: F401  (index.html is the report's, refreshed with the CSV)
    from pipeline.runs import fit_heads
    from pipeline.runs.leaderboard import write_leaderboard

    reports = tmp_path / "reports"
    fit_heads([make_cache(tmp_path / "c.h5")], ["logreg"], reports_dir=reports, jobs=1,
              quiet=True)
    with ThreadPoolExecutor(max_workers=8) as pool:
        done = list(pool.map(lambda _: write_leaderboard(reports), range(64)))
    assert len(done) == 64
    with open(reports / "leaderboard.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1 and rows[0]["head"] == "logreg"
    assert (reports / "index.html").read_text().rstrip().endswith("</html>")
    assert not [p.name for p in reports.iterdir() if ".tmp" in p.name]
