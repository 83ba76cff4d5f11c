"""The head interface and the registry of head kinds.

A *head* is the small classifier fitted on cached features. Every kind, whether a Keras dense
layer or a scikit-learn pipeline, has the same interface::

    head = make_head("logreg", {"C": 0.1}, n_classes=2)
    head.fit(X_train, y_train, X_val, y_val)   # X: (n, d) float rows; y: int labels
    head.predict_proba(X)                      # (n, n_classes), columns = class indices

so the selection loop, the reports and the fine-tuning stage never need to know which library
is underneath. A :class:`HeadSpec` declares a kind: its parameters (validated before any fit),
whether it honours ``class_weight``, and the class that implements it.
"""

from __future__ import annotations

import itertools
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import PipelineError, did_you_mean
from pipeline.heads.params import Param, format_value


class Head(ABC):
    """A classifier over feature rows with a scikit-learn-like ``fit``/``predict_proba``.

    Subclasses set ``family`` (``"sklearn"`` or ``"keras"``) and implement :meth:`fit`,
    :meth:`predict_proba`, :meth:`save` and :meth:`load`. ``params`` are already validated.
    ``history`` holds per-epoch curves for heads trained by epochs (else ``None``).
    """

    family: str = "?"
    #: File name the fitted head is saved under inside a run folder.
    filename: str = "head.bin"

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

    def predict(self, x: np.ndarray) -> np.ndarray:
        """The most probable class index of each row."""
        return np.argmax(self.predict_proba(x), axis=1)

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
    """The declaration of one head kind."""

    kind: str
    summary: str
    cls: type[Head]
    params: tuple[Param, ...]
    family: str
    #: Intended features: "pooled" vectors or "flattened" spatial maps ("any" if both).
    features: str = "any"

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
             seed: int = 0) -> Head:
        return self.cls(self.kind, self.resolve(params), n_classes=n_classes, seed=seed)


_REGISTRY: dict[str, HeadSpec] = {}


def register_head(spec: HeadSpec, *, replace: bool = False) -> HeadSpec:
    """Add a head kind to the registry (``replace=True`` to redefine one, e.g. in tests)."""
    if spec.kind in _REGISTRY and not replace:
        raise ValueError(f"head kind {spec.kind!r} registered twice")
    _REGISTRY[spec.kind] = spec
    return spec


def unregister_head(kind: str) -> None:
    _REGISTRY.pop(kind, None)


def _load_builtin() -> None:
    # Imported for their side effect of registering; neither imports TensorFlow at import time.
    from pipeline.heads import keras_heads, sklearn_heads  # noqa: F401


def get_head_spec(kind: str) -> HeadSpec:
    """The spec of a registered head kind; an unknown kind is a :class:`PipelineError`."""
    _load_builtin()
    try:
        return _REGISTRY[kind]
    except KeyError:
        hint = did_you_mean(kind, _REGISTRY, n=2)
        raise PipelineError(f"unknown head {kind!r}{hint}; known heads: "
                            f"{', '.join(_REGISTRY)}") from None


def list_heads() -> list[HeadSpec]:
    _load_builtin()
    return list(_REGISTRY.values())


def make_head(kind: str, params: Mapping[str, Any] | None = None, *, n_classes: int,
              seed: int = 0) -> Head:
    """A new, unfitted head of ``kind`` with validated ``params`` (defaults fill the rest)."""
    return get_head_spec(kind).make(params, n_classes=n_classes, seed=seed)


@dataclass(frozen=True)
class HeadConfig:
    """One configuration of the sweep: a head kind with all its parameter values."""

    kind: str
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def changed(self) -> dict[str, Any]:
        """The parameters that differ from the kind's defaults."""
        defaults = get_head_spec(self.kind).defaults()
        return {k: v for k, v in self.params.items() if defaults.get(k, object()) != v}

    @property
    def label(self) -> str:
        """``logreg C=0.1`` – for tables and progress lines."""
        changed = self.changed
        return self.kind + ("" if not changed else " " + " ".join(
            f"{k}={format_value(v)}" for k, v in changed.items()))

    @property
    def slug(self) -> str:
        """``logreg-C0.1`` – for run ids (file-name safe)."""
        parts = [self.kind] + [f"{k}{format_value(v)}" for k, v in self.changed.items()]
        text = "-".join(parts)
        return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


@dataclass(frozen=True)
class HeadGrid:
    """A head kind with lists of values per parameter; every combination is a configuration."""

    kind: str
    values: dict[str, tuple[Any, ...]] = field(default_factory=dict)

    def configs(self, defaults: Mapping[str, Any] | None = None) -> list[HeadConfig]:
        """Expand to configurations. ``defaults`` (e.g. ``class_weight``) apply where the kind
        declares the parameter and the grid does not set it."""
        spec = get_head_spec(self.kind)
        base = spec.defaults()
        for k, v in (defaults or {}).items():
            if k in base and k not in self.values:
                base[k] = spec.param(k).check(v, self.kind)
        names = list(self.values)
        out = []
        for combo in itertools.product(*(self.values[n] for n in names)):
            params = dict(base)
            params.update(zip(names, combo, strict=True))
            out.append(HeadConfig(self.kind, params))
        return out


def make_grid(kind: str, values: Mapping[str, Any] | None = None) -> HeadGrid:
    """A validated :class:`HeadGrid` from Python values (a scalar or a list per parameter)."""
    spec = get_head_spec(kind)
    checked: dict[str, tuple[Any, ...]] = {}
    for name, vals in (values or {}).items():
        p = spec.param(name)
        # A list is a grid of values. For layer sizes a tuple (or "256x128") is one value.
        grid_types = list if p.type == "int_tuple" else list | tuple
        seq = list(vals) if isinstance(vals, grid_types) else [vals]
        if not seq:
            raise PipelineError(f"head {kind!r}: parameter {name} has an empty value list")
        checked[name] = tuple(dict.fromkeys(p.check(v, kind) for v in seq))
    return HeadGrid(kind, checked)


def parse_param_arg(kind: str, text: str) -> tuple[str, tuple[Any, ...]]:
    """Parse one ``--param name=v1,v2,...`` for head ``kind`` into typed values."""
    spec = get_head_spec(kind)
    name, sep, raw = text.partition("=")
    name = name.strip()
    if not sep or not name or not raw.strip():
        raise PipelineError(f"--param {text!r}: expected name=value or name=v1,v2,... "
                            f"(parameters of {kind!r}: {', '.join(spec.param_names)})")
    p = spec.param(name)
    values = [p.parse(v, kind) for v in raw.split(",") if v.strip()]
    if not values:
        raise PipelineError(f"--param {text!r}: no values given")
    return name, tuple(dict.fromkeys(values))


def parse_head_args(tokens: Iterable[tuple[str, str]]) -> list[HeadGrid]:
    """Grids from an ordered sequence of ``("head", KIND)`` / ``("param", "name=v1,v2")``.

    A ``param`` applies to the nearest preceding ``head``; giving the same parameter twice for
    one head is an error, as is a ``param`` before any ``head``.
    """
    grids: list[tuple[str, dict[str, tuple[Any, ...]]]] = []
    for what, value in tokens:
        if what == "head":
            get_head_spec(value)  # fail early on an unknown kind
            grids.append((value, {}))
        elif what == "param":
            if not grids:
                raise PipelineError(f"--param {value!r} must follow the --head it applies to")
            kind, values = grids[-1]
            name, vals = parse_param_arg(kind, value)
            if name in values:
                raise PipelineError(f"--param {name} given twice for head {kind!r}; "
                                    f"list the values once: {name}=v1,v2,...")
            values[name] = vals
        else:  # pragma: no cover - programming error
            raise ValueError(what)
    return [HeadGrid(kind, values) for kind, values in grids]


def expand_grids(grids: Sequence[HeadGrid],
                 defaults: Mapping[str, Any] | None = None) -> list[HeadConfig]:
    """All configurations of ``grids``, in order, without duplicates."""
    seen: dict[tuple[str, str], HeadConfig] = {}
    for g in grids:
        for c in g.configs(defaults):
            seen.setdefault((c.kind, repr(sorted(c.params.items()))), c)
    return list(seen.values())
