"""Extraction runtimes: every installed runtime gives TensorFlow's features within float
tolerance (so the runtime is metadata, not key), auto times once per machine and remembers,
converted models are verified before use, bfloat16 is refused where it cannot run."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from helpers import TINY

from pipeline.bases.runtimes import RUNTIMES, RuntimeRequest, open_runtime
from pipeline.cache import FeatureSetInfo, load_feature_set
from pipeline.cache.key import options_key
from pipeline.errors import PipelineError
from pipeline.extract import ExtractOptions, run_extraction
from pipeline.extract.options import PRECISIONS
from pipeline.extract.options import RUNTIMES as OPTION_RUNTIMES
from pipeline.progress import Reporter

CONVERTED = ("onnxruntime", "openvino")
HAS_CONVERTER = all(importlib.util.find_spec(m) for m in ("onnx", "tf2onnx"))


def _installed(name: str) -> bool:
    return HAS_CONVERTER and importlib.util.find_spec(name) is not None


@pytest.fixture(scope="module")
def machine_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One per-machine runtimes folder for the module: the tiny base converts once."""
    return tmp_path_factory.mktemp("runtimes")


@pytest.fixture(autouse=True)
def runtimes_dir(machine_store: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PIPELINE_RUNTIMES_DIR", str(machine_store))
    return machine_store


def _extract(folder: Path, cache: Path, **kw) -> tuple[Path, np.ndarray, FeatureSetInfo]:
    result = run_extraction(folder, cache_dir=cache, **{**TINY, **kw})[0]
    fs = load_feature_set(result.path)
    return result.path, fs.features, fs.info


@pytest.mark.parametrize("runtime", [
    pytest.param(name, marks=pytest.mark.skipif(not _installed(name),
                                                reason=f"{name} not installed"))
    for name in CONVERTED])
def test_runtime_features_agree_with_tensorflow(image_folder, tmp_path, runtime):
    path_tf, ref, info_tf = _extract(image_folder, tmp_path / "tf", runtime="tensorflow")
    path, got, info = _extract(image_folder, tmp_path / runtime, runtime=runtime)
    scale = np.abs(ref).max()
    assert scale > 0
    assert np.abs(got - ref).max() <= 1e-4 * scale
    # the runtime is recorded, not keyed: the same file name, the same options key
    assert (info.runtime, info_tf.runtime) == (runtime, "tensorflow")
    assert path.name == path_tf.name and info.options_key == info_tf.options_key
    assert info.precision == "float32"


@pytest.mark.skipif(not any(_installed(n) for n in CONVERTED), reason="no fast runtime")
def test_auto_times_once_then_remembers_the_choice(image_folder, tmp_path, runtimes_dir,
                                                   capsys, monkeypatch):
    from pipeline.bases.runtimes import choose

    monkeypatch.setattr(choose, "AUTO_MIN_IMAGES", 1)  # 24 images are worth timing here
    # a batch size no other test uses: this extractor's choice is not remembered yet
    _, first, info = _extract(image_folder, tmp_path / "a", runtime="auto", batch_size=5,
                              quiet=False)
    err = capsys.readouterr().err
    assert "runtime auto:" in err and "chosen in" in err
    choices = json.loads((runtimes_dir / "choices.json").read_text())
    (entry,) = [e for e in choices.values() if e["batch_size"] == 5]
    rates = entry["images_per_s"]
    assert entry["runtime"] == info.runtime
    assert rates[info.runtime] >= rates["tensorflow"]  # never slower than TensorFlow
    _, again, info2 = _extract(image_folder, tmp_path / "b", runtime="auto", batch_size=5,
                               quiet=False)
    err = capsys.readouterr().err
    assert "remembered for this machine" in err and "runtime auto:" not in err
    assert info2.runtime == info.runtime
    np.testing.assert_allclose(again, first, rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(not _installed("onnxruntime"), reason="onnxruntime not installed")
def test_a_tampered_converted_model_is_converted_again_not_loaded(runtimes_dir, capsys):
    from pipeline.bases import build_extractor

    ex = build_extractor("mobilenet_v2_0.35", weights=None, input_size=32)
    request = RuntimeRequest(runtime="onnxruntime")  # the module's store: converted once
    report = Reporter()
    images = np.random.default_rng(1).uniform(0, 255, (3, 32, 32, 3)).astype(np.float32)
    expected = open_runtime(ex, request, report).forward(images)
    (model,) = (runtimes_dir / "onnx").glob("mobilenet_v2_0.35-*.onnx")
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the weights
    model.write_bytes(bytes(data))
    capsys.readouterr()
    runtime = open_runtime(ex, request, report)
    assert "does not match the sha256" in capsys.readouterr().err
    assert runtime.name == "onnxruntime"
    np.testing.assert_allclose(runtime.forward(images), expected, rtol=1e-6)
    sidecar = json.loads(model.with_name(model.name + ".json").read_text())
    assert sidecar["sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()


def test_auto_keeps_a_small_first_extraction_in_tensorflow(image_folder, tmp_path,
                                                           runtimes_dir):
    # 24 images: a first conversion and timing would cost more than they could save
    _, _, info = _extract(image_folder, tmp_path / "s", runtime="auto", batch_size=7)
    assert info.runtime == "tensorflow"
    choices = runtimes_dir / "choices.json"
    assert not choices.exists() or all(
        e["batch_size"] != 7 for e in json.loads(choices.read_text()).values())


def test_a_failed_conversion_falls_back_to_tensorflow_with_one_line(
        image_folder, tmp_path, monkeypatch, capsys):
    from pipeline.bases.runtimes import onnx_store

    def broken(*args, **kwargs):
        raise ValueError("an op the converter lacks\nsecond line")

    monkeypatch.setattr(onnx_store, "keras_to_onnx", broken)
    monkeypatch.setenv("PIPELINE_RUNTIMES_DIR", str(tmp_path / "fresh"))
    _, _, info = _extract(image_folder, tmp_path / "c", runtime="onnxruntime", quiet=False)
    err = capsys.readouterr().err
    assert info.runtime == "tensorflow"
    (line,) = [x for x in err.splitlines() if "runtime onnxruntime" in x]
    assert "an op the converter lacks" in line and "using tensorflow" in line
    assert "second line" not in err


def test_a_runtime_not_installed_falls_back_to_tensorflow(image_folder, tmp_path, monkeypatch,
                                                          capsys):
    import pipeline.bases.runtimes.base as runtimes

    monkeypatch.setitem(runtimes.NEEDS, "openvino", ("no_such_module_for_pipeline_tests",))
    _, _, info = _extract(image_folder, tmp_path / "c", runtime="openvino", quiet=False)
    assert info.runtime == "tensorflow"
    assert "pipeline[fast]" in capsys.readouterr().err


def test_bfloat16_is_refused_in_one_line_where_it_cannot_run(tmp_path, monkeypatch):
    missing = tmp_path / "no-such-data"  # refused before the dataset is even looked at
    with pytest.raises(PipelineError, match="OpenVINO only") as e:
        run_extraction(missing, cache_dir=tmp_path, runtime="tensorflow", precision="bfloat16",
                       **{k: v for k, v in TINY.items() if k != "bases"})
    assert "\n" not in str(e.value)
    from pipeline.bases.runtimes import openvino  # imports no OpenVINO itself

    # a CPU without bfloat16 (or no OpenVINO at all): either way one line, before any work
    monkeypatch.setattr(openvino, "cpu_has_bf16", lambda: False)
    with pytest.raises(PipelineError, match="bfloat16") as e:
        run_extraction(missing, cache_dir=tmp_path, runtime="auto", precision="bfloat16",
                       **{k: v for k, v in TINY.items() if k != "bases"})
    assert "\n" not in str(e.value)


def test_bfloat16_has_its_own_cache_key_and_float32_keys_are_unchanged():
    ex = {"base": "b", "weights_id": "w", "layer": None, "pooling": "avg", "input_size": 32}
    assert options_key(ex, "float32") == options_key(ex, "float32", "float32")
    assert options_key(ex, "float32", "bfloat16") != options_key(ex, "float32")


def test_runtime_options_are_checked_and_match_the_runtimes():
    assert OPTION_RUNTIMES == RUNTIMES
    assert PRECISIONS == ("float32", "bfloat16")
    assert ExtractOptions().runtime == "auto"
    assert ExtractOptions().precision == "float32"
    with pytest.raises(PipelineError, match="unknown runtime"):
        ExtractOptions.from_mapping({"runtime": "tensorrt"})
    with pytest.raises(PipelineError, match="unknown precision"):
        ExtractOptions.from_mapping({"precision": "float16"})


def test_records_from_before_runtimes_read_as_tensorflow_float32():
    info = FeatureSetInfo.from_dict({"class_names": ["a", "b"], "base": "x"})
    assert (info.runtime, info.precision) == ("tensorflow", "float32")
