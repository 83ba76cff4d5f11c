"""Input preprocessing as a per-channel affine map, realised with built-in Keras layers.

Every ``keras.applications`` ``preprocess_input`` mode is an affine map per channel, with a
channel reorder for "caffe" (RGB -> BGR). Building it from a fixed 1x1 convolution keeps the
map inside the model, so an exported model is self-contained and loads without this package.
Tests check each map against the ``preprocess_input`` function it stands for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import keras


@dataclass(frozen=True)
class ChannelAffine:
    """``y[..., c] = x[..., order[c]] * scale[c] + offset[c]`` on RGB input in [0, 255]."""

    scale: tuple[float, float, float] = (1.0, 1.0, 1.0)
    offset: tuple[float, float, float] = (0.0, 0.0, 0.0)
    order: tuple[int, int, int] = (0, 1, 2)

    @property
    def identity(self) -> str:
        """A stable description, part of the cache key."""
        fmt = ",".join
        return (f"affine(order={fmt(map(str, self.order))};"
                f"scale={fmt(f'{v:.9g}' for v in self.scale)};"
                f"offset={fmt(f'{v:.9g}' for v in self.offset)})")

    @property
    def is_identity(self) -> bool:
        return self == ChannelAffine()

    def apply_numpy(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)[..., list(self.order)]
        return x * np.float32(self.scale) + np.float32(self.offset)

    def layer(self, name: str = "preprocess") -> keras.layers.Layer:
        """A frozen 1x1 convolution computing this map (identity map: a no-op layer)."""
        import keras

        if self.is_identity:
            return keras.layers.Identity(name=name)
        kernel = np.zeros((1, 1, 3, 3), dtype=np.float32)
        for out_c, in_c in enumerate(self.order):
            kernel[0, 0, in_c, out_c] = self.scale[out_c]
        conv = keras.layers.Conv2D(3, 1, use_bias=True, trainable=False, name=name)
        conv.build((None, None, None, 3))
        conv.set_weights([kernel, np.asarray(self.offset, dtype=np.float32)])
        return conv


# The keras.applications modes (see keras/src/applications/imagenet_utils.py).
TF = ChannelAffine(scale=(1 / 127.5,) * 3, offset=(-1.0,) * 3)  # [-1, 1]
TORCH = ChannelAffine(
    scale=tuple(1 / (255.0 * s) for s in (0.229, 0.224, 0.225)),
    offset=tuple(-m / s for m, s in zip((0.485, 0.456, 0.406), (0.229, 0.224, 0.225),
                                        strict=True)),
)
CAFFE = ChannelAffine(offset=(-103.939, -116.779, -123.68), order=(2, 1, 0))  # BGR, mean-centred
NONE = ChannelAffine()  # the model rescales inside (EfficientNet, ResNetV2 ...)
