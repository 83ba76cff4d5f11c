"""The fine-tuning stage's options: one schema for the Python API, the CLI and the TOML.

:class:`FinetuneOptions` declares each option once (default, help text, validation). Where a
value comes from, first match wins: given explicitly (keyword argument, command-line flag)
> the ``[finetune]`` table of the experiment that made the head run > the default here
(:meth:`FinetuneOptions.resolve`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pipeline.errors import PipelineError, UsageError
from pipeline.finetune.augment import Augmentation, parse_augment
from pipeline.finetune.unfreeze import DEFAULT_UNFREEZE, parse_unfreeze
from pipeline.heads.metrics import DEFAULT_METRIC, SELECTION_METRICS
from pipeline.options import Options, option

#: The optimizers fine-tuning accepts: names in :data:`pipeline.heads.training.OPTIMIZERS`
#: (the heads stage also allows adamw). A literal, so the schema loads without the heads layer.
OPTIMIZERS: tuple[str, ...] = ("adam", "rmsprop", "sgd")
# Defaults chosen on validation by benchmarks/finetune_study.py (see the README).
DEFAULT_LEARNING_RATE = 1e-3
DEFAULT_AUGMENT = "flip=horizontal,rotation=0,zoom=0"
CLASS_WEIGHTS = ("none", "balanced")
#: The heads' selection metrics, plus ``loss`` (validation log loss, as Keras names it).
METRICS: tuple[str, ...] = (*SELECTION_METRICS, "loss")
SCHEDULES = ("cosine", "constant")
CACHED = ("auto", "off")


def parse_learning_rate(value: Any) -> float | str:
    """A positive number, or ``"auto"`` (the LR finder's suggestion)."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    try:
        rate = float(value)
    except (TypeError, ValueError):
        rate = math.nan
    if isinstance(value, bool) or not rate > 0 or not math.isfinite(rate):
        raise UsageError(f"--learning-rate {value!r}: expected a positive number or 'auto'")
    return rate


def _problem(parse: Callable[[Any], Any]) -> Callable[[Any], str | None]:
    """A ``check=`` hook from a parser that raises :class:`PipelineError`; the parser's own
    ``--flag value:`` prefix is dropped (the schema names the option already)."""
    def check(value: Any) -> str | None:
        try:
            parse(value)
        except PipelineError as e:
            text = str(e)
            return text.partition(": ")[2] if text.startswith("--") else text
        return None
    return check


@dataclass(frozen=True)
class FinetuneOptions(Options):
    """How a head run is fine-tuned end to end (see :func:`pipeline.finetune.finetune`)."""

    SECTION = "finetune"

    epochs: int = option(
        5, "Epoch budget. Training stops earlier when the validation --metric has not "
        "improved for --patience epochs; the best epoch's weights are kept (the head's own, "
        "epoch 0, if no epoch beats it). With --schedule cosine the budget sets the decay.",
        minimum=1)
    learning_rate: float | str = option(
        DEFAULT_LEARNING_RATE, "Peak step size (after warm-up), or 'auto': the LR finder's "
        "suggestion (see --find-lr).", check=_problem(parse_learning_rate), aliases=("lr",))
    optimizer: str = option("adam", " | ".join(OPTIMIZERS) + " (adam with --weight-decay > "
                            "0 is AdamW).", choices=OPTIMIZERS)
    metric: str = option(
        DEFAULT_METRIC, "Validation metric for early stopping and the kept epoch, as in "
        "fit-head: " + ", ".join(METRICS) + " (loss = log_loss; lower is better).",
        choices=METRICS)
    schedule: str = option(
        "cosine", "Learning-rate schedule: cosine (linear warm-up, then cosine decay to 1% "
        "over the epoch budget) or constant.", choices=SCHEDULES)
    warmup: float = option(
        1.0, "Warm-up length in epochs (fractions allowed) with --schedule cosine.",
        minimum=0)
    weight_decay: float = option(
        1e-4, "Decoupled weight decay (AdamW with adam); 0 = none.", minimum=0)
    label_smoothing: float = option(
        0.1, "Label smoothing of the training loss (validation is scored unsmoothed).",
        minimum=0, maximum=0.5)
    cached: str = option(
        "auto", "auto: when the bottom of the base stays frozen and augmentation is exact "
        "(flips, rot90 or none), compute its activations once per view and train the top "
        "from them (same model, epochs at the top's own cost); off: always run the whole "
        "model.", choices=CACHED)
    unfreeze_from: str | int | float = option(
        DEFAULT_UNFREEZE, "Where training starts in the base's layers: a layer name (e.g. "
        "block6a_expand_conv), an index (100, or -20 for the last 20 layers), a fraction (0.3 "
        "= top 30%), 'all', or 'none' (head only). BatchNormalization always stays frozen, in "
        "inference mode.", check=_problem(parse_unfreeze))
    augment: str | dict | Augmentation = option(
        DEFAULT_AUGMENT, "Training-only augmentation: 'none', 'dihedral' (both flips and "
        "quarter turns), 'default' (Keras tutorials: flip=horizontal,rotation=0.1,zoom=0.1), "
        "or options flip=horizontal|vertical|horizontal_and_vertical|none, rot90=true, "
        "rotation=F (fraction of a turn), zoom=F, translation=F, contrast=F joined by commas; "
        "unnamed options keep the 'default' values. Flips and rot90 alone are exact and let "
        "epochs run on cached activations (--cached).", check=_problem(parse_augment))
    batch_size: int = option(32, "Images per training step.", minimum=1)
    patience: int = option(
        3, "Epochs without a better validation --metric before stopping (0: never).",
        minimum=0)
    class_weight: str | None = option(
        None, "balanced | none (not given: the head's own setting).", choices=CLASS_WEIGHTS,
        deprecated_values=((True, "balanced"), (False, "none")))
    seed: int = option(0, "Seed for augmentation and shuffling.")

    @classmethod
    def _where(cls, name: str) -> str:
        # One message for both audiences: the TOML key and the command-line flag.
        return f"{cls.SECTION}: {name} (--{name.replace('_', '-')})"

    @property
    def augmentation(self) -> Augmentation:
        """``augment`` parsed into an :class:`Augmentation`."""
        return parse_augment(dict(self.augment) if isinstance(self.augment, Mapping)
                             else self.augment)

    @property
    def selection_metric(self) -> str:
        """``metric`` as a name of :func:`pipeline.heads.metrics.classification_metrics`."""
        return "log_loss" if self.metric == "loss" else self.metric

    @property
    def unfreeze_spec(self) -> str | int | float | None:
        """``unfreeze_from`` normalised (``None``: base frozen; int index; float fraction)."""
        return parse_unfreeze(self.unfreeze_from)

    def with_given(self, given: Mapping[str, Any]) -> FinetuneOptions:
        """A copy with the values in ``given`` that are not ``None`` (aliases such as ``lr``
        accepted); an unknown name is an error naming the expected ones."""
        aliases = {a: n for n in self.names() for a in self.spec(n).aliases}
        explicit = {aliases.get(k, k): v for k, v in given.items() if v is not None}
        unknown = [k for k in explicit if k not in self.names()]
        if unknown:
            raise PipelineError(f"unknown fine-tuning option(s) {', '.join(unknown)}; "
                                f"expected {', '.join(self.names())}")
        return self.replace(**explicit)

    @classmethod
    def resolve(cls, given: Mapping[str, Any] | None = None,
                table: Mapping[str, Any] | None = None, where: str | None = None
                ) -> FinetuneOptions:
        """Each option: the value in ``given`` (``None`` = not given), else ``table`` (an
        experiment's ``[finetune]``, named by ``where`` in its errors), else the default."""
        return cls.from_mapping(table, where).with_given(given or {})
