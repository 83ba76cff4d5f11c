"""The ``keras.applications`` bases the classic transfer-learning tutorials use.

Their ImageNet weights are downloaded by Keras on first use (see :mod:`pipeline.bases.weights`
for what happens offline); ``--weights PATH`` loads a local Keras weights file instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from keras import applications as apps

from pipeline.bases import preprocessing as pp
from pipeline.bases.spec import BaseSpec

KERAS_SOURCE = "Keras download (online) or --weights PATH"


def _builder(constructor: Callable[..., Any], **params: Any):
    def build(input_shape: tuple[int, int, int], weights: str | None):
        return constructor(include_top=False, weights=weights, input_shape=input_shape, **params)

    return build


def _spec(name: str, constructor, module, size: int, mode: pp.ChannelAffine, family: str,
          min_size: int = 32, **params: Any) -> BaseSpec:
    return BaseSpec(
        name=name, build=_builder(constructor, **params), default_size=size,
        preprocessing=mode, preprocess_input=module.preprocess_input,
        weights_source=KERAS_SOURCE, min_size=min_size, family=family, params=params,
    )


#: The specs of this family, in listing order (the table module registers them).
SPECS: tuple[BaseSpec, ...] = (
    *(_spec("mobilenet" if alpha == 1.0 else f"mobilenet_{alpha}", apps.MobileNet,
            apps.mobilenet, 224, pp.TF, "MobileNet", alpha=alpha)
      for alpha in (1.0, 0.75, 0.5, 0.25)),
    *(_spec("mobilenet_v2" if alpha == 1.0 else f"mobilenet_v2_{alpha}", apps.MobileNetV2,
            apps.mobilenet_v2, 224, pp.TF, "MobileNetV2", alpha=alpha)
      for alpha in (1.0, 1.4, 1.3, 0.75, 0.5, 0.35)),
    _spec("mobilenet_v3_small", apps.MobileNetV3Small, apps.mobilenet_v3, 224, pp.NONE,
          "MobileNetV3"),
    _spec("mobilenet_v3_large", apps.MobileNetV3Large, apps.mobilenet_v3, 224, pp.NONE,
          "MobileNetV3"),
    _spec("vgg16", apps.VGG16, apps.vgg16, 224, pp.CAFFE, "VGG"),
    _spec("vgg19", apps.VGG19, apps.vgg19, 224, pp.CAFFE, "VGG"),
    _spec("resnet50", apps.ResNet50, apps.resnet, 224, pp.CAFFE, "ResNet"),
    _spec("resnet101", apps.ResNet101, apps.resnet, 224, pp.CAFFE, "ResNet"),
    _spec("resnet50_v2", apps.ResNet50V2, apps.resnet_v2, 224, pp.TF, "ResNetV2"),
    _spec("resnet101_v2", apps.ResNet101V2, apps.resnet_v2, 224, pp.TF, "ResNetV2"),
    _spec("inception_v3", apps.InceptionV3, apps.inception_v3, 299, pp.TF, "Inception",
          min_size=75),
    _spec("xception", apps.Xception, apps.xception, 299, pp.TF, "Xception", min_size=71),
    _spec("densenet121", apps.DenseNet121, apps.densenet, 224, pp.TORCH, "DenseNet"),
    *(_spec(f"efficientnet_b{i}", getattr(apps, f"EfficientNetB{i}"), apps.efficientnet, size,
            pp.NONE, "EfficientNet")
      for i, size in enumerate((224, 240, 260, 300))),
    _spec("convnext_tiny", apps.ConvNeXtTiny, apps.convnext, 224, pp.NONE, "ConvNeXt"),
)
