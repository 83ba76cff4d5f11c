"""Datasets: layouts, formats, splits and bad input."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from helpers import make_class_folder, make_image
from PIL import Image

from pipeline.data.decode import DecodeError, decode_file, decode_rgb
from pipeline.data.sources import load_dataset
from pipeline.errors import PipelineError


def test_class_folder_layout_ignores_hidden_and_non_images(image_folder: Path):
    (image_folder / "cat" / ".hidden.png").write_bytes(b"x")
    (image_folder / "cat" / "notes.txt").write_text("hello")
    (image_folder / ".DS_Store").write_text("x")
    ds = load_dataset(image_folder)
    assert ds.class_names == ["cat", "dog"]
    assert len(ds.samples) == 24
    assert all(s.id.startswith(("cat/", "dog/")) and s.id.endswith(".png") for s in ds.samples)
    assert {s.label for s in ds.samples if s.id.startswith("dog/")} == {1}
    assert {s.split for s in ds.samples} <= {"train", "validation", "test"}


@pytest.mark.parametrize("names", [("train", "val", "test"), ("Training", "Test"),
                                   ("train", "validation", "test")])
def test_presplit_folder_keeps_its_splits(tmp_path: Path, names):
    root = tmp_path / "presplit"
    for k, split_dir in enumerate(names):
        make_class_folder(root / split_dir, {"a": 5, "b": 5}, start_seed=100 * k)
    ds = load_dataset(root)
    assert ds.class_names == ["a", "b"]
    by_dir = {s.id.split("/")[0]: set() for s in ds.samples}
    for s in ds.samples:
        by_dir[s.id.split("/")[0]].add(s.split)
    test_dir = [n for n in names if n.lower().startswith("test")][0]
    assert by_dir[test_dir] == {"test"}
    val_dirs = [n for n in names if n.lower().startswith("val")]
    if val_dirs:
        assert by_dir[val_dirs[0]] == {"validation"}
        assert by_dir[names[0]] == {"train"}
    else:  # validation carved out of train, never out of test
        assert by_dir[names[0]] <= {"train", "validation"}


def test_csv_manifest_with_and_without_split(tmp_path: Path):
    root = tmp_path / "m"
    rows = []
    for i in range(12):
        make_image(root / "imgs" / f"{i}.jpg", i, fmt="JPEG")
        rows.append([f"imgs/{i}.jpg", "x" if i % 2 else "y", "test" if i < 2 else ""])
    with open(root / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows([["path", "label", "split"], *rows])
    ds = load_dataset(root / "labels.csv")
    assert ds.class_names == ["x", "y"]
    got = {s.id: s for s in ds.samples}
    assert got["imgs/0.jpg"].split == "test" and got["imgs/1.jpg"].split == "test"
    assert got["imgs/3.jpg"].label == 0 and got["imgs/4.jpg"].label == 1


def test_csv_path_escaping_root_is_an_error(tmp_path: Path):
    make_image(tmp_path / "outside.png", 1)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "m.csv").write_text("../outside.png,a\n")
    with pytest.raises(PipelineError, match="escapes the dataset root"):
        load_dataset(tmp_path / "d" / "m.csv")


def test_csv_missing_file_is_an_error(tmp_path: Path):
    (tmp_path / "m.csv").write_text("a.png,x\nb.png,y\n")
    with pytest.raises(PipelineError, match="do not exist"):
        load_dataset(tmp_path / "m.csv")


@pytest.mark.parametrize("layout, message", [
    ({"a": 0, "b": 3}, "class a has no images"),
    ({"a": 3}, "only one class"),
    ({}, "no class subfolders"),
])
def test_bad_datasets_are_one_clear_error(tmp_path: Path, layout, message):
    root = tmp_path / "bad"
    root.mkdir()
    for name, n in layout.items():
        (root / name).mkdir()
        make_class_folder(root, {name: n})
    with pytest.raises(PipelineError, match=message):
        load_dataset(root)


def test_folder_without_images(tmp_path: Path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "readme.txt").write_text("x")
    with pytest.raises(PipelineError, match="no images"):
        load_dataset(tmp_path)


def test_unknown_path_is_an_error(tmp_path: Path):
    with pytest.raises(PipelineError, match="no such folder"):
        load_dataset(tmp_path / "nope")


def test_formats_become_rgb(tmp_path: Path):
    rgb = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    gray = rgb[..., 0]
    Image.fromarray(gray).save(tmp_path / "g.png")
    out = decode_file(str(tmp_path / "g.png"))
    assert out.shape == (20, 30, 3) and (out == gray[..., None]).all()
    Image.fromarray(rgb).convert("RGBA").save(tmp_path / "a.png")
    assert (decode_file(str(tmp_path / "a.png")) == rgb).all()
    Image.fromarray(rgb).save(tmp_path / "b.bmp")
    assert (decode_file(str(tmp_path / "b.bmp")) == rgb).all()
    pal = Image.fromarray(rgb).convert("P")
    pal.save(tmp_path / "p.png")
    assert (decode_file(str(tmp_path / "p.png")) == np.asarray(pal.convert("RGB"))).all()
    g16 = (gray.astype(np.uint16) * 257)
    Image.fromarray(g16).save(tmp_path / "d16.png")
    out16 = decode_file(str(tmp_path / "d16.png"))
    assert (out16[..., 0] == gray).all()
    frames = [Image.fromarray(np.full((8, 8, 3), v, np.uint8)).convert("P") for v in (0, 255)]
    frames[0].save(tmp_path / "f.gif", save_all=True, append_images=frames[1:])
    first = decode_file(str(tmp_path / "f.gif"))
    assert first.shape == (8, 8, 3) and first.max() == 0  # the first frame, not the second
    smooth = np.broadcast_to(np.linspace(0, 255, 30, dtype=np.uint8)[None, :, None], (20, 30, 3))
    Image.fromarray(np.ascontiguousarray(smooth)).save(tmp_path / "j.jpg", quality=95)
    assert np.abs(decode_file(str(tmp_path / "j.jpg")).astype(int) - smooth).mean() < 3


@pytest.mark.parametrize("data", [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n\0\0"])
def test_undecodable_bytes_raise_decode_error(data: bytes):
    with pytest.raises(DecodeError):
        decode_rgb(data)


def test_truncated_png_raises_decode_error(tmp_path: Path):
    p = make_image(tmp_path / "t.png", 3, size=(64, 64))
    p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])
    with pytest.raises(DecodeError):
        decode_file(str(p))


def test_split_is_stable_when_other_images_come_and_go(tmp_path: Path):
    """Exact stratification moves only the few samples at a boundary: at most one per
    boundary (2 per class) and added or removed image."""
    root = make_class_folder(tmp_path / "s", {"a": 40, "b": 40})
    before = {s.id: s.split for s in load_dataset(root).samples}
    for i in range(5):
        (root / "a" / f"img{i:03d}.png").unlink()
    for i in range(10):
        make_image(root / "b" / f"new{i:03d}.png", 1000 + i)
    after = {s.id: s.split for s in load_dataset(root).samples}
    common = set(before) & set(after)
    assert len(common) == 75
    moved = [i for i in common if before[i] != after[i]]
    assert len(moved) <= 2 * (5 + 10)
    assert len(moved) < len(common) // 4


def test_split_fractions_and_seed(tmp_path: Path):
    root = make_class_folder(tmp_path / "f", {"a": 100, "b": 60})
    ds = load_dataset(root)
    counts = Counter((ds.class_names[s.label], s.split) for s in ds.samples)
    assert [counts["a", k] for k in ("train", "validation", "test")] == [70, 15, 15]
    assert [counts["b", k] for k in ("train", "validation", "test")] == [42, 9, 9]
    other = load_dataset(root, seed=1)
    assert {s.id: s.split for s in other.samples} != {s.id: s.split for s in ds.samples}
    with pytest.raises(PipelineError):
        load_dataset(make_class_folder(tmp_path / "x", {"a": 2, "b": 2}), split=(0.5, 0.6, 0.1))


def test_elpv_builtin_labels():
    ds = load_dataset("elpv")
    assert len(ds.samples) == 2624
    assert ds.class_counts() == {"functional": 1803, "defective": 821}
    four = load_dataset("elpv", elpv_levels=True)
    assert sum(four.class_counts().values()) == 2624 and len(four.class_names) == 4


def test_an_unreadable_image_is_a_named_error(image_folder: Path, monkeypatch):
    import builtins

    real_open = builtins.open

    def deny(path, *args, **kwargs):
        if str(path).endswith("cat/img001.png"):
            raise PermissionError(13, "Permission denied")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", deny)
    with pytest.raises(PipelineError, match=r"cat/img001.png: cannot read \(Permission denied\)"):
        load_dataset(image_folder)


def test_elpv_labels_from_probabilities():
    from pipeline.data.builtin import elpv_label, elpv_probabilities

    rows = elpv_probabilities()
    assert len(rows) == 2624
    assert all(min(abs(p - i / 3) for i in range(4)) < 1e-3 for _, p in rows)
    assert [elpv_label(p) for p in (0.0, 0.3334, 0.6667, 1.0)] == [0, 0, 1, 1]
    assert [elpv_label(p, levels=True) for p in (0.0, 0.3334, 0.6667, 1.0)] == [0, 1, 2, 3]


def test_split_fractions_must_be_finite():
    from pipeline.data.splits import fractions_problem

    assert fractions_problem((0.7, 0.15, 0.15)) is None
    assert fractions_problem((float("nan"), 0.5, 0.5)) is not None
    with pytest.raises(PipelineError, match="expected three finite, non-negative"):
        load_dataset("elpv", split=(0.5, float("nan"), 0.5))
