"""The ``keras.applications`` bases the classic transfer-learning tutorials use.

Their ImageNet weights are downloaded by Keras on first use (see :mod:`pipeline.bases.weights`
for what happens offline); ``--weights PATH`` loads a local Keras weights file instead.
"""

from __future__ import annotations

from typing import Any

from pipeline.bases import preprocessing as pp
from pipeline.bases.lazy import LazyFunction
from pipeline.bases.spec import BaseSpec

KERAS_SOURCE = "Keras download (online) or --weights PATH"


def _builder(constructor: str, **params: Any):
    """Builds ``keras.applications.<constructor>``; Keras is imported only then."""
    def build(input_shape: tuple[int, int, int], weights: str | None):
        from keras import applications

        return getattr(applications, constructor)(include_top=False, weights=weights,
                                                  input_shape=input_shape, **params)

    return build


def _spec(name: str, constructor: str, module: str, size: int, mode: pp.ChannelAffine,
          family: str, min_size: int = 32, **params: Any) -> BaseSpec:
    """A spec naming ``keras.applications.<constructor>`` and its ``<module>``'s
    preprocess_input (both looked up only when used)."""
    return BaseSpec(
        name=name, build=_builder(constructor, **params), default_size=size, preprocessing=mode,
        preprocess_input=LazyFunction(f"keras.applications.{module}", "preprocess_input"),
        weights_source=KERAS_SOURCE, min_size=min_size, family=family, params=params,
    )


#: The specs of this family, in listing order (the table module registers them).
SPECS: tuple[BaseSpec, ...] = (
    *(_spec("mobilenet" if alpha == 1.0 else f"mobilenet_{alpha}", "MobileNet",
            "mobilenet", 224, pp.TF, "MobileNet", alpha=alpha)
      for alpha in (1.0, 0.75, 0.5, 0.25)),
    *(_spec("mobilenet_v2" if alpha == 1.0 else f"mobilenet_v2_{alpha}", "MobileNetV2",
            "mobilenet_v2", 224, pp.TF, "MobileNetV2", alpha=alpha)
      for alpha in (1.0, 1.4, 1.3, 0.75, 0.5, 0.35)),
    _spec("mobilenet_v3_small", "MobileNetV3Small", "mobilenet_v3", 224, pp.NONE,
          "MobileNetV3"),
    _spec("mobilenet_v3_large", "MobileNetV3Large", "mobilenet_v3", 224, pp.NONE,
          "MobileNetV3"),
    _spec("vgg16", "VGG16", "vgg16", 224, pp.CAFFE, "VGG"),
    _spec("vgg19", "VGG19", "vgg19", 224, pp.CAFFE, "VGG"),
    _spec("resnet50", "ResNet50", "resnet", 224, pp.CAFFE, "ResNet"),
    _spec("resnet101", "ResNet101", "resnet", 224, pp.CAFFE, "ResNet"),
    _spec("resnet50_v2", "ResNet50V2", "resnet_v2", 224, pp.TF, "ResNetV2"),
    _spec("resnet101_v2", "ResNet101V2", "resnet_v2", 224, pp.TF, "ResNetV2"),
    _spec("inception_v3", "InceptionV3", "inception_v3", 299, pp.TF, "Inception",
          min_size=75),
    _spec("xception", "Xception", "xception", 299, pp.TF, "Xception", min_size=71),
    _spec("densenet121", "DenseNet121", "densenet", 224, pp.TORCH, "DenseNet"),
    *(_spec(f"efficientnet_b{i}", f"EfficientNetB{i}", "efficientnet", size,
            pp.NONE, "EfficientNet")
      for i, size in enumerate((224, 240, 260, 300))),
    _spec("convnext_tiny", "ConvNeXtTiny", "convnext", 224, pp.NONE, "ConvNeXt"),
)
