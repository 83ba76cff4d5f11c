"""The cut points of a base: the layers ``--layer`` accepts, with their output shapes."""

from __future__ import annotations

from pipeline.bases.spec import BaseSpec
from pipeline.errors import PipelineError


def cut_points(spec: BaseSpec, input_size: int | None = None
               ) -> list[tuple[int, str, tuple[int, ...]]]:
    """``(index, layer name, (height, width, channels))`` of every layer of the headless base
    whose output is one spatial map, in network order (the last is the default cut). Builds
    the base with random weights at ``input_size`` (default: the base's own)."""
    from pipeline.bases.extractor import build_base

    size = int(input_size or spec.default_size)
    if size < spec.min_size:
        raise PipelineError(f"--input-size {size} is too small for {spec.name}; it needs at "
                            f"least {spec.min_size}")
    model = build_base(spec, size, None)
    points = []
    for i, layer in enumerate(model.layers):
        shape = getattr(layer, "output", None)
        shape = getattr(shape, "shape", None)
        if shape is None or len(shape) != 4 or type(layer).__name__ == "InputLayer":
            continue
        points.append((i, layer.name, tuple(int(d) for d in shape[1:])))
    return points
