"""Method registry. Importing this package registers every method module in it.

    >>> from spbench.methods import get
    >>> method = get("lora").from_overrides({"r": "16"})

Each module of this package registers its methods when imported (timm style), so adding a
method is adding a module; nothing else needs editing.
"""

from __future__ import annotations

import importlib
import pkgutil

from spbench.methods.base import METHODS, Method, StepHooks, register_method

for _info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if _info.name != "base" and not _info.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_info.name}")


def get(name: str) -> type[Method]:
    """The Method class registered as ``name`` (raises with did-you-mean)."""
    return METHODS.get(name)


def names() -> list[str]:
    return METHODS.names()


__all__ = ["METHODS", "Method", "StepHooks", "get", "names", "register_method"]
