"""Search spaces: declared in field metadata (inherited by subclasses that change a default),
overridden by --grid / --space, grid points of ranges, every bad spec refused in one line."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from spbench import methods
from spbench.methods.base import Method
from spbench.sweep.space import build_space, declared, grid_of, grid_points, parse_spec


def test_every_method_declares_a_learning_rate_range_around_its_own_default() -> None:
    for name in methods.names():
        cls = methods.get(name)
        assert declared(cls)["lr"] == "x0.1:x10:log"
        (lr,) = [p for p in build_space(cls, grid=["lr"])]
        default = cls().lr
        assert lr.low == pytest.approx(default / 10) and lr.high == pytest.approx(default * 10) and lr.log
        assert min(lr.grid) == pytest.approx(default / 10, rel=0.05) and len(lr.grid) == 5
    assert set(declared(methods.get("lora"))) == {"lr", "r"}
    assert set(declared(methods.get("klst"))) == {"lr", "k"}
    assert set(declared(methods.get("mezo"))) == {"lr", "eps"}


def test_nearest_declaration_wins_and_undeclared_fields_are_not_searched() -> None:
    @dataclass(frozen=True)
    class Base(Method):
        width: int = field(default=4, metadata={"search": "2,4,8"})
        depth: int = 3

    @dataclass(frozen=True)
    class Child(Base):
        width: int = field(default=16, metadata={"search": "16:64:log"})
        lr: float = 0.5

    assert declared(Child) == {"lr": "x0.1:x10:log", "width": "16:64:log"}
    space = {p.name: p for p in build_space(Child)}
    assert space["width"].grid == (16, 32, 64) and space["lr"].high == pytest.approx(5.0)
    with pytest.raises(ValueError, match="depth declares no search space"):
        build_space(Child, grid=["depth"])
    assert grid_of(build_space(Child, grid=["depth=1,2"])) == {"depth": [1, 2]}


def test_command_line_names_exactly_what_is_searched() -> None:
    lora = methods.get("lora")
    assert [p.name for p in build_space(lora)] == ["lr", "r"]
    assert grid_of(build_space(lora, grid=["lr=1e-4,3e-4"])) == {"lr": [1e-4, 3e-4]}
    (lr,) = build_space(lora, space=["lr=1e-5:1e-3:log"])
    assert (lr.low, lr.high, lr.log, lr.grid) == (1e-5, 1e-3, True, (1e-5, 3.2e-5, 1e-4, 3.2e-4, 1e-3))
    (r,) = build_space(lora, grid=["r=2,4"])
    assert r.grid == (2, 4) and r.choices == (4, 8, 16, 2)  # one stable distribution across grids
    (lr,) = build_space(lora, grid=["lr=1e-2"], space=["lr"])  # a grid point past the declared range
    assert lr.grid == (1e-2,) and lr.high == pytest.approx(5e-3)
    assert [p.name for p in build_space(lora, fixed=["r"])] == ["lr"]


@pytest.mark.parametrize("args, message", [
    ({"grid": ["rank=4"]}, "no hyperparameter rank"),
    ({"grid": ["lr=1e-4"], "fixed": ["lr"]}, "fixed with --set and searched"),
    ({"space": ["lr=1e-3:1e-5"]}, "is empty"),
    ({"space": ["lr=0:1e-3:log"]}, "must be positive"),
    ({"space": ["lr=1e-5:1e-3:cubic"]}, "LOW:HIGH:log"),
    ({"space": ["lr=a:b"]}, "not a number"),
    ({"space": ["r=2.5:8"]}, "not an integer"),
    ({"grid": ["r=four"]}, "expects int"),
    ({"grid": ["lr="]}, "KEY=VALUES"),
    ({"space": ["targets=1:2"]}, "needs a numeric field"),
])
def test_bad_specs_say_what_is_wrong(args: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_space(methods.get("lora"), **args)


def test_grid_points() -> None:
    assert grid_points(1e-5, 1e-3, True, float) == (1e-5, 3.2e-5, 1e-4, 3.2e-4, 1e-3)
    assert grid_points(0.0, 1.0, False, float) == (0.0, 0.25, 0.5, 0.75, 1.0)
    assert grid_points(1, 3, False, int) == (1, 2, 3)
    assert parse_spec("k", "1,3,6", int, 3).grid == (1, 3, 6)
    assert parse_spec("lr", "x0.5:x2", float, 1e-3).low == pytest.approx(5e-4)
