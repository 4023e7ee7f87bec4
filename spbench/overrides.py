"""``--set key=value`` strings -> ``Case.overrides`` pairs (typed later by ``Method.from_overrides``)."""

from __future__ import annotations

from typing import Sequence

from spbench.errors import InputError


def parse_overrides(items: Sequence[str] | None) -> tuple[tuple[str, str], ...]:
    """``["r=16", "scope=targets"]`` -> ``(("r", "16"), ("scope", "targets"))``."""
    out = []
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--set expects key=value, got {item!r}")
        out.append((key.strip(), value.strip()))
    return tuple(out)
