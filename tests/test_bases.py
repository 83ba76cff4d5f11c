"""The base registry: preprocessing, weights resolution, layer cuts, offline behaviour."""

from __future__ import annotations

import socket
import time

import keras
import numpy as np
import pytest

from pipeline.bases import build_extractor, get_base, list_bases
from pipeline.bases.forward import forward_fn
from pipeline.errors import PipelineError

TUTORIAL_BASES = {"mobilenet", "mobilenet_v2", "vgg16", "vgg19", "resnet50", "resnet101_v2",
                  "inception_v3", "xception", "efficientnet_b0", "efficientnet_b3",
                  "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"}


def test_registry_has_the_tutorial_bases():
    names = {s.name for s in list_bases()}
    assert names >= TUTORIAL_BASES
    assert get_base("mobilenet_v2_0.35").params == {"alpha": 0.35}


def test_unknown_base_suggests_close_names():
    with pytest.raises(PipelineError, match="did you mean.*vgg16"):
        get_base("vgg61")


@pytest.mark.parametrize("spec", list_bases(), ids=lambda s: s.name)
def test_preprocessing_map_equals_preprocess_input(spec):
    x = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 3)).astype(np.float32)
    expected = np.asarray(spec.preprocess_input(x.copy()))
    np.testing.assert_allclose(spec.preprocessing.apply_numpy(x), expected, rtol=1e-5,
                               atol=1e-4)
    layer = spec.preprocessing.layer()
    np.testing.assert_allclose(np.asarray(layer(x)), expected, rtol=1e-5, atol=1e-4)


def test_offline_keras_download_fails_fast_with_advice(monkeypatch, tmp_path):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))  # no weights file there

    def unreachable(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(socket, "create_connection", unreachable)
    start = time.perf_counter()
    with pytest.raises(PipelineError) as e:
        build_extractor("vgg16", weights="imagenet", input_size=32)
    assert time.perf_counter() - start < 30
    msg = str(e.value)
    assert "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5" in msg and "--weights PATH" in msg
    assert "\n" not in msg


def test_local_weights_file_is_loaded_and_identified(tmp_path):
    donor = get_base("mobilenet_v2_0.35").build((32, 32, 3), None)
    rng = np.random.default_rng(1)
    donor.set_weights([w + rng.normal(0, 0.01, w.shape).astype(w.dtype)
                       for w in donor.get_weights()])
    path = tmp_path / "mine.weights.h5"
    donor.save_weights(path)
    mine = build_extractor("mobilenet_v2_0.35", weights=str(path), input_size=32)
    rand = build_extractor("mobilenet_v2_0.35", weights="none", input_size=32)
    again = build_extractor("mobilenet_v2_0.35", weights="none", input_size=32)
    assert mine.weights_id != rand.weights_id and rand.weights_id == again.weights_id
    x = rng.uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    expected = keras.layers.GlobalAveragePooling2D()(
        donor(get_base("mobilenet_v2_0.35").preprocessing.apply_numpy(x)))
    np.testing.assert_allclose(forward_fn(mine)(x), np.asarray(expected), rtol=1e-4, atol=1e-5)


def test_bad_layer_and_pooling_are_clear_errors():
    with pytest.raises(PipelineError, match="has no layer 'nope'"):
        build_extractor("mobilenet_v2_0.35", weights="none", input_size=32, layer="nope")
    with pytest.raises(PipelineError, match="too small"):
        build_extractor("inception_v3", weights="none", input_size=32)


@pytest.mark.parametrize("pooling, rank", [("avg", 2), ("max", 2), ("flatten", 2),
                                           ("none", 4)])
def test_pooling_shapes(pooling, rank):
    ex = build_extractor("mobilenet_v2_0.35", weights="none", input_size=64, pooling=pooling)
    assert len(ex.feature_shape) == rank - 1
    out = forward_fn(ex)(np.zeros((1, 64, 64, 3), np.float32))
    assert out.shape[1:] == ex.feature_shape
