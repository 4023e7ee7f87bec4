"""Peak memory of one steady-state training step: measured (CUDA or CPU) and predicted.

CPU: torch's ``MemTracker`` counts live tensor bytes by category on the real step.
Predicted CUDA peak: the same step on fake tensors (``FakeTensorMode``; no data, no GPU), with
what CUDA chooses differently emulated (``spbench.measure.cuda``).

MemTracker pitfalls handled here: it hooks every parameter's grad (it would raise on frozen
ones), and it rejects a second root forward in one tracked step unless its module stats are
reset in between (``reset_between_forwards``, for MeZO).
"""

from __future__ import annotations

import contextlib
import gc
from typing import Any, Callable, Iterator

import torch
from torch.autograd.graph import register_multi_grad_hook as _register_multi_grad_hook
from torch.distributed._tools import mem_tracker as _mt
from torch.distributed._tools import mod_tracker as _mod_tracker

_DEVICE = torch.ops.prim.device.default

BREAKDOWN = {
    "mem_params_bytes": ("Parameter", "Buffer"),
    "mem_grads_bytes": ("Gradient",),
    "mem_optimizer_bytes": ("Optstate",),
    "mem_activations_bytes": ("Activation", "Other"),  # "Other": the input batch
    "mem_temp_bytes": ("Temp",),
}


class _NoHook:
    def remove(self) -> None:
        pass


class Tracker(_mt.MemTracker):
    """MemTracker that leaves frozen parameters alone (no grad hook can go on them)."""

    def _track_module_params_and_buffers(self, module: torch.nn.Module,
                                         install_grad_hooks: bool = True) -> tuple[int, int]:
        for param in module.parameters():
            if not param.requires_grad and self._param_to_grad_hook_handles.get(param) is None:
                self._param_to_grad_hook_handles[param] = (_NoHook(), _NoHook())
        return super()._track_module_params_and_buffers(module, install_grad_hooks)

    def _pre_fw_hook(self, module: torch.nn.Module, inputs: Any) -> None:
        # A second root forward in one step (MeZO's two losses) is legal here: start the
        # per-module stats afresh; the global peak is kept.
        if module in self.memory_tracking and not self._mod_tracker.is_bw:
            name = self._mod_tracker.get_known_fqn(module)
            if set(self._mod_tracker.parents) - {name} == {"Global"}:
                self.reset_mod_stats()
        super()._pre_fw_hook(module, inputs)

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        # Fake tensors answer C++'s device queries through Python (prim.device: most of the
        # ops a fake step dispatches). They allocate nothing, so MemTracker's per-op
        # bookkeeping reduces to its peak update.
        if func is _DEVICE:
            out = func(*args, **(kwargs or {}))
            self._update_peak_stats(None)
            return out
        return super().__torch_dispatch__(func, types, args, kwargs)

    def _update_peak_stats(self, peak_state: Any) -> None:
        # Only the global peak is reported. MemTracker also keeps each active module's local
        # peak, a walk over every tracked module after every op: most of a large model's
        # prediction time (roberta-large: ~600 modules x ~30,000 ops). The global update is
        # MemTracker's own.
        for dev, dev_snap in self._curr_mem_snap.items():
            if self._peak_mem.get(dev, 0) < dev_snap[_mt._TOTAL_KEY]:
                self._peak_mem[dev] = dev_snap[_mt._TOTAL_KEY]
                self._peak_mem_snap[dev] = dict(dev_snap)

    def peak(self) -> dict[str, int]:
        """Peak total and its breakdown (DESIGN.md's ``mem_*`` keys) over all devices."""
        snap = self.get_tracker_snapshot("peak")
        total = 0
        out = {key: 0 for key in BREAKDOWN}
        for dev_snap in snap.values():
            total += int(dev_snap.get("Total", 0))
            for key, kinds in BREAKDOWN.items():
                out[key] += sum(int(v) for k, v in dev_snap.items() if getattr(k, "value", k) in kinds)
        out["peak_bytes"] = total
        return out


@contextlib.contextmanager
def no_gc() -> Iterator[None]:
    """Collect, then keep the cyclic garbage collector off: tensors caught in reference
    cycles are then freed at the same point on every run, not whenever gc happens to run
    (seen: side_lora's tracked peak moved by ~3% between runs with gc on)."""
    gc.collect()
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@contextlib.contextmanager
def frozen_gc() -> Iterator[None]:
    """Move every object alive now out of the cyclic collector's reach (``gc.freeze``) until
    the end, so that ``no_gc``'s collections walk only what was created since. For a
    prediction that is its fake tensors and graphs, instead of everything the imports and the
    build left (about 400,000 objects for roberta-large: ~0.4 s per full collection). Nothing
    alive before is tracked, so no tracked tensor is kept from being freed."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _acyclic_multi_grad_hook(tensors: Any, fn: Any, *, mode: str = "all") -> Any:
    # torch's "all" mode keeps the tensors' grad_fns in the hook's closure, which is stored on
    # those grad_fns: a reference cycle that keeps a dead forward graph (and its saved
    # activations) alive until the cyclic gc runs. Untracked steps have no such cycle, so the
    # tracker must not add one: side_lora's tracked peak was 552 MiB with it, 395 MiB measured
    # on an H100 without it. "any" mode holds no graph node; only ModTracker's per-module
    # backward bookkeeping (which we do not report) moves, not the global peak.
    return _register_multi_grad_hook(tensors, fn, mode="any")


@contextlib.contextmanager
def acyclic_grad_hooks() -> Iterator[None]:
    """Module trackers' backward hooks without the reference cycle (``_acyclic_multi_grad_hook``):
    MemTracker's, and ``torch.utils.module_tracker``'s that ``FlopCounterMode`` uses on the
    prediction's warm-up step. With the cycle, that step's dead graphs stayed alive until the
    cyclic gc ran: its allocation trace held ~100 MiB that a real warm-up frees at once
    (side_lora on distilbert-base), which the reserved bytes of the whole run would keep."""
    import torch.utils.module_tracker as _utils_mod_tracker

    saved = (_mod_tracker.register_multi_grad_hook, _utils_mod_tracker.register_multi_grad_hook)
    _mod_tracker.register_multi_grad_hook = _acyclic_multi_grad_hook  # type: ignore[assignment]
    _utils_mod_tracker.register_multi_grad_hook = _acyclic_multi_grad_hook  # type: ignore[assignment]
    try:
        yield
    finally:
        _mod_tracker.register_multi_grad_hook, _utils_mod_tracker.register_multi_grad_hook = saved


def tracked_peak(step: Callable[[], Any], *external: Any, tracker: Tracker | None = None) -> dict[str, int]:
    """Run ``step`` once under a Tracker that knows ``external`` (model, optimizer, batch
    tensors, created before it); return the peak and breakdown. ``tracker``: a fresh instance
    of a Tracker subclass to use instead (one that records more, e.g. the GPU diagnostic's)."""
    tracker = tracker if tracker is not None else Tracker()
    tracker.track_external(*external)
    with acyclic_grad_hooks(), no_gc(), tracker:
        step()
    return tracker.peak()


# --- fake tensors --------------------------------------------------------------------------

def fake_mode() -> Any:
    from torch._subclasses.fake_tensor import FakeTensorMode

    return FakeTensorMode(allow_non_fake_inputs=False)


def to_fake(tensor: torch.Tensor, mode: Any) -> torch.Tensor:
    """A fake CPU tensor of ``tensor``'s shape, strides, dtype and storage size. A meta
    tensor (a model built on the meta device: no data) is wrapped as it is, so views of one
    meta storage stay views of one fake storage, as ``from_tensor`` keeps real ones."""
    if tensor.is_meta:
        return mode.fake_tensor_converter.from_meta_and_device(mode, tensor, torch.device("cpu"))
    return mode.from_tensor(tensor)


def fakeify(model: torch.nn.Module, mode: Any) -> None:
    """Swap every parameter and buffer of ``model`` (real, or on the meta device) for a fake
    CPU copy, in place (ties kept).

    peft cannot wrap a model inside FakeTensorMode, so models are built (on the meta device
    for the prediction, which needs no values) and swapped.
    """
    memo: dict[int, torch.Tensor] = {}
    for module in model.modules():
        for name, param in list(module._parameters.items()):
            if param is None:
                continue
            if id(param) not in memo:
                memo[id(param)] = torch.nn.Parameter(to_fake(param.detach(), mode),
                                                     requires_grad=param.requires_grad)
            module._parameters[name] = memo[id(param)]
        for name, buf in list(module._buffers.items()):
            if buf is None:
                continue
            if id(buf) not in memo:
                memo[id(buf)] = to_fake(buf, mode)
            module._buffers[name] = memo[id(buf)]
