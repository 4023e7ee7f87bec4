"""Ctrl-C (SIGINT) where it is safe: in training and waiting, never inside a storage write.

Python raises KeyboardInterrupt wherever the main thread happens to be. Inside Optuna's
journal-file lock that leaves a lock file behind or turns the interrupt into an unrelated
FileNotFoundError. So a sweep handles SIGINT itself: inside an :func:`interruptible` region
(training a trial, sleeping while others work) it raises KeyboardInterrupt at once; anywhere
else it is remembered and raised at the next :func:`check` (between trials). A second Ctrl-C
while one is pending interrupts at once.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Any, Iterator

_state = {"regions": 0, "pending": False}


def _handler(signum: int, frame: Any) -> None:
    if _state["regions"] or _state["pending"]:
        _state["pending"] = False
        raise KeyboardInterrupt
    _state["pending"] = True


@contextlib.contextmanager
def installed() -> Iterator[None]:
    """Handle SIGINT as described above while the block runs (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, _handler)
    _state.update(regions=0, pending=False)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def check() -> None:
    """Raise the KeyboardInterrupt of a Ctrl-C that came while it was not safe to."""
    if _state["pending"]:
        _state["pending"] = False
        raise KeyboardInterrupt


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """A region that a Ctrl-C may interrupt at once (no storage writes inside)."""
    check()
    _state["regions"] += 1
    try:
        yield
    finally:
        _state["regions"] -= 1
