"""Parameter counts: total, trainable, and the parameters the backward pass reads.

"Read by backward" is observed, not inferred: a dispatch mode active during the backward
phase matches every op argument's storage against the parameters' storages. A frozen weight
that backward multiplies with (dL/dx = W^T dL/dy) counts; one that backward never touches
(LST's backbone, Side-LoRA's frozen Linears) does not.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from spbench.methods.base import StepHooks


def count_params(model: torch.nn.Module) -> dict[str, int]:
    """Unique parameter elements (tied weights counted once)."""
    seen: dict[int, torch.nn.Parameter] = {id(p): p for p in model.parameters()}
    return {
        "params_total": sum(p.numel() for p in seen.values()),
        "params_trainable": sum(p.numel() for p in seen.values() if p.requires_grad),
    }


class ParamReads(TorchDispatchMode):
    """Records which parameters (by qualified name) the dispatched ops read."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.by_storage: dict[StorageWeakRef, tuple[str, torch.nn.Parameter]] = {}
        for name, param in model.named_parameters():
            self.by_storage.setdefault(StorageWeakRef(param.untyped_storage()), (name, param))
        self.read: dict[str, torch.nn.Parameter] = {}

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        flat, _ = tree_flatten((args, kwargs or {}))
        for arg in flat:
            if isinstance(arg, torch.Tensor):
                hit = self.by_storage.get(StorageWeakRef(arg.untyped_storage()))
                if hit is not None:
                    self.read.setdefault(*hit)
        return func(*args, **(kwargs or {}))

    def numel(self) -> int:
        return sum(p.numel() for p in self.read.values())

    def frozen_read(self) -> list[str]:
        return sorted(name for name, p in self.read.items() if not p.requires_grad)


class BackwardReadHooks(StepHooks):
    """StepHooks that watch the backward phase with :class:`ParamReads`, and count the
    trainable elements that actually received a gradient (a trainable parameter the gradient
    never reaches is trained by nothing)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.reads = ParamReads(model)
        self.with_grad = 0
        self.ran_backward = False

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        if name != "backward":
            yield
            return
        self.ran_backward = True
        with self.reads:
            yield
        params = {id(p): p for p in self.model.parameters() if p.requires_grad}
        self.with_grad = sum(p.numel() for p in params.values() if p.grad is not None)
