"""A base turned into a feature extractor: preprocessing + (cut) base + pooling.

The extractor takes float32 RGB images in [0, 255] of its input size and returns one feature
array per image. Everything that changes its numbers is in :meth:`Extractor.key_options`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import keras

from pipeline.bases.registry import get_base
from pipeline.bases.spec import POOLINGS, BaseSpec
from pipeline.bases.weights import (
    IMAGENET,
    INIT_SEED,
    offline_download_guard,
    parse_weights,
    weights_identity,
    weights_label,
)
from pipeline.errors import PipelineError


@dataclass
class Extractor:
    spec: BaseSpec
    model: keras.Model
    input_size: int
    weights: str | None
    weights_id: str
    layer: str | None
    pooling: str

    @property
    def feature_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.model.output.shape[1:])

    def key_options(self) -> dict[str, Any]:
        """Everything about the extractor that changes the numbers (goes into the cache key)."""
        return {
            "base": self.spec.name,
            "weights_id": self.weights_id,
            "layer": self.layer,
            "pooling": self.pooling,
            "input_size": self.input_size,
            "preprocessing": self.spec.preprocessing.identity,
            "resize": "bilinear",
        }

    def describe(self) -> dict[str, Any]:
        return dict(self.key_options(), weights=weights_label(self.weights),
                    feature_shape=list(self.feature_shape), weights_source=self.spec.weights_source)


def build_base(spec: BaseSpec, input_size: int, weights: str | None) -> keras.Model:
    """The headless base with the given weights (``None``: seeded random init)."""
    if input_size < spec.min_size:
        raise PipelineError(f"--input-size {input_size} is too small for {spec.name}; "
                            f"it needs at least {spec.min_size}")
    guard = (offline_download_guard(spec.name) if weights == IMAGENET and not spec.offline
             else contextlib.nullcontext())
    if weights is None:
        keras.utils.set_random_seed(INIT_SEED)
    try:
        with guard:
            return spec.build((input_size, input_size, 3), weights)
    except PipelineError:
        raise
    except (ValueError, OSError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise PipelineError(f"cannot build {spec.name} with weights "
                            f"{weights_label(weights)!r}: {msg}") from None


def build_extractor(
    base: str,
    weights: str | None = IMAGENET,
    input_size: int | None = None,
    layer: str | None = None,
    pooling: str = "avg",
) -> Extractor:
    """Build the feature extractor for a registered base.

    ``layer`` cuts the base at an inner layer (by name); ``pooling`` is one of
    ``avg``, ``max``, ``flatten`` or ``none`` (keep the spatial map).
    """
    if pooling not in POOLINGS:
        raise PipelineError(f"unknown pooling {pooling!r}; expected one of {', '.join(POOLINGS)}")
    spec = get_base(base)
    weights = parse_weights(weights)
    size = int(input_size or spec.default_size)
    conv = build_base(spec, size, weights)
    weights_id = weights_identity(conv)
    out = conv.output
    if layer:
        try:
            out = conv.get_layer(layer).output
        except ValueError:
            raise PipelineError(f"{spec.name} has no layer {layer!r}; "
                                f"e.g. {', '.join(lyr.name for lyr in conv.layers[-4:])}") from None
    inner = keras.Model(conv.input, out, name=f"{spec.name}_base")
    inp = keras.Input((size, size, 3), name="image")
    x = inner(spec.preprocessing.layer()(inp), training=False)
    rank = len(x.shape)
    if pooling in ("avg", "max") and rank != 4:
        raise PipelineError(f"--pooling {pooling} needs a spatial map, but {layer or 'the base'} "
                            f"outputs shape {tuple(x.shape[1:])}; use --pooling none")
    if pooling == "avg":
        x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    elif pooling == "max":
        x = keras.layers.GlobalMaxPooling2D(name="pool")(x)
    elif pooling == "flatten":
        x = keras.layers.Flatten(name="pool")(x)
    model = keras.Model(inp, x, name=f"{spec.name}_extractor")
    return Extractor(spec=spec, model=model, input_size=size, weights=weights,
                     weights_id=weights_id, layer=layer, pooling=pooling)
