"""The built-in bases: the one module that imports the base families.

Each family module only declares its specs (``SPECS``); this table gathers them, and
:mod:`pipeline.bases.registry` loads it on first use. Adding a family is one line here.

The feature size and parameter count of each base are declared below, measured once with
``python -m pipeline.bases.table`` (builds every base with random weights; prints the dict),
so that listing the bases builds no model and imports no framework. ``tests/test_bases.py``
checks the declared numbers against built models.
"""

from __future__ import annotations

import dataclasses

from pipeline.bases import efficientnet_lite, keras_apps
from pipeline.bases.spec import BaseSpec

#: name -> (pooled feature size at the default cut, parameters without the top).
STATIC_SIZES: dict[str, tuple[int, int]] = {
    'mobilenet': (1024, 3228864),
    'mobilenet_0.75': (768, 1832976),
    'mobilenet_0.5': (512, 829536),
    'mobilenet_0.25': (256, 218544),
    'mobilenet_v2': (1280, 2257984),
    'mobilenet_v2_1.4': (1792, 4363712),
    'mobilenet_v2_1.3': (1664, 3766048),
    'mobilenet_v2_0.75': (1280, 1382064),
    'mobilenet_v2_0.5': (1280, 706224),
    'mobilenet_v2_0.35': (1280, 410208),
    'mobilenet_v3_small': (576, 939120),
    'mobilenet_v3_large': (960, 2996352),
    'vgg16': (512, 14714688),
    'vgg19': (512, 20024384),
    'resnet50': (2048, 23587712),
    'resnet101': (2048, 42658176),
    'resnet50_v2': (2048, 23564800),
    'resnet101_v2': (2048, 42626560),
    'inception_v3': (2048, 21802784),
    'xception': (2048, 20861480),
    'densenet121': (1024, 7037504),
    'efficientnet_b0': (1280, 4049571),
    'efficientnet_b1': (1280, 6575239),
    'efficientnet_b2': (1408, 7768569),
    'efficientnet_b3': (1536, 10783535),
    'convnext_tiny': (768, 27820128),
    'efficientnet_lite0': (1280, 3413024),
    'efficientnet_lite1': (1280, 4189344),
    'efficientnet_lite2': (1280, 4869168),
}


def _with_sizes(spec: BaseSpec) -> BaseSpec:
    if spec.name not in STATIC_SIZES:
        return spec
    features, params = STATIC_SIZES[spec.name]
    return dataclasses.replace(spec, feature_size=features, param_count=params)


#: Every built-in base, in listing order.
BUILTIN_BASES: tuple[BaseSpec, ...] = tuple(
    _with_sizes(s) for s in (*keras_apps.SPECS, *efficientnet_lite.SPECS))


def measure(spec: BaseSpec) -> tuple[int, int]:
    """(feature size, parameter count) of a base built with random weights at its default
    input size (imports Keras)."""
    size = spec.default_size
    model = spec.build((size, size, 3), None)
    return int(model.output_shape[-1]), int(model.count_params())


if __name__ == "__main__":  # pragma: no cover - the measurement behind STATIC_SIZES
    for s in BUILTIN_BASES:
        print(f"    {s.name!r}: {measure(s)},", flush=True)
