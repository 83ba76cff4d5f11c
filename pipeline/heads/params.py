"""Declared, typed hyper-parameters of a head.

Every head kind declares its parameters up front as :class:`Param` objects. Values coming from
the command line (text such as ``"0.1"``) are *parsed* by the declared type; values coming from
Python or TOML are *checked* against it. Either way a bad value is a one-line
:class:`~pipeline.errors.PipelineError` that says what was expected, before anything is fitted.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.errors import PipelineError

_NONE_WORDS = ("none", "null")
_TRUE_WORDS = ("true", "yes", "1", "on")
_FALSE_WORDS = ("false", "no", "0", "off")


@dataclass(frozen=True)
class Param:
    """One hyper-parameter: its name, type, default and the values it accepts.

    ``type`` is one of ``"int"``, ``"float"``, ``"str"``, ``"bool"``, ``"int_tuple"`` (layer
    sizes written ``256x128``) or ``"float_or_str"`` (e.g. an SVM's ``gamma``: a number or one
    of ``choices``). ``minimum`` is inclusive unless ``exclusive_minimum``; ``nullable`` lets
    the value be ``None`` (written ``none``).
    """

    name: str
    type: str
    default: Any
    help: str = ""
    choices: Sequence[str] | None = None
    minimum: float | None = None
    exclusive_minimum: bool = False
    maximum: float | None = None
    nullable: bool = False

    @property
    def expected(self) -> str:
        """Human description of the accepted values, used in error messages and help."""
        if self.type == "str":
            text = "one of " + ", ".join(self.choices or ())
        elif self.type == "float_or_str":
            text = f"a number{self._range()} or one of " + ", ".join(self.choices or ())
        elif self.type == "int_tuple":
            text = "positive integers joined by 'x' (e.g. 256 or 256x128)"
        elif self.type == "bool":
            text = "true or false"
        else:
            text = ("an integer" if self.type == "int" else "a number") + self._range()
        return text + (" or none" if self.nullable else "")

    def _range(self) -> str:
        parts = []
        if self.minimum is not None:
            parts.append(f"{'>' if self.exclusive_minimum else '>='} {self.minimum:g}")
        if self.maximum is not None:
            parts.append(f"<= {self.maximum:g}")
        return (" " + " and ".join(parts)) if parts else ""

    def _fail(self, value: Any, head: str) -> PipelineError:
        return PipelineError(
            f"head {head!r}: parameter {self.name}={value!r} is invalid; expected {self.expected}"
        )

    def parse(self, text: str, head: str = "?") -> Any:
        """Convert command-line text to a value of the declared type (then :meth:`check` it)."""
        raw = text.strip()
        if self.nullable and raw.lower() in _NONE_WORDS:
            return None
        try:
            if self.type == "int":
                value: Any = int(raw)
            elif self.type == "float":
                value = float(raw)
            elif self.type == "bool":
                low = raw.lower()
                if low not in _TRUE_WORDS + _FALSE_WORDS:
                    raise ValueError(raw)
                value = low in _TRUE_WORDS
            elif self.type == "int_tuple":
                value = tuple(int(p) for p in raw.lower().split("x"))
            elif self.type == "float_or_str":
                value = raw if raw in (self.choices or ()) else float(raw)
            else:
                value = raw
        except ValueError:
            raise self._fail(text, head) from None
        return self.check(value, head)

    def check(self, value: Any, head: str = "?") -> Any:
        """Validate (and normalise) a Python value; raise :class:`PipelineError` if it is bad."""
        if value is None:
            if self.nullable:
                return None
            raise self._fail(value, head)
        if isinstance(value, str) and self.type not in ("str", "float_or_str"):
            return self.parse(value, head)
        t = self.type
        if t == "int":
            if isinstance(value, bool) or not isinstance(value, int | float) or (
                    isinstance(value, float) and not value.is_integer()):
                raise self._fail(value, head)
            value = int(value)
        elif t == "float" or (t == "float_or_str" and not isinstance(value, str)):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise self._fail(value, head)
            value = float(value)
            if not math.isfinite(value):
                raise self._fail(value, head)
        elif t == "bool":
            if not isinstance(value, bool):
                raise self._fail(value, head)
        elif t == "int_tuple":
            if isinstance(value, int) and not isinstance(value, bool):
                value = (value,)
            if not isinstance(value, list | tuple) or not value or not all(
                    isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value):
                raise self._fail(value, head)
            return tuple(value)
        elif t in ("str", "float_or_str"):
            if not isinstance(value, str) or (self.choices and value not in self.choices):
                raise self._fail(value, head)
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            if self.minimum is not None and (
                    value < self.minimum or (self.exclusive_minimum and value == self.minimum)):
                raise self._fail(value, head)
            if self.maximum is not None and value > self.maximum:
                raise self._fail(value, head)
        return value


def P(name: str, type: str, default: Any, help: str = "", **kw: Any) -> Param:  # noqa: N802
    """Shorthand constructor used by the head declarations."""
    return Param(name, type, default, help, **kw)


def format_value(value: Any) -> str:
    """Compact text for a parameter value, as used in run ids and tables (``256x128``, ``0.1``)."""
    if value is None:
        return "none"
    if isinstance(value, tuple | list):
        return "x".join(str(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def format_params(params: dict[str, Any]) -> str:
    """``C=0.1 gamma=scale`` – human-readable parameter summary."""
    return " ".join(f"{k}={format_value(v)}" for k, v in params.items())


ParamCheck = Callable[[dict[str, Any]], None]
