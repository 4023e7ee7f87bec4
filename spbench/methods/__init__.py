"""Method registry. Importing this package registers every built-in method.

    >>> from spbench.methods import get
    >>> method = get("lora").from_overrides({"r": "16"})
"""

from __future__ import annotations

import importlib

from spbench.methods.base import METHODS, Method, StepHooks, register_method

# Each module registers itself on import (timm style). Order is the listing order only.
_BUILTIN = ("full_ft", "lora", "side_lora")
for _name in _BUILTIN:
    importlib.import_module(f"spbench.methods.{_name}")


def get(name: str) -> type[Method]:
    """The Method class registered as ``name`` (raises with did-you-mean)."""
    return METHODS.get(name)


def names() -> list[str]:
    return METHODS.names()


__all__ = ["METHODS", "Method", "StepHooks", "get", "names", "register_method"]
