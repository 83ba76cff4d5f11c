"""The hash cache: a rerun over unchanged files reads none of them; a changed file, a fresh
file, a damaged or foreign cache file and --rehash are never trusted blindly."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from helpers import TINY, make_class_folder, make_image

from pipeline.data.hash_cache import HASHES_DIR, HashCache, Hasher
from pipeline.data.sources import load_dataset
from pipeline.engines import EngineOptions
from pipeline.extract import run_extraction
from pipeline.fileio import file_sha256


def backdate(root: Path, seconds: float = 600.0) -> None:
    """Files last modified well before they are listed (as on a real dataset)."""
    when = time.time() - seconds
    for f in root.rglob("*"):
        os.utime(f, (when, when))


def hashed(root: Path | str, cache: Path, **kw) -> tuple[Hasher, dict[str, str]]:
    hasher = Hasher(HashCache(cache), **kw)
    ds = load_dataset(root, hasher=hasher)
    return hasher, {s.id: s.sha256 for s in ds.samples}


@pytest.fixture
def data(tmp_path: Path) -> Path:
    root = make_class_folder(tmp_path / "d", {"a": 6, "b": 6})
    backdate(root)
    return root


def test_a_rerun_over_unchanged_files_reads_none_and_agrees_with_reading(data, tmp_path):
    first, shas = hashed(data, tmp_path / "hc")
    assert (first.read, first.remembered) == (12, 0)
    again, same = hashed(data, tmp_path / "hc")
    assert (again.read, again.remembered) == (0, 12)
    assert same == shas == {s.id: s.sha256 for s in load_dataset(data).samples}
    assert shas["a/img000.png"] == file_sha256(data / "a" / "img000.png")


def test_a_changed_file_is_hashed_again(data, tmp_path):
    hashed(data, tmp_path / "hc")
    make_image(data / "a" / "img001.png", seed=99)  # new bytes, new mtime
    backdate(data / "a", 300)
    same_size = data / "b" / "img000.png"
    raw = bytearray(same_size.read_bytes())
    raw[-20] ^= 0xFF  # same size, other bytes
    same_size.write_bytes(bytes(raw))
    os.utime(same_size, (time.time() - 100, time.time() - 100))
    again, shas = hashed(data, tmp_path / "hc")
    assert again.read == 7  # class a's 6 (re-stamped) and the rewritten one
    assert shas["a/img001.png"] == file_sha256(data / "a" / "img001.png")
    assert shas["b/img000.png"] == file_sha256(same_size)


def test_files_modified_just_now_are_hashed_but_not_remembered(tmp_path):
    root = make_class_folder(tmp_path / "d", {"a": 3, "b": 3})  # mtimes: now
    hashed(root, tmp_path / "hc")
    again, _ = hashed(root, tmp_path / "hc")
    assert again.read == 6


@pytest.mark.parametrize("damage", ["flip", "truncate", "garbage", "foreign", "version"])
def test_a_damaged_or_foreign_cache_file_is_ignored_with_one_warning_and_rebuilt(
        data, tmp_path, damage):
    hashed(data, tmp_path / "hc")
    [path] = (tmp_path / "hc").iterdir()
    text = path.read_text()
    if damage == "flip":  # one hex digit of one remembered hash
        at = text.index('"]\n') - 1
        text = text[:at] + ("0" if text[at] != "0" else "1") + text[at + 1:]
    elif damage == "truncate":
        text = text[: len(text) // 2]
    elif damage == "garbage":
        text = "\x00\x01 not json\n" * 3
    elif damage == "foreign":
        other = make_class_folder(tmp_path / "other", {"a": 2, "b": 2})
        backdate(other)
        hashed(other, tmp_path / "hc")
        text = HashCache(tmp_path / "hc").path_for(str(other.resolve())).read_text()
    else:
        text = text.replace('"version": 1', '"version": 99')
    path.write_text(text)
    again, shas = hashed(data, tmp_path / "hc")
    assert again.read == 12 and len(again.warnings) == 1
    assert "hash cache ignored" in again.warnings[0]
    assert shas == {s.id: s.sha256 for s in load_dataset(data).samples}
    third, _ = hashed(data, tmp_path / "hc")
    assert (third.read, third.warnings) == (0, [])


def test_rehash_reads_everything_and_rewrites_the_cache(data, tmp_path):
    hashed(data, tmp_path / "hc")
    forced, shas = hashed(data, tmp_path / "hc", rehash=True)
    assert (forced.read, forced.remembered) == (12, 0)
    assert shas == {s.id: s.sha256 for s in load_dataset(data).samples}
    assert hashed(data, tmp_path / "hc")[0].read == 0


def test_manifest_datasets_use_the_cache_too(data, tmp_path):
    rows = [f"{f.relative_to(data).as_posix()},{f.parent.name}"
            for f in sorted(data.rglob("*.png"))]
    (data / "m.csv").write_text("\n".join(rows) + "\n")
    hashed(data / "m.csv", tmp_path / "hc")
    assert hashed(data / "m.csv", tmp_path / "hc")[0].read == 0


def test_extract_keeps_the_hash_cache_under_the_cache_folder(data, tmp_path, capsys):
    first = run_extraction(data, cache_dir=tmp_path / "cache", **TINY)[0]
    assert list((tmp_path / "cache" / HASHES_DIR).glob("*.jsonl"))
    for path in (tmp_path / "cache" / HASHES_DIR).glob("*.jsonl"):
        path.write_text("damaged\n")
    again = run_extraction(data, cache_dir=tmp_path / "cache", **dict(TINY, quiet=False))[0]
    assert again.hit and again.path == first.path
    assert capsys.readouterr().err.count("hash cache ignored") == 1
    forced = run_extraction(data, cache_dir=tmp_path / "cache",
                            engine=EngineOptions(rehash=True), **TINY)[0]
    assert forced.hit
