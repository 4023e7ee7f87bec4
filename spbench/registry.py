"""A strict name -> object registry (timm/peft style).

Registration happens by decorator when a module is imported; a duplicate name raises (a
silent overwrite would benchmark the wrong thing) and an unknown name raises with the
closest matches and the full list, like lm-evaluation-harness does.
"""

from __future__ import annotations

import difflib
from typing import Callable, Generic, Iterator, TypeVar

from spbench.errors import InputError

T = TypeVar("T")


class RegistryError(KeyError, InputError):
    """Unknown or duplicate registry name (an input error; a ``KeyError`` for lookups).
    ``str()`` is the readable message."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class Registry(Generic[T]):
    """Named objects of one kind ("method", "backbone")."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: ``@METHODS.register("lora")``."""
        if name != name.lower() or not name.replace("_", "").replace("-", "").isalnum():
            raise RegistryError(f"{self.kind} name {name!r} must be lowercase letters, digits, '_' or '-'")

        def deco(obj: T) -> T:
            if name in self._items:
                raise RegistryError(
                    f"{self.kind} {name!r} is already registered (by {self._items[name]!r})"
                )
            self._items[name] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise RegistryError(self.unknown_message(name)) from None

    def unknown_message(self, name: str) -> str:
        close = difflib.get_close_matches(name, self._items, n=3, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        return f"Unknown {self.kind} {name!r}.{hint} Available: {', '.join(self.names())}"

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)
