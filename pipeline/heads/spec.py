"""The head interface and the declaration of a head kind.

A *head* is the small classifier fitted on cached features. Every kind, whether a Keras dense
layer or a scikit-learn pipeline, has the same interface::

    head = make_head("logreg", {"C": 0.1}, n_classes=2)
    head.fit(X_train, y_train, X_val, y_val)   # X: (n, d) float rows; y: int labels
    head.predict_proba(X)                      # (n, n_classes), columns = class indices

so the selection loop, the reports and the fine-tuning stage never need to know which library
is underneath. A :class:`HeadSpec` declares a kind: its parameters (validated before any fit),
the class that implements it, and its capabilities (whether the fitted head is exactly Keras
layers, whether it can be fine-tuned, how its cost grows with the rows), so that other stages
ask the spec instead of keeping lists of kind names.

The implementations (``keras_heads``, ``sklearn_heads``) import this module only; the registry
(:mod:`pipeline.heads.registry`) is filled from :mod:`pipeline.heads.table`.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import PipelineError, did_you_mean
from pipeline.heads.params import Param

#: How a kind's fitting cost grows with the training rows.
SCALINGS = ("linear", "superlinear")
#: How a kind's memory grows with the training rows: "rows" (every row in memory at once) or
#: "chunks" (trains out of core a bounded chunk at a time: :mod:`pipeline.heads.out_of_core`).
MEMORY_SCALINGS = ("rows", "chunks")
#: The forms of export :mod:`pipeline.finetune.fold` turns into Keras layers (the export's
#: ``layer_form``): a Keras model of logits; a linear model behind a StandardScaler (optionally
#: Platt-calibrated); a ReLU multi-layer perceptron behind a StandardScaler.
LAYER_FORMS = ("keras_model", "linear", "relu_mlp")
#: Formats ``pipeline export`` writes: a self-contained ``.keras`` model (heads layers express
#: exactly) and an ONNX model (every head).
EXPORT_FORMATS = ("keras", "onnx")


class Head(ABC):
    """A classifier over feature rows with a scikit-learn-like ``fit``/``predict_proba``.

    Subclasses set ``family`` (``"sklearn"`` or ``"keras"``) and implement :meth:`fit`,
    :meth:`predict_proba`, :meth:`save` and :meth:`load`. ``params`` are already validated.
    ``history`` holds per-epoch curves for heads trained by epochs (else ``None``).
    """

    family: str = "?"
    #: File name the fitted head is saved under inside a run folder.
    filename: str = "head.bin"
    #: Training rows past which ``form="auto"`` fits the scalable form (set from
    #: :attr:`HeadSpec.scale_threshold` by :meth:`HeadSpec.make`; ``None``: never).
    scale_threshold: int | None = None
    #: ``False``: fitted for ranking only, without the probability calibration of a
    #: :attr:`HeadSpec.calibrated` kind (:meth:`HeadSpec.make` with ``calibrate=False``);
    #: then :meth:`ranking_scores` works and :meth:`predict_proba` refuses.
    calibrate: bool = True

    def __init__(self, kind: str, params: Mapping[str, Any], *, n_classes: int, seed: int = 0):
        if n_classes < 2:
            raise PipelineError(f"head {kind!r}: need at least 2 classes, got {n_classes}")
        self.kind = kind
        self.params = dict(params)
        self.n_classes = int(n_classes)
        self.seed = int(seed)
        self.history: dict[str, list[float]] | None = None

    @abstractmethod
    def fit(self, x: np.ndarray, y: np.ndarray, x_val: np.ndarray | None = None,
            y_val: np.ndarray | None = None) -> Head:
        """Fit on training rows. ``x_val``/``y_val`` may be used for early stopping only."""

    @abstractmethod
    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities, shape ``(n, n_classes)``; rows sum to 1."""

    def ranking_scores(self, x: np.ndarray) -> np.ndarray:
        """Per-class scores, ``(n, n_classes)``, rows summing to 1: their argmax is the
        predicted class and they rank rows as the model does (what labels and ROC-AUC need),
        but they are probabilities only where :meth:`predict_proba` would give the same."""
        return self.predict_proba(x)

    @classmethod
    def fit_path(cls, heads: Sequence[Head], x: np.ndarray, y: np.ndarray,
                 x_val: np.ndarray | None = None, y_val: np.ndarray | None = None
                 ) -> list[float]:
        """Fit ``heads``, configurations of one kind differing only in its
        :attr:`HeadSpec.path_param`, in ascending order of it; returns each fit's seconds.
        Kinds with a path start each fit from the previous solution; this default fits them
        one by one."""
        seconds = []
        for head in heads:
            t0 = time.perf_counter()
            head.fit(x, y, x_val, y_val)
            seconds.append(time.perf_counter() - t0)
        return seconds

    def predict(self, x: np.ndarray) -> np.ndarray:
        """The most probable class index of each row."""
        return np.argmax(self.predict_proba(x), axis=1)

    def resolve_form(self, n_train: int) -> str:
        """The form this fit uses, written back into ``params["form"]`` (so the run records
        it): ``"auto"`` becomes ``"scalable"`` past :attr:`scale_threshold` training rows,
        else ``"exact"``. Kinds without a ``form`` parameter are ``"exact"``."""
        form = str(self.params.get("form", "exact"))
        if form == "auto":
            past = self.scale_threshold is not None and n_train > self.scale_threshold
            form = "scalable" if past else "exact"
            self.params["form"] = form
        return form

    def refit_params(self) -> dict[str, Any]:
        """Parameters for refitting on train+validation (where there is no validation left).

        The default is the same parameters; heads that stop early replace the epoch budget by
        the epoch count they selected.
        """
        return dict(self.params)

    @abstractmethod
    def save(self, folder: Path) -> Path:
        """Write the fitted head into ``folder``; return the file written."""

    @classmethod
    @abstractmethod
    def load(cls, path: Path, kind: str, params: Mapping[str, Any], *, n_classes: int) -> Head:
        """Load a head saved by :meth:`save`. Callers verify the file's digest first."""

    def export(self) -> dict[str, Any]:
        """What a later stage (fine-tuning) needs to rebuild this head; see subclasses."""
        return {"kind": self.kind, "params": dict(self.params), "n_classes": self.n_classes}


def full_proba(proba: np.ndarray, classes: Sequence[int], n_classes: int) -> np.ndarray:
    """Spread a model's probability columns (for the classes it saw) over all ``n_classes``."""
    out = np.zeros((len(proba), n_classes), dtype=np.float64)
    out[:, np.asarray(classes, dtype=int)] = proba
    return out


@dataclass(frozen=True)
class HeadSpec:
    """The declaration of one head kind and its capabilities."""

    kind: str
    summary: str
    cls: type[Head]
    params: tuple[Param, ...]
    family: str
    #: Intended features: "pooled" vectors or "flattened" spatial maps ("any" if both).
    features: str = "any"
    #: The fitted head is exactly a stack of Keras layers (its export names the
    #: ``layer_form``, one of :data:`LAYER_FORMS`), so it can be folded onto a base.
    layers: bool = False
    #: Fine-tuning can start from a run of this kind (base + folded head, trained end to end).
    finetunable: bool = False
    #: The formats ``pipeline export`` can write a run of this kind in (see
    #: :data:`EXPORT_FORMATS`): "keras" where built-in Keras layers compute its
    #: ``predict_proba`` exactly (a kNN vote can be exported but not trained through), "onnx"
    #: for every kind.
    export_formats: tuple[str, ...] = ("onnx",)
    #: How the fitting cost grows with the training rows: one of :data:`SCALINGS`.
    scaling: str = "linear"
    #: Why, in a few words, when the cost grows faster than the rows.
    scaling_note: str = ""
    #: Training rows past which the kind's ``form="auto"`` (its default) fits a scalable
    #: form whose cost grows about linearly (``None``: the kind has none).
    scale_threshold: int | None = None
    #: What that scalable form is, in a few words (announced when a sweep switches to it).
    scalable_form: str = ""
    #: How its memory grows with the training rows: one of :data:`MEMORY_SCALINGS` ("chunks":
    #: past ``--max-memory`` the sweep trains it out of core instead of loading the rows).
    memory: str = "rows"
    #: A parameter (``C``) along which a sweep fits the kind's grid as one path: ascending
    #: values, sharing work (:meth:`Head.fit_path`: a warm start, a kernel matrix). Kinds
    #: that are :attr:`calibrated` fit a path only while ranking, uncalibrated.
    path_param: str | None = None
    #: Probabilities come from a calibration fitted beside the model (several extra fits). A
    #: sweep that ranks by labels or scores (every metric but log_loss) fits the grid without
    #: it and calibrates only the chosen configuration.
    calibrated: bool = False

    def __post_init__(self) -> None:
        if self.memory not in MEMORY_SCALINGS:
            raise ValueError(f"head {self.kind!r}: memory must be one of {MEMORY_SCALINGS}")
        if self.scaling not in SCALINGS:
            raise ValueError(f"head {self.kind!r}: scaling must be one of {SCALINGS}, "
                             f"not {self.scaling!r}")
        if self.finetunable and not self.layers:
            raise ValueError(f"head {self.kind!r}: finetunable needs layers=True (fine-tuning "
                             "stacks the folded head on the base)")
        unknown = [f for f in self.export_formats if f not in EXPORT_FORMATS]
        if unknown:
            raise ValueError(f"head {self.kind!r}: export format {unknown[0]!r} is not one of "
                             f"{EXPORT_FORMATS}")
        if self.layers and "keras" not in self.export_formats:
            raise ValueError(f"head {self.kind!r}: layers=True means it exports as keras")
        if self.scale_threshold is not None and not (
                self.scaling == "superlinear" and self.scalable_form
                and "form" in [p.name for p in self.params]):
            raise ValueError(f"head {self.kind!r}: a scale_threshold needs scaling="
                             "'superlinear', a scalable_form and a 'form' parameter")
        if self.path_param is not None and self.path_param not in self.param_names:
            raise ValueError(f"head {self.kind!r}: path_param {self.path_param!r} is not one "
                             "of its parameters")

    def switches(self, n_train: int, params: Mapping[str, Any]) -> bool:
        """Whether a fit of ``params`` on ``n_train`` rows uses the scalable form."""
        return (self.scale_threshold is not None and params.get("form") == "auto"
                and n_train > self.scale_threshold)

    def switch_note(self, n_train: int) -> str:
        """The one line announcing the switch to the scalable form."""
        return (f"{self.kind}: {n_train:,} training rows > {self.scale_threshold:,}: fitting "
                f"its scalable form ({self.scalable_form}; --param form=exact keeps the "
                "exact one)")

    @property
    def param_names(self) -> list[str]:
        return [p.name for p in self.params]

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        hint = did_you_mean(name, self.param_names, n=2)
        known = ", ".join(self.param_names) or "none"
        raise PipelineError(f"head {self.kind!r} has no parameter {name!r}{hint}; "
                            f"its parameters are: {known}")

    def defaults(self) -> dict[str, Any]:
        return {p.name: p.default for p in self.params}

    def resolve(self, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """All parameters: the defaults overridden by ``params`` (each checked)."""
        out = self.defaults()
        for name, value in (params or {}).items():
            out[name] = self.param(name).check(value, self.kind)
        return out

    def make(self, params: Mapping[str, Any] | None = None, *, n_classes: int,
             seed: int = 0, calibrate: bool = True) -> Head:
        """A new, unfitted head; ``calibrate=False`` (kinds that are :attr:`calibrated`):
        fitted for ranking only, see :attr:`Head.calibrate`."""
        head = self.cls(self.kind, self.resolve(params), n_classes=n_classes, seed=seed)
        head.scale_threshold = self.scale_threshold
        head.calibrate = calibrate or not self.calibrated
        return head


