"""What values a method hyperparameter may take, declared on its dataclass field.

A method field declares its domain in its metadata, next to its default (and its sweep space):

    r: int = hparam(8, at_least(1), search="4,8,16")            # methods/lora.py
    dropout: float = hparam(0.0, fraction())                     # [0, 1)
    k: int = hparam(9, odd(1), search="3,5,9")                   # methods/lst.py (k-LST)

:func:`check_field` is the one check of one value: ``Method.__post_init__`` applies it to every
field (so no method can be built with a value outside its domain, from any front end), and the
sweep applies it to every ``--grid`` value and ``--space`` bound before a trial starts. A
``Literal[...]`` field's choices are its domain without a declaration. A subclass that only
changes a default (``lr: float = 2e-5``) keeps the domain declared by the class it inherits from.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import typing
from dataclasses import dataclass
from typing import Any

from spbench.errors import InputError

DOMAIN_KEY = "domain"
SEARCH_KEY = "search"  # spbench.sweep.space reads it


@dataclass(frozen=True)
class Domain:
    """An interval of numbers (ends included unless ``*_open``), optionally odd integers only."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    odd: bool = False
    zero: bool = False  # 0 also allowed (an "off" value outside the interval)

    def describe(self) -> str:
        lo, hi = self.low, self.high
        if lo is not None and hi is not None:
            text = f"in {'(' if self.low_open else '['}{lo:g}, {hi:g}{')' if self.high_open else ']'}"
        elif lo is not None:
            text = f"{'>' if self.low_open else '>='} {lo:g}"
        elif hi is not None:
            text = f"{'<' if self.high_open else '<='} {hi:g}"
        else:
            text = "a number"
        text = f"odd and {text}" if self.odd else text
        return f"0 or {text}" if self.zero else text

    def why_not(self, value: Any) -> str:
        """Why ``value`` lies outside (\"\" when it lies inside)."""
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            return f"must be {self.describe()}, not {value!r}"
        if self.zero and value == 0:
            return ""
        lo, hi = self.low, self.high
        below = lo is not None and (value <= lo if self.low_open else value < lo)
        above = hi is not None and (value >= hi if self.high_open else value > hi)
        if below or above or (self.odd and value % 2 != 1):
            return f"must be {self.describe()}, not {value!r}"
        return ""


def positive() -> Domain:
    return Domain(low=0, low_open=True)


def at_least(n: float) -> Domain:
    return Domain(low=n)


def fraction(open_low: bool = False) -> Domain:
    """A probability-like share: [0, 1) (a dropout), or (0, 1) with ``open_low``."""
    return Domain(low=0, high=1, low_open=open_low, high_open=True)


def odd(n: int = 1) -> Domain:
    return Domain(low=n, odd=True)


def hparam(default: Any, domain: Domain | None = None, *, search: str | None = None) -> Any:
    """A hyperparameter field: its default, its domain and (optionally) its sweep space."""
    metadata: dict[str, Any] = {}
    if domain is not None:
        metadata[DOMAIN_KEY] = domain
    if search is not None:
        metadata[SEARCH_KEY] = search
    return dataclasses.field(default=default, metadata=metadata)


def declared(cls: type, name: str, key: str) -> Any:
    """Field ``name``'s metadata ``key`` on ``cls``, the nearest class in the MRO that declares it winning."""
    for klass in cls.__mro__:
        own = klass.__dict__.get("__dataclass_fields__", {}).get(name)
        if own is not None and key in own.metadata:
            return own.metadata[key]
    return None


def check_field(cls: type, name: str, value: Any) -> None:
    """Raise InputError (one line: ``name must be ..., not value``) when ``value`` lies outside
    field ``name``'s declared domain or its ``Literal`` choices."""
    hint = _hints(cls).get(name)
    if typing.get_origin(hint) is typing.Literal and value not in typing.get_args(hint):
        raise InputError(f"{name} must be one of {', '.join(map(str, typing.get_args(hint)))}, not {value!r}")
    domain = declared(cls, name, DOMAIN_KEY)
    if domain is not None:
        why = domain.why_not(value)
        if why:
            raise InputError(f"{name} {why}")


@functools.lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def check_fields(obj: Any) -> None:
    """Every field of the dataclass instance ``obj`` in its domain."""
    for f in dataclasses.fields(obj):
        check_field(type(obj), f.name, getattr(obj, f.name))
