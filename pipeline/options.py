"""One options schema per stage: declared once, validated once, before any work starts.

A stage's options are a frozen dataclass deriving from :class:`Options`, each field declared
with :func:`option` (default, help text, constraints), in the spirit of scikit-learn's
``_parameter_constraints``::

    @dataclass(frozen=True)
    class ExtractOptions(Options):
        SECTION = "extract"
        pooling: str = option("avg", "avg | max | flatten | none", choices=POOLINGS)
        batch_size: int = option(32, "Images per forward pass.", minimum=1)

The Python API takes the dataclass (or keyword arguments), the TOML table goes through
:meth:`Options.from_mapping`, and the CLI reads each flag's default and help from the schema
(:meth:`Options.default`, :meth:`Options.help`), so a new option is added in one place. Every
value is type-checked (``seed = "x"`` or ``input_size = "big"`` in a TOML file is one line
naming the key) and constraint-checked when the object is made.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Self

from pipeline.errors import PipelineError, UsageError, did_you_mean


@dataclass(frozen=True)
class OptionSpec:
    """What :func:`option` declares about one field besides its type and default."""

    help: str
    choices: tuple[Any, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False
    #: Extra check: returns an error message (without the name) or None.
    check: Callable[[Any], str | None] | None = None
    #: The command-line flag, when it is not ``--`` + the name with dashes.
    flag: str | None = None
    #: Other names accepted by :meth:`Options.from_mapping` (e.g. ``lr``).
    aliases: tuple[str, ...] = ()
    #: Old spellings of values, still accepted with a warning: ``((old, new), ...)``
    #: (e.g. ``((True, "balanced"), (False, "none"))`` for a flag that became a choice).
    deprecated_values: tuple[tuple[Any, Any], ...] = ()


def option(default: Any = dataclasses.MISSING, help: str = "", *,
           default_factory: Callable[[], Any] | None = None,
           choices: tuple[Any, ...] | list[Any] | None = None,
           minimum: float | None = None, maximum: float | None = None,
           exclusive_minimum: bool = False, check: Callable[[Any], str | None] | None = None,
           flag: str | None = None, aliases: tuple[str, ...] = (),
           deprecated_values: tuple[tuple[Any, Any], ...] = ()) -> Any:
    """Declare an option field: default, help text and constraints."""
    spec = OptionSpec(help=help, choices=tuple(choices) if choices is not None else None,
                      minimum=minimum, maximum=maximum, exclusive_minimum=exclusive_minimum,
                      check=check, flag=flag, aliases=aliases,
                      deprecated_values=deprecated_values)
    if default_factory is not None:
        return dataclasses.field(default_factory=default_factory, metadata={"option": spec})
    return dataclasses.field(default=default, metadata={"option": spec})


def _describe(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [_describe(a) for a in args if a is not type(None)]
        return " or ".join(inner) + (" (or none)" if type(None) in args else "")
    if origin is tuple:
        plural = {int: "whole numbers", float: "numbers", str: "strings"}
        return f"a list of {plural.get(args[0], _describe(args[0]))}"
    return {bool: "true or false", int: "a whole number", float: "a number", str: "a string",
            Path: "a path"}.get(tp, getattr(tp, "__name__", str(tp)))


#: Scalar type -> (what a value must be, how it becomes that type). Strict: a bool is not a
#: number and a string is not a number (a TOML ``seed = "x"`` is a mistake, not a seed).
_SCALARS: dict[Any, tuple[Callable[[Any], bool], Callable[[Any], Any]]] = {
    bool: (lambda v: isinstance(v, bool), bool),
    int: (lambda v: isinstance(v, int) and not isinstance(v, bool), int),
    float: (lambda v: isinstance(v, int | float) and not isinstance(v, bool), float),
    str: (lambda v: isinstance(v, str), str),
    Path: (lambda v: isinstance(v, str | os.PathLike) and bool(str(v)), Path),
}


def _coerce(value: Any, tp: Any) -> Any:
    """``value`` as type ``tp``, or ``ValueError``. Strict: no bool for int, no str for a
    number (a TOML ``seed = "x"`` is a mistake); tuples also accept ``"a,b,c"``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a)
            except ValueError:
                continue
        raise ValueError
    if origin is tuple:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
            return tuple(_parse_text(v, args[0]) for v in value)
        if not isinstance(value, list | tuple):
            raise ValueError
        return tuple(_coerce(v, args[0]) for v in value)
    if tp is Any:
        return value
    if tp in _SCALARS:
        accepts, convert = _SCALARS[tp]
        if not accepts(value):
            raise ValueError
        return convert(value)
    if isinstance(value, tp):
        return value
    raise ValueError


def _parse_text(text: str, tp: Any) -> Any:
    """One element of a comma-separated list given as text."""
    try:
        if tp is float:
            return float(text)
        if tp is int:
            return int(text)
    except ValueError:
        raise ValueError from None
    return _coerce(text, tp)


@dataclass(frozen=True)
class Options:
    """Base class of the per-stage options schemas (see the module docstring)."""

    #: The experiment TOML table these options come from (also names them in errors).
    SECTION: ClassVar[str] = "options"

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            spec = f.metadata.get("option")
            if spec is None:
                continue
            value = self._undeprecated(f.name, getattr(self, f.name), spec)
            try:
                value = _coerce(value, hints[f.name])
            except ValueError:
                raise UsageError(f"{self._where(f.name)} = {value!r}: expected "
                                 f"{_describe(hints[f.name])}") from None
            object.__setattr__(self, f.name, value)
            problem = _check(value, spec)
            if problem:
                raise UsageError(f"{self._where(f.name)} = {value!r}: {problem}")
        try:
            self.validate()
        except UsageError:
            raise
        except PipelineError as e:  # a bad combination of values is a usage error too
            raise UsageError(str(e)) from None

    def validate(self) -> None:
        """Checks across fields; subclasses raise :class:`PipelineError` (re-raised as a
        :class:`~pipeline.errors.UsageError`: exit status 2)."""

    @classmethod
    def _undeprecated(cls, name: str, value: Any, spec: OptionSpec) -> Any:
        """``value``, or its new spelling (with a one-line warning) if it is an old one."""
        for old, new in spec.deprecated_values:
            if type(value) is type(old) and value == old:
                from pipeline.progress import Reporter

                Reporter().warn(f"{cls._where(name)} = {value!r} is deprecated; "
                                f"use {new!r}")
                return new
        return value

    @classmethod
    def _where(cls, name: str) -> str:
        return f"{cls.SECTION}: {name}"

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls) if "option" in f.metadata]

    @classmethod
    def spec(cls, name: str) -> OptionSpec:
        for f in dataclasses.fields(cls):
            if f.name == name and "option" in f.metadata:
                return f.metadata["option"]
        raise KeyError(name)

    @classmethod
    def help(cls, name: str) -> str:
        """The help text of option ``name`` (for ``--help`` and the docs)."""
        return cls.spec(name).help

    @classmethod
    def default(cls, name: str) -> Any:
        for f in dataclasses.fields(cls):
            if f.name == name:
                if f.default_factory is not dataclasses.MISSING:
                    return f.default_factory()
                return f.default
        raise KeyError(name)

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any] | None, where: str | None = None,
                     **overrides: Any) -> Self:
        """Options from a mapping (a TOML table, keyword arguments); unknown keys are an
        error naming the expected ones. ``overrides`` that are not ``None`` win."""
        if mapping is not None and not isinstance(mapping, Mapping):
            raise UsageError(f"{where or cls.SECTION}: expected a table of options")
        values = dict(mapping or {})
        aliases = {a: n for n in cls.names() for a in cls.spec(n).aliases}
        for alias, name in aliases.items():
            if alias in values:
                values.setdefault(name, values.pop(alias))
        names = cls.names()
        unknown = [k for k in values if k not in names]
        if unknown:
            hint = did_you_mean(unknown[0], names, n=2)
            raise UsageError(f"{where or cls.SECTION}: unknown key(s) "
                             f"{', '.join(map(str, unknown))}{hint}; expected "
                             f"{', '.join(names)}")
        values.update({k: v for k, v in overrides.items() if v is not None})
        if where is None:
            return cls(**values)
        try:
            return cls(**values)
        except PipelineError as e:  # name the table as the caller knows it
            text = str(e).removeprefix(f"{cls.SECTION}: ")
            raise UsageError(f"{where}: {text}") from None

    def to_dict(self) -> dict[str, Any]:
        """Plain values (paths as strings, tuples as lists) for records and TOML."""
        out = {}
        for name in self.names():
            v = getattr(self, name)
            out[name] = str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) \
                else v
        return out

    def replace(self, **changes: Any) -> Self:
        """A copy with ``changes`` (validated again); ``None`` values are ignored."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


def _check(value: Any, spec: OptionSpec) -> str | None:
    if value is None:
        return None
    if spec.choices is not None and value not in spec.choices:
        return f"expected one of {', '.join(map(str, spec.choices))}"
    if isinstance(value, float) and not math.isfinite(value):
        return "expected a finite number"
    if isinstance(value, int | float) and not isinstance(value, bool):
        if spec.minimum is not None and (value < spec.minimum or (
                spec.exclusive_minimum and value == spec.minimum)):
            bound = "above" if spec.exclusive_minimum else "at least"
            return f"expected a value {bound} {spec.minimum:g}"
        if spec.maximum is not None and value > spec.maximum:
            return f"expected a value at most {spec.maximum:g}"
    if spec.check is not None:
        return spec.check(value)
    return None
