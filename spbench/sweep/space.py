"""Search spaces: declared next to each method's hyperparameters, overridden on the command line.

A method declares what is worth searching on its dataclass field (``spbench.domains.hparam``),
one line per field, beside the field's domain:

    lr: float = hparam(1e-4, positive(), search="x0.1:x10:log")   # methods/base.py
    r: int = hparam(8, at_least(1), search="4,8,16")               # methods/lora.py

A subclass that only changes the default (``lr: float = 2e-5`` in full_ft) keeps the
declaration of the class it inherits from. Spec syntax, the same on the command line
(``--space KEY=SPEC``, ``--grid KEY=V1,V2,...``):

    LOW:HIGH        a range (float, or int when the field is an int)
    LOW:HIGH:log    a range searched on a log scale
    xA:xB[:log]     a range relative to the field's default (x0.1:x10 = a tenth to ten times it)
    V1,V2,...       a set of choices

The grid sampler needs values: a log range gives two points per decade (at least three), ends
included, to two significant digits (x0.1:x10 around 2e-5: 2e-06, 6.3e-06, 2e-05, 6.3e-05,
0.0002); a linear range five evenly spaced points; choices are themselves. Nothing here imports optuna until a
trial asks for a value.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass
from typing import Any, Sequence

from spbench.domains import DOMAIN_KEY, SEARCH_KEY, check_field
from spbench.domains import declared as declared_metadata
from spbench.errors import InputError

METADATA_KEY = SEARCH_KEY


@dataclass(frozen=True)
class Param:
    """One searched hyperparameter: a range (``low``..``high``) or ``choices``; ``grid`` values."""

    name: str
    kind: type  # float | int | other (choices only)
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()
    grid: tuple[Any, ...] = ()

    @property
    def is_range(self) -> bool:
        return self.low is not None

    def describe(self) -> str:
        if self.is_range:
            return f"{self.low:g}..{self.high:g}" + (" (log)" if self.log else "")
        return ",".join(map(str, self.choices))

    def suggest(self, trial: Any) -> Any:
        """The value for this trial (the grid sampler answers from ``grid`` through the same calls)."""
        if self.is_range:
            low, high = self._bounds()
            if self.kind is int:
                return trial.suggest_int(self.name, int(low), int(high), log=self.log)
            return trial.suggest_float(self.name, float(low), float(high), log=self.log)
        return trial.suggest_categorical(self.name, list(self.choices))

    def distribution(self) -> Any:
        """The Optuna distribution :meth:`suggest` draws from (for a trial added by hand)."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if not self.is_range:
            return CategoricalDistribution(list(self.choices))
        low, high = self._bounds()
        if self.kind is int:
            return IntDistribution(int(low), int(high), log=self.log)
        return FloatDistribution(float(low), float(high), log=self.log)

    def _bounds(self) -> tuple[Any, Any]:
        low, high = self.low, self.high
        if self.grid:  # a grid may reach past the declared range: the distribution covers it
            low, high = min(low, *self.grid), max(high, *self.grid)  # type: ignore[type-var]
        return low, high


def field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def declared(cls: type) -> dict[str, str]:
    """``{field: spec}`` declared in field metadata, the nearest class in the MRO winning."""
    specs = {f.name: declared_metadata(cls, f.name, SEARCH_KEY) for f in dataclasses.fields(cls)}
    return {name: spec for name, spec in specs.items() if spec is not None}


def _number(text: str, kind: type, name: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise InputError(f"search space of {name}: {text!r} is not a number") from None
    if kind is int:
        if value != int(value):
            raise InputError(f"search space of {name}: {text!r} is not an integer")
        return int(value)
    return value


def _scalar_kind(hint: Any) -> type:
    """float or int for a numeric field (``Optional`` unwrapped); str stands for anything else."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        hint = args[0] if len(args) == 1 else hint
    return hint if hint in (int, float) else str


def parse_spec(name: str, spec: str, hint: Any, default: Any) -> Param:
    """One spec string -> :class:`Param` (see the module docstring)."""
    from spbench.methods.base import parse_value

    kind = _scalar_kind(hint)
    text = spec.strip()
    if ":" in text:
        parts = [p.strip() for p in text.split(":")]
        log = len(parts) == 3 and parts[2] == "log"
        if len(parts) not in (2, 3) or (len(parts) == 3 and not log):
            raise InputError(f"search space of {name}: write LOW:HIGH or LOW:HIGH:log, not {spec!r}")
        if kind not in (int, float):
            raise InputError(f"search space of {name}: a range needs a numeric field; give choices V1,V2,...")
        bounds = []
        for part in parts[:2]:
            if part.startswith("x"):
                if not isinstance(default, (int, float)) or not default:
                    raise InputError(f"search space of {name}: {part!r} is relative, but the default is {default!r}")
                bounds.append(kind(default * _number(part[1:], float, name)))
            else:
                bounds.append(_number(part, kind, name))
        low, high = bounds
        if not low < high:
            raise InputError(f"search space of {name}: the range {spec!r} is empty (low must be below high)")
        if log and low <= 0:
            raise InputError(f"search space of {name}: a log range must be positive, not {spec!r}")
        return Param(name, kind, low, high, log, grid=grid_points(low, high, log, kind))
    choices = tuple(parse_value(v.strip(), hint, name) for v in text.split(",") if v.strip())
    if not choices:
        raise InputError(f"search space of {name}: no values in {spec!r}")
    return Param(name, kind, choices=choices, grid=choices)


def grid_points(low: float, high: float, log: bool, kind: type) -> tuple[Any, ...]:
    """Grid values of a range: two per decade on a log scale, else five evenly spaced."""
    if log:
        n = max(3, round(2 * math.log10(high / low)) + 1)
        values = [low * (high / low) ** (i / (n - 1)) for i in range(n)]
    else:
        values = [low + (high - low) * i / 4 for i in range(5)]
    if kind is int:
        return tuple(sorted({int(round(v)) for v in values}))
    return tuple(float(f"{v:.2g}") for v in values)


def _pairs(items: Sequence[str], option: str) -> list[tuple[str, str | None]]:
    out = []
    for item in items:
        key, sep, value = item.partition("=")
        if not key.strip() or (sep and not value.strip()):
            raise InputError(f"{option} expects KEY=VALUES or a declared KEY, got {item!r}")
        out.append((key.strip(), value.strip() if sep else None))
    return out


def build_space(cls: type, grid: Sequence[str] = (), space: Sequence[str] = (),
                fixed: Sequence[str] = ()) -> list[Param]:
    """The searched parameters of method class ``cls``.

    Args:
        grid: ``--grid`` items: ``KEY=V1,V2`` (these grid values) or ``KEY`` (its declared space).
        space: ``--space`` items: ``KEY=SPEC`` or ``KEY``.
        fixed: names fixed by ``--set``: never searched.

    With neither ``grid`` nor ``space`` every declared field is searched; otherwise exactly
    the named ones.
    """
    hints = field_types(cls)
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    decl = declared(cls)
    named = _pairs(space, "--space") + _pairs(grid, "--grid")
    unknown = sorted({k for k, _ in named if k not in defaults})
    if unknown:
        raise InputError(f"method {getattr(cls, 'name', cls.__name__)!r} has no hyperparameter "
                         f"{', '.join(unknown)}; it has: {', '.join(sorted(defaults))}")
    both = sorted({k for k, _ in named} & set(fixed))
    if both:
        raise InputError(f"{', '.join(both)}: fixed with --set and searched with --grid/--space; choose one")
    specs: dict[str, str | None] = {k: v for k, v in _pairs(space, "--space")} if named else {
        k: v for k, v in decl.items() if k not in fixed}
    grid_values = dict(_pairs(grid, "--grid"))
    params = []
    for name in dict.fromkeys([*specs, *grid_values]):
        spec = specs.get(name) or decl.get(name)
        values = grid_values.get(name)
        if spec is None and values is None:
            raise InputError(f"{name} declares no search space: give one (--space {name}=LOW:HIGH[:log] "
                             f"or --grid {name}=V1,V2)")
        if spec is None:  # only grid values: its choices
            params.append(parse_spec(name, values, hints[name], defaults[name]))  # type: ignore[arg-type]
            continue
        param = parse_spec(name, spec, hints[name], defaults[name])
        if values is not None:
            own = parse_spec(name, values, hints[name], defaults[name]).choices
            if not param.is_range:  # choices: the grid's values join them (one stable distribution)
                param = dataclasses.replace(param, choices=tuple(dict.fromkeys([*param.choices, *own])))
            param = dataclasses.replace(param, grid=own)
        params.append(param)
    if not params:
        raise InputError(f"method {getattr(cls, 'name', cls.__name__)!r} declares no search space and none was "
                         "given: pass --grid KEY=V1,V2 or --space KEY=LOW:HIGH[:log]")
    for param in params:
        check_domain(cls, param, "--grid" if param.name in grid_values else
                     "--space" if param.name in dict(_pairs(space, "--space")) else "declared space")
    return params


def check_domain(cls: type, param: Param, option: str) -> None:
    """Every value ``param`` can give lies in its field's domain (``spbench.domains``):
    a range's ends and grid points, or each choice; a bad value fails before any trial starts."""
    domain = declared_metadata(cls, param.name, DOMAIN_KEY)
    if param.is_range and domain is not None and domain.odd:
        raise InputError(f"{option} {param.name}: a range does not keep {param.name} odd; give choices V1,V2,...")
    for value in dict.fromkeys([*((param.low, param.high) if param.is_range else param.choices), *param.grid]):
        try:
            check_field(cls, param.name, value)
        except InputError as exc:
            raise InputError(f"{option} {param.name}={_show(value)}: {exc}") from None


def _show(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def grid_of(params: Sequence[Param]) -> dict[str, list[Any]]:
    """The grid sampler's search space."""
    return {p.name: list(p.grid) for p in params}


def grid_size(params: Sequence[Param]) -> int:
    return math.prod(len(p.grid) for p in params)
