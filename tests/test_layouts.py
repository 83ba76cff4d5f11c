"""Every folder layout read right or refused in one line; splits that hold on small data."""

from __future__ import annotations

import os
import shutil
from collections import Counter

import pytest
from helpers import make_class_folder, make_image

from pipeline.data.sources import load_dataset
from pipeline.errors import PipelineError


def _split_classes(ds) -> Counter:
    return Counter((s.split, ds.class_names[s.label]) for s in ds.samples)


@pytest.mark.parametrize("train_name,test_name", [
    ("training_set", "test_set"), ("Train", "TEST"), ("trainset", "testset"),
    ("training", "eval"), ("TRAINING_SET", "Testing")])
def test_split_folders_under_common_names_are_splits_not_classes(tmp_path, train_name,
                                                                  test_name):
    root = tmp_path / "kaggle"
    make_class_folder(root / train_name, {"cats": 10, "dogs": 10})
    make_class_folder(root / test_name, {"cats": 5, "dogs": 5}, start_seed=500)
    ds = load_dataset(root)
    assert ds.class_names == ["cats", "dogs"]
    for s in ds.samples:
        top = s.id.split("/")[0]
        assert s.split in (("test",) if top == test_name else ("train", "validation"))
        assert ds.class_names[s.label] == s.id.split("/")[1]
    assert ds.split_origin == {"train": "given", "validation": "carved", "test": "given"}


@pytest.mark.parametrize("val_name", ["val", "valid", "validation_set", "dev", "Validation"])
def test_train_and_val_only_gets_a_test_split_carved_out_of_train(tmp_path, val_name):
    root = tmp_path / "pt"
    make_class_folder(root / "train", {"ants": 20, "bees": 20})
    make_class_folder(root / val_name, {"ants": 5, "bees": 5}, start_seed=500)
    ds = load_dataset(root)
    by = _split_classes(ds)
    assert by["validation", "ants"] == 5 and by["validation", "bees"] == 5
    assert all(s.split == "validation" for s in ds.samples if s.id.startswith(val_name + "/"))
    # 15 / (70 + 15) of each class's 20 training images, exactly, out of train only
    assert by["test", "ants"] == by["test", "bees"] == 4
    assert by["train", "ants"] == by["train", "bees"] == 16
    assert ds.split_origin == {"train": "given", "validation": "given", "test": "carved"}


def test_carving_is_deterministic_and_stable(tmp_path):
    root = tmp_path / "pt"
    make_class_folder(root / "train", {"a": 30, "b": 30})
    make_class_folder(root / "val", {"a": 5, "b": 5}, start_seed=500)
    first = {s.id: s.split for s in load_dataset(root).samples}
    assert first == {s.id: s.split for s in load_dataset(root).samples}


def test_a_class_folder_with_image_subfolders_is_refused_not_flattened(tmp_path):
    root = make_class_folder(tmp_path / "d", {"cat": 4, "dog": 4})
    make_image(root / "dog" / "puppies" / "p0.png", 99)
    with pytest.raises(PipelineError, match=r"dog/ holds image subfolders \(dog/puppies\)"):
        load_dataset(root)


def test_an_unrecognised_split_like_layout_is_refused(tmp_path):
    root = tmp_path / "d"
    make_class_folder(root / "part1", {"cat": 3, "dog": 3})
    make_class_folder(root / "part2", {"cat": 3, "dog": 3}, start_seed=50)
    with pytest.raises(PipelineError, match="part1/ holds image subfolders"):
        load_dataset(root)


def test_a_split_folder_holding_images_directly_is_refused(tmp_path):
    root = tmp_path / "d"
    make_class_folder(root / "train", {"cat": 3, "dog": 3})
    make_image(root / "test" / "x.png", 7)
    with pytest.raises(PipelineError, match="split folder test/ holds images directly"):
        load_dataset(root)


def test_stray_folder_and_class_in_one_split_are_warned(tmp_path):
    root = tmp_path / "d"
    make_class_folder(root / "train", {"cat": 6, "dog": 6, "fox": 6})
    make_class_folder(root / "test", {"cat": 3, "dog": 3}, start_seed=100)
    make_class_folder(root / "extras", {"cat": 2}, start_seed=200)
    ds = load_dataset(root)
    text = "\n".join(ds.warnings)
    assert "extras/" in text and "ignored" in text
    assert "fox (train)" in text
    assert not any(s.id.startswith("extras/") for s in ds.samples)


def test_symlink_leaving_the_root_is_refused_by_folder_and_csv_alike(tmp_path):
    outside = make_image(tmp_path / "outside" / "o.png", 5)
    root = make_class_folder(tmp_path / "d", {"cat": 3, "dog": 3})
    os.symlink(outside, root / "cat" / "link.png")
    with pytest.raises(PipelineError, match="symlink that leaves the dataset root"):
        load_dataset(root)
    (root / "cat" / "link.png").unlink()
    os.symlink(outside, root / "link.png")
    (root / "m.csv").write_text("cat/img000.png,cat\ndog/img000.png,dog\nlink.png,cat\n")
    with pytest.raises(PipelineError, match="leaves the dataset root through a symlink"):
        load_dataset(root / "m.csv")


def test_csv_symlink_inside_the_root_keeps_the_listed_path_as_id(tmp_path):
    root = make_class_folder(tmp_path / "d", {"cat": 3, "dog": 3})
    os.symlink(root / "cat" / "img000.png", root / "alias.png")
    (root / "m.csv").write_text("alias.png,cat\ndog/img000.png,dog\ncat/img001.png,cat\n"
                                "dog/img001.png,dog\n")
    ids = {s.id for s in load_dataset(root / "m.csv").samples}
    assert "alias.png" in ids and "cat/img000.png" not in ids


def test_csv_empty_label_is_an_error(tmp_path):
    root = make_class_folder(tmp_path / "d", {"cat": 2, "dog": 2})
    (root / "m.csv").write_text("path,label\ncat/img000.png,cat\ndog/img000.png,\n")
    with pytest.raises(PipelineError, match=r"row 3 \(dog/img000.png\) has an empty label"):
        load_dataset(root / "m.csv")


def test_csv_unrecognised_header_names_the_expected_columns(tmp_path):
    root = make_class_folder(tmp_path / "d", {"cat": 2, "dog": 2})
    (root / "m.csv").write_text("picture,kind\ncat/img000.png,cat\ndog/img000.png,dog\n")
    with pytest.raises(PipelineError, match=r"unrecognised header 'picture,kind'; expected "
                                            r"columns path,label\[,split\]"):
        load_dataset(root / "m.csv")


def test_csv_header_with_synonyms_in_any_order(tmp_path):
    root = make_class_folder(tmp_path / "d", {"cat": 4, "dog": 4})
    rows = [f"{c},{c}/img{i:03d}.png,{'test' if i == 0 else ''}" for c in ("cat", "dog")
            for i in range(4)]
    (root / "m.csv").write_text("class,filename,split\n" + "\n".join(rows) + "\n")
    ds = load_dataset(root / "m.csv")
    assert ds.class_names == ["cat", "dog"]
    got = {s.id: s for s in ds.samples}
    assert got["dog/img000.png"].split == "test"
    assert ds.class_names[got["dog/img002.png"].label] == "dog"


def test_identical_bytes_under_two_labels_are_warned(tmp_path):
    root = make_class_folder(tmp_path / "d", {"cat": 4, "dog": 4})
    shutil.copy(root / "cat" / "img000.png", root / "dog" / "copy.png")
    ds = load_dataset(root)
    text = "\n".join(ds.warnings)
    assert "identical bytes under different labels" in text
    assert "cat/img000.png (cat)" in text and "dog/copy.png (dog)" in text
    # and the two copies share a split: no leakage through duplicates
    splits = {s.split for s in ds.samples if s.id in ("cat/img000.png", "dog/copy.png")}
    assert len(splits) == 1


def test_small_data_split_is_exactly_stratified(tmp_path):
    """The issue's 48-image case: today 40/4/5 with validation classes 3/1, test 1/4."""
    root = make_class_folder(tmp_path / "d", {"a": 24, "b": 24})
    by = _split_classes(load_dataset(root))
    for c in ("a", "b"):
        assert (by["train", c], by["validation", c], by["test", c]) == (17, 4, 3)


@pytest.mark.parametrize("n", [3, 4, 5, 7])
def test_every_class_of_three_or_more_gets_validation_and_test(tmp_path, n):
    root = make_class_folder(tmp_path / "d", {"a": n, "b": 30})
    ds = load_dataset(root)
    by = _split_classes(ds)
    assert by["validation", "a"] >= 1 and by["test", "a"] >= 1 and by["train", "a"] >= 1
    assert any("fewer than 10 samples of a" in w for w in ds.warnings)


@pytest.mark.parametrize("bad", [(float("nan"), 0.5, 0.5), (0.7, float("inf"), 0.15),
                                 (0.7, 0.15), (-0.1, 0.6, 0.5)])
def test_non_finite_or_malformed_split_fractions_are_refused(tmp_path, bad):
    root = make_class_folder(tmp_path / "d", {"a": 4, "b": 4})
    with pytest.raises(PipelineError, match="--split"):
        load_dataset(root, split=bad)
