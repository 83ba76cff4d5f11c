"""What the registry knows about a base: how to build it and how to feed it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import keras

from pipeline.bases.preprocessing import ChannelAffine

# build(input_shape, weights) -> headless convolutional base (no top, no pooling).
# ``weights`` is None (random init), "imagenet", or a local weights file path.
Builder = Callable[[tuple[int, int, int], str | None], keras.Model]


@dataclass(frozen=True)
class BaseSpec:
    """A pretrained convolutional base in the registry."""

    name: str
    build: Builder
    default_size: int
    preprocessing: ChannelAffine
    # The preprocess_input function the preprocessing stands for (checked in tests).
    preprocess_input: Callable[[Any], Any] | None
    weights_source: str
    min_size: int = 32
    family: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    # True when --weights imagenet needs no network (weights shipped by a package).
    offline: bool = False
