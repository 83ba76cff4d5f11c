"""Configurations of head kinds: one configuration, a grid of them, and the CLI's spelling.

``make_grid("logreg", {"C": [0.01, 0.1]})`` from Python, ``--head logreg --param C=0.01,0.1``
from the command line (:func:`parse_head_args`); every value is checked against the kind's
declared parameters before anything is fitted.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pipeline.errors import PipelineError
from pipeline.heads.params import format_value
from pipeline.heads.registry import get_head_spec


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
