"""Extraction into the cache: content addressing, alignment, increments, resume, bad input."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from helpers import TINY, make_class_folder, make_image

import pipeline.data.decode as decode
from pipeline.bases import build_extractor
from pipeline.bases.forward import forward_fn
from pipeline.cache import load_feature_set, verify_feature_set
from pipeline.data.decode import decode_file
from pipeline.data.reader import resize
from pipeline.errors import PipelineError
from pipeline.extract import ExtractOptions, run_extraction


@pytest.fixture
def count_decodes(monkeypatch):
    """Paths decoded, counted at the public decoder. Tests that assert "nothing decoded"
    first see the same fixture count a real run, so a moved patch point fails them."""
    calls = []
    original = decode.decode_file

    def counting(path):
        calls.append(path)
        return original(path)

    monkeypatch.setattr(decode, "decode_file", counting)
    return calls


def fresh_features(root: Path, ids, base="mobilenet_v2_0.35", size=32, **kw) -> np.ndarray:
    """A forward pass of each image on its own, outside the cache machinery."""
    ex = build_extractor(base, weights="none", input_size=size, **kw)
    fn = forward_fn(ex)
    images = np.stack([resize(decode_file(str(root / i)), size).numpy() for i in ids])
    return fn(images)


def test_second_run_is_a_cache_hit_that_decodes_nothing(image_folder, count_decodes):
    first = run_extraction(image_folder, **TINY)[0]
    assert not first.hit and first.n_new == 24 and len(count_decodes) == 24
    count_decodes.clear()
    second = run_extraction(image_folder, **TINY)[0]
    assert second.hit and second.path == first.path
    assert count_decodes == []


def test_rows_stay_aligned_through_rename_add_remove_and_change(image_folder, count_decodes):
    run_extraction(image_folder, **TINY)
    # rename across classes: same bytes, new id and label
    (image_folder / "cat" / "img000.png").rename(image_folder / "dog" / "moved.png")
    (image_folder / "dog" / "img003.png").unlink()
    (image_folder / "cat" / "img005.png").unlink()
    for i in range(3):
        make_image(image_folder / "cat" / f"new{i}.png", 500 + i)
    make_image(image_folder / "dog" / "img007.png", 999)  # same name, new content
    count_decodes.clear()
    r = run_extraction(image_folder, **TINY)[0]
    assert r.n_new == 4 and r.n_reused == 21 and len(count_decodes) == 4
    fs = load_feature_set(r.path)
    on_disk = sorted(p.relative_to(image_folder).as_posix()
                     for p in image_folder.rglob("*.png"))
    assert sorted(fs.ids) == on_disk
    for sid, label in zip(fs.ids, fs.labels, strict=True):
        assert fs.class_names[label] == sid.split("/")[0]
    np.testing.assert_allclose(fs.features, fresh_features(image_folder, fs.ids),
                               rtol=1e-4, atol=1e-5)
    assert verify_feature_set(r.path) == []


def test_undecodable_files_are_skipped_recorded_and_never_labelled(image_folder):
    (image_folder / "cat" / "empty.png").write_bytes(b"")
    (image_folder / "dog" / "text.jpg").write_text("this is not a jpeg")
    good = make_image(image_folder / "dog" / "trunc.png", 77, size=(64, 64))
    good.write_bytes(good.read_bytes()[:200])
    r = run_extraction(image_folder, **TINY)[0]
    fs = load_feature_set(r.path)
    bad = {"cat/empty.png", "dog/text.jpg", "dog/trunc.png"}
    assert {sid for sid, _ in fs.skipped} == bad
    assert not bad & set(fs.ids) and len(fs) == 24
    assert fs.meta["n_skipped"] == 3


def test_several_bases_decode_each_image_once(image_folder, count_decodes):
    results = run_extraction(image_folder, ["mobilenet_v2_0.35", "mobilenet_0.25"],
                             weights="none", input_size=32, batch_size=8, quiet=True)
    assert len(count_decodes) == 24
    assert len({r.path for r in results}) == 2
    a, b = (load_feature_set(r.path) for r in results)
    assert list(a.ids) == list(b.ids) and a.feature_shape != b.feature_shape


def test_feature_options_shape_the_cache(image_folder):
    avg = run_extraction(image_folder, **TINY)[0]
    half = run_extraction(image_folder, **dict(TINY, input_size=64), pooling="none",
                          dtype="float16")[0]
    flat = run_extraction(image_folder, **TINY, pooling="flatten")[0]
    cut = run_extraction(image_folder, **TINY, layer="block_3_expand_relu", pooling="max")[0]
    paths = {avg.path, half.path, flat.path, cut.path}
    assert len(paths) == 4
    fs = load_feature_set(half.path)
    assert fs.features.dtype == np.float16 and fs.features.ndim == 4
    assert fs.xy("train")[0].ndim == 2
    assert load_feature_set(flat.path).features.ndim == 2
    cut_fs = load_feature_set(cut.path)
    assert cut_fs.meta["layer"] == "block_3_expand_relu"
    np.testing.assert_allclose(
        cut_fs.features, fresh_features(image_folder, cut_fs.ids, layer="block_3_expand_relu",
                                        pooling="max"), rtol=1e-4, atol=1e-5)


def test_a_new_split_seed_rewrites_the_split_without_decoding(image_folder, count_decodes):
    a = run_extraction(image_folder, **TINY)[0]
    assert len(count_decodes) == 24
    count_decodes.clear()
    b = run_extraction(image_folder, **TINY, seed=7)[0]
    assert count_decodes == [] and b.n_new == 0 and a.path == b.path
    assert load_feature_set(b.path).meta["split_seed"] == 7


def _cli(*args: str, env: dict | None = None, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pipeline", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _tiny_args(data: Path, cache: Path, *extra: str) -> list[str]:
    return ["extract", str(data), "--base", "mobilenet_v2_0.35", "--weights", "none",
            "--input-size", "96", "--cache-dir", str(cache), "--quiet", *extra]


def extract_until_shards(data: Path, cache: Path, n: int) -> subprocess.Popen:
    """``pipeline extract`` (batches of 2, 96 px) running until ``n`` shards are saved."""
    proc = _cli(*_tiny_args(data, cache, "--batch-size", "2"))
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if len(list(cache.glob("*.work/shard-*.npz"))) >= n:
            break
        time.sleep(0.005)
    assert proc.poll() is None, "extraction finished before it could be stopped"
    return proc


def test_killed_run_resumes_and_equals_an_uninterrupted_run(tmp_path):
    data = make_class_folder(tmp_path / "d", {"a": 60, "b": 60})
    killed_cache, clean_cache = tmp_path / "killed", tmp_path / "clean"
    proc = extract_until_shards(data, killed_cache, 5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not list(killed_cache.glob("*.h5")), "a killed run must not leave a complete cache"
    done = len(list(killed_cache.glob("*.work/shard-*.npz")))
    resumed = run_extraction(data, ["mobilenet_v2_0.35"], weights="none", input_size=96,
                             batch_size=2, cache_dir=killed_cache, quiet=True)[0]
    assert resumed.n_new <= 120 - 2 * done and resumed.n_reused >= 2 * done
    assert not list(killed_cache.glob("*.work"))
    clean = run_extraction(data, ["mobilenet_v2_0.35"], weights="none", input_size=96,
                           batch_size=32, cache_dir=clean_cache, quiet=True)[0]
    a, b = load_feature_set(resumed.path), load_feature_set(clean.path)
    assert list(a.ids) == list(b.ids) and list(a.split) == list(b.split)
    np.testing.assert_allclose(a.features, b.features, rtol=1e-4, atol=1e-5)
    assert a.meta["key"] == b.meta["key"]


def test_two_extractions_of_one_cache_at_once(tmp_path):
    data = make_class_folder(tmp_path / "d", {"a": 20, "b": 20})
    cache = tmp_path / "c"
    procs = [_cli(*_tiny_args(data, cache)) for _ in range(2)]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    files = list(cache.glob("*.h5"))
    assert len(files) == 1 and verify_feature_set(files[0]) == []
    assert len(load_feature_set(files[0])) == 40


@pytest.mark.parametrize("args, message, code", [  # 2: usage error; 1: failure while running
    (["extract", "{missing}"], "no such folder", 1),
    (["extract", "{data}", "--base", "resnet5"], "unknown base 'resnet5'", 2),
    (["extract", "{data}", "--pooling", "median"], "unknown pooling", 2),
    (["extract", "{data}", "--weights", "{missing}"], "no such file", 2),
    (["extract", "{data}", "--dtype", "int8"], "unknown dtype", 2),
    (["extract", "{single}"], "only one class", 1),
    (["cache", "info", "{missing}"], "no such feature cache", 1),
])
def test_cli_bad_input_is_one_line_and_nonzero(tmp_path, image_folder, args, message, code):
    single = make_class_folder(tmp_path / "single", {"only": 3})
    fill = {"missing": str(tmp_path / "missing"), "data": str(image_folder),
            "single": str(single)}
    p = subprocess.run([sys.executable, "-m", "pipeline", *[a.format(**fill) for a in args]],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == code
    assert "Traceback" not in p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and message in lines[0]


def test_cli_extract_ls_info_verify(tmp_path, image_folder):
    cache = tmp_path / "c"
    env = dict(os.environ, PIPELINE_CACHE_DIR=str(cache))
    out, err = _cli(*_tiny_args(image_folder, cache), env=env).communicate(timeout=300)
    run = lambda *a: subprocess.run([sys.executable, "-m", "pipeline", *a], env=env,  # noqa: E731
                                    capture_output=True, text=True, timeout=120)
    import json

    ls = json.loads(run("cache", "ls", "--json").stdout)
    assert len(ls) == 1 and ls[0]["rows"] == 24 and ls[0]["base"] == "mobilenet_v2_0.35"
    info = json.loads(run("cache", "info", ls[0]["file"], "--json").stdout)
    assert info["class_names"] == ["cat", "dog"] and sum(info["split_counts"].values()) == 24
    assert info["weights"] == "none" and len(info["weights_id"]) == 64
    assert run("cache", "verify").returncode == 0
    path = cache / ls[0]["file"]
    with h5py.File(path, "r+") as f:
        f["features"][0] = f["features"][0] + 1.0
    bad = run("cache", "verify")
    assert bad.returncode == 1 and "BAD" in bad.stdout
    shutil.copy(path, tmp_path / "copy.h5")


def test_compression_changes_the_file_not_the_numbers(image_folder, tmp_path):
    raw = run_extraction(image_folder, **TINY, pooling="none", compression="none")[0]
    with h5py.File(raw.path) as f:
        assert f["features"].compression is None
        before = f["features"][()]
    lzf = run_extraction(image_folder, **TINY, pooling="none", compression="lzf",
                         cache_dir=tmp_path / "lzf")[0]
    assert lzf.path.name == raw.path.name  # compression is not part of the key
    with h5py.File(lzf.path) as f:
        assert f["features"].compression == "lzf"
        np.testing.assert_array_equal(f["features"][()], before)
    with h5py.File(run_extraction(image_folder, **TINY)[0].path) as f:  # pooled: auto = raw
        assert f["features"].compression is None


# -- the options schema ------------------------------------------------------------------
EXPERIMENT_EXTRACT = {"weights": "none", "input_size": 64, "layer": "block_3_expand_relu",
                      "pooling": "max", "dtype": "float16", "batch_size": 4,
                      "split": [0.8, 0.1, 0.1], "seed": 3, "elpv_levels": True,
                      "compression": "gzip", "runtime": "onnxruntime", "precision": "float32"}


def test_extract_options_take_every_experiment_key():
    o = ExtractOptions.from_mapping(EXPERIMENT_EXTRACT, "experiment.toml [extract]")
    assert o.split == (0.8, 0.1, 0.1) and o.compression == "gzip" and o.elpv_levels is True
    assert o.to_dict() == EXPERIMENT_EXTRACT
    assert ExtractOptions().split == (0.7, 0.15, 0.15) and ExtractOptions().weights == "imagenet"


@pytest.mark.parametrize("table, fragment", [
    ({"seed": "x"}, "seed = 'x': expected a whole number"),
    ({"input_size": "big"}, "input_size = 'big': expected a whole number"),
    ({"batch_size": 0}, "batch_size = 0: expected a value at least 1"),
    ({"elpv_levels": 1}, "elpv_levels = 1: expected true or false"),
    ({"split": [float("nan"), 0.5, 0.5]}, "split = (nan, 0.5, 0.5): expected three"),
    ({"split": [0.5, float("inf"), 0.5]}, "expected three finite, non-negative"),
    ({"split": [0.7, 0.3]}, "expected three finite, non-negative"),
    ({"split": [0.5, 0.6, 0.1]}, "fractions must sum to 1"),
    ({"split": "0.7,x,0.1"}, "split = '0.7,x,0.1': expected a list of"),
    ({"pooling": "median"}, "unknown pooling; expected one of avg, max, flatten, none"),
    ({"dtype": "int8"}, "unknown dtype"),
    ({"compression": "zip"}, "unknown compression"),
    ({"poolng": "avg"}, "unknown key(s) poolng (did you mean pooling?)"),
])
def test_extract_options_reject_bad_values_in_one_line(table, fragment):
    with pytest.raises(PipelineError) as e:
        ExtractOptions.from_mapping(table, "exp.toml [extract]")
    message = str(e.value)
    assert "\n" not in message and message.startswith("exp.toml [extract]: ")
    assert fragment in message


def test_unknown_keyword_fails_before_any_work(tmp_path):
    with pytest.raises(PipelineError, match=r"unknown key\(s\) polling") as e:
        run_extraction(tmp_path / "no-such-data", polling="avg")
    assert "\n" not in str(e.value)


def test_options_object_and_keywords_are_the_same_extraction(image_folder):
    first = run_extraction(image_folder, **TINY)[0]
    options = ExtractOptions(weights="none", input_size=32, batch_size=8)
    again = run_extraction(image_folder, ["mobilenet_v2_0.35"], options, quiet=True)[0]
    assert again.hit and again.path == first.path
    third = run_extraction(image_folder, ["mobilenet_v2_0.35"], options, quiet=True, seed=5)[0]
    assert not third.hit and third.n_new == 0
    assert load_feature_set(third.path).info.split_seed == 5


def test_cli_flags_take_defaults_and_help_from_the_schema():
    import inspect
    import typing

    from pipeline.cli.extract_cmd import extract as command

    params = inspect.signature(command).parameters
    hints = typing.get_type_hints(command, include_extras=True)
    for name in ExtractOptions.names():
        default = ExtractOptions.default(name)
        if name == "split":
            default = ",".join(f"{f:g}" for f in default)
        assert params[name].default == default, name
        assert hints[name].__metadata__[0].help == ExtractOptions.help(name), name
