"""The options of stage 1, declared once: the CLI flags, the Python keywords and the
experiment TOML's ``[extract]`` table all come from :class:`ExtractOptions`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from pipeline.cache.store import COMPRESSIONS
from pipeline.data.splits import DEFAULT_FRACTIONS, fractions_problem
from pipeline.errors import PipelineError
from pipeline.options import Options, option

DTYPES = ("float32", "float16")
# The runtime names are plain data (pipeline.bases.runtimes imports no framework), copied here
# so this schema stays free of pipeline.bases' Keras import; tests check they match.
RUNTIMES = ("auto", "tensorflow", "onnxruntime", "openvino")
PRECISIONS = ("float32", "bfloat16")
DEFAULT_BASE = "efficientnet_lite0"


def _one_of(what: str, choices: tuple[str, ...] | Callable[[], tuple[str, ...]]
            ) -> Callable[[Any], str | None]:
    """A check naming what is unknown (``unknown pooling; expected one of ...``)."""
    def check(value: Any) -> str | None:
        known = choices() if callable(choices) else choices
        return None if value in known else f"unknown {what}; expected one of {', '.join(known)}"
    return check


def _poolings() -> tuple[str, ...]:
    # Imported on use, from the framework-free spec module: the CLI reads flag defaults from
    # this schema at start-up, and `pipeline run` checks a TOML's pooling before it hides
    # TensorFlow's start-up logs.
    from pipeline.bases.spec import POOLINGS

    return POOLINGS


def _weights_problem(weights: str | None) -> str | None:
    from pipeline.bases.weights import parse_weights

    try:
        parse_weights(weights)
    except PipelineError:
        return ("no such file; expected 'imagenet', 'none' or a path to a Keras weights file "
                "(.weights.h5 / .h5)")
    return None


@dataclass(frozen=True)
class ExtractOptions(Options):
    """How features are extracted (everything but the data and the bases)."""

    SECTION: ClassVar[str] = "extract"

    weights: str | None = option(
        "imagenet", "'imagenet' (pretrained; offline for efficientnet_lite*, a Keras download "
        "for the others), 'none' (seeded random init), or a path to a Keras weights file.",
        check=_weights_problem)
    input_size: int | None = option(
        None, "Square input size in pixels (default: the base's).", minimum=1)
    layer: str | None = option(None, "Cut the base at this inner layer (by name).")
    pooling: str = option("avg", "avg | max | flatten | none (none keeps the spatial map).",
                          check=_one_of("pooling", _poolings))
    dtype: str = option("float32", "Stored feature dtype: float32 | float16.",
                        check=_one_of("dtype", DTYPES))
    batch_size: int = option(32, "Images per forward pass.", minimum=1)
    split: tuple[float, ...] = option(
        DEFAULT_FRACTIONS, "train,validation,test fractions for datasets that bring no split.",
        check=fractions_problem)
    seed: int = option(0, "Seed of the split assignment.")
    elpv_levels: bool = option(
        False, "elpv: four classes (defect probability 0, 1/3, 2/3, 1) instead of "
        "functional/defective.", flag="--elpv-levels")
    compression: str = option(
        "auto", "auto (lzf for spatial maps, raw for pooled vectors: fastest to read) | lzf | "
        "gzip | none.", check=_one_of("compression", COMPRESSIONS))

    runtime: str = option(
        "auto", "What runs the forward pass: auto (the fastest installed runtime, timed once "
        "per machine and remembered) | tensorflow | onnxruntime | openvino (the last two come "
        "with the package's fast extra). Results agree within float tolerance.",
        check=_one_of("runtime", RUNTIMES))
    precision: str = option(
        "float32", "Compute precision: float32 | bfloat16 (OpenVINO on a CPU with native "
        "bfloat16; features differ by a few percent, so it has its own cache key).",
        check=_one_of("precision", PRECISIONS))

    @classmethod
    def resolve(cls, options: ExtractOptions | None = None, **kwargs: Any) -> ExtractOptions:
        """``options`` (or the defaults) with keyword arguments applied; an unknown keyword
        is a one-line :class:`PipelineError`."""
        if not kwargs:
            return options if options is not None else cls()
        base = options.to_dict() if options is not None else {}
        return cls.from_mapping({**base, **kwargs})
