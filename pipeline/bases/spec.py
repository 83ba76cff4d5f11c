"""What the registry knows about a base: how to build it and how to feed it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pipeline.bases.preprocessing import ChannelAffine

#: How a feature map becomes a feature row (declared here, with no framework import, because
#: the options schema checks ``--pooling`` at start-up).
POOLINGS = ("avg", "max", "flatten", "none")

if TYPE_CHECKING:
    import keras

# build(input_shape, weights) -> headless convolutional base (no top, no pooling).
# ``weights`` is None (random init), "imagenet", or a local weights file path.
Builder = Callable[[tuple[int, int, int], str | None], "keras.Model"]


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
    #: Channels of the base's output at its default cut (the pooled feature size), and its
    #: parameter count without the top; declared in :mod:`pipeline.bases.table` so that
    #: ``pipeline bases`` shows them without building a model (a test checks them).
    feature_size: int | None = None
    param_count: int | None = None
