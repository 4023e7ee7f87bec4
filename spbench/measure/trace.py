"""The allocation trace of a predicted step: every storage allocated and freed, in order.

The caching allocator's reserved bytes depend on the order and sizes of allocations and
frees, not only on the live total a tracker reports. :class:`AllocTrace` records them on the
fake-tensor run of what the measured protocol does on the device (``measure.measured``): the
model's parameters and buffers moved there (``Module.to``'s order), the batch, the warm-up
step (which creates the optimizer state), then the measured step. ``spbench.measure.allocator``
replays it.

Cheap by design: one dictionary lookup per op output (views and in-place results share a
storage already seen), and a weak reference per new storage whose callback records the free
when the storage dies (as torch's ``MemTracker`` learns of frees).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any, Iterable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

_DEVICE = torch.ops.prim.device.default
ALLOC, FREE = "alloc", "free"


@dataclass
class Trace:
    """Ordered ``(ALLOC | FREE, storage id, bytes)`` events; ``step_start``: the index where
    the measured step begins (after the warm-up and its garbage collection)."""

    events: list[tuple[str, int, int]] = field(default_factory=list)
    step_start: int = 0

    def live_peak(self, start: int = 0, unit: int = 1) -> int:
        """Peak of live bytes from event ``start`` on, each storage rounded up to ``unit``
        bytes: what a tracker of live tensors sees."""
        def size(n: int) -> int:
            return -(-n // unit) * unit

        live = sum(size(n) if kind == ALLOC else -size(n) for kind, _, n in self.events[:start])
        peak = live
        for kind, _, n in self.events[start:]:
            live += size(n) if kind == ALLOC else -size(n)
            peak = max(peak, live)
        return peak


class AllocTrace(TorchDispatchMode):
    """Records each new storage an op outputs, and its death, into ``self.trace``.

    Enter it inside the ``FakeTensorMode`` (fake storages are what it sees); storages made
    before it (parameters, batch) are announced with :meth:`resident`. Recording stops at
    :meth:`close`: later frees (the model dropped after the prediction) are not the step's.
    """

    def __init__(self) -> None:
        super().__init__()
        self.trace = Trace()
        self._live: dict[int, tuple[int, int, weakref.ref]] = {}  # id(storage) -> (sid, bytes, ref)
        self._next = 0
        self._open = True

    def _freed(self, key: int, _ref: Any) -> None:
        entry = self._live.pop(key, None)
        if entry is not None and self._open:
            self.trace.events.append((FREE, entry[0], entry[1]))

    def add(self, tensor: torch.Tensor) -> None:
        """Record ``tensor``'s storage as allocated now, unless already seen."""
        st = tensor.untyped_storage()
        key = id(st)
        if key in self._live:
            return
        nbytes = st.nbytes()
        if nbytes == 0:  # the allocator hands out no block for an empty tensor
            return
        sid = self._next
        self._next += 1
        self._live[key] = (sid, nbytes, weakref.ref(st, lambda ref, key=key: self._freed(key, ref)))
        self.trace.events.append((ALLOC, sid, nbytes))

    def resident(self, model: torch.nn.Module, tensors: Iterable[torch.Tensor] = ()) -> None:
        """The model's parameters and buffers in the order ``model.to(device)`` moves them
        (``Module._apply``: each child first, then the module's own), then ``tensors``."""
        def visit(module: torch.nn.Module) -> None:
            for child in module.children():
                visit(child)
            for tensor in (*module._parameters.values(), *module._buffers.values()):
                if tensor is not None:
                    self.add(tensor)

        visit(model)
        for tensor in tensors:
            self.add(tensor)

    def mark_step(self) -> None:
        """The measured step begins here."""
        self.trace.step_start = len(self.trace.events)

    def close(self) -> Trace:
        self._open = False
        return self.trace

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        if func is _DEVICE or not self._open:
            return out
        if isinstance(out, torch.Tensor):
            self.add(out)
        elif isinstance(out, (tuple, list)):
            for leaf in tree_leaves(out):
                if isinstance(leaf, torch.Tensor):
                    self.add(leaf)
        return out
