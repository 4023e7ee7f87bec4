"""One training step of a built case, wrapped for measurement: hooks, autocast, the step.

Both the prediction (``measure.predict``) and the real measurement (``measure.measured``)
run the case's step through these, so the two measure the same thing.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Callable, Iterator

import torch

from spbench.methods.base import StepHooks

if TYPE_CHECKING:
    from spbench.case import Built, Case


class ChainHooks(StepHooks):
    """Several StepHooks in one, plus autocast around the forward phase when asked."""

    def __init__(self, *hooks: StepHooks, autocast: tuple[str, torch.dtype] | None = None) -> None:
        self.hooks = hooks
        self.autocast = autocast

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        with contextlib.ExitStack() as stack:
            if name == "forward" and self.autocast is not None:
                stack.enter_context(torch.autocast(self.autocast[0], dtype=self.autocast[1]))
            for hook in self.hooks:
                stack.enter_context(hook.phase(name))
            yield


def autocast_for(case: "Case", device_type: str) -> tuple[str, torch.dtype] | None:
    """(device type, dtype) of the case's autocast, or None (float32, or half weights)."""
    return None if case.autocast_dtype is None else (device_type, getattr(torch, case.autocast_dtype))


def step_fn(built: "Built", optimizer: torch.optim.Optimizer, hooks: StepHooks) -> Callable[[], torch.Tensor]:
    """The case's training step as a function of nothing (the method's ``train_step``)."""
    return lambda: built.method.train_step(built.model, built.batch, optimizer, built.objective, hooks)
