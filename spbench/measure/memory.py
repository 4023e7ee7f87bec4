"""Peak memory of one steady-state training step: measured (CUDA or CPU) and predicted.

CPU: torch's ``MemTracker`` counts live tensor bytes by category on the real step.
Predicted CUDA peak: the same step on fake tensors (``FakeTensorMode``; no data, no GPU), with
what CUDA chooses differently emulated:

* attention: CUDA's SDPA runs the memory-efficient kernel (it keeps output + logsumexp for
  backward, not the L x L attention matrix); a boolean mask becomes a float bias padded to a
  multiple of 16 along its last dimension, as ``sdpa`` does before that kernel;
* AdamW: ``foreach=True`` (CUDA's default), whose per-group temporaries move the peak;
* every block is rounded up to 512 bytes, as the caching allocator does.

MemTracker pitfalls handled here: it hooks every parameter's grad (it would raise on frozen
ones), and it rejects a second root forward in one tracked step unless its module stats are
reset in between (``reset_between_forwards``, for MeZO).
"""

from __future__ import annotations

import contextlib
import gc
import math
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from torch.autograd.graph import register_multi_grad_hook as _register_multi_grad_hook
from torch.distributed._tools import mem_tracker as _mt
from torch.distributed._tools import mod_tracker as _mod_tracker
from torch.overrides import TorchFunctionMode

CUDA_BLOCK = 512  # CUDACachingAllocator's minimum / rounding unit
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


def tracked_peak(step: Callable[[], Any], *external: Any, tracker: Tracker | None = None) -> dict[str, int]:
    """Run ``step`` once under a Tracker that knows ``external`` (model, optimizer, batch
    tensors, created before it); return the peak and breakdown. ``tracker``: a fresh instance
    of a Tracker subclass to use instead (one that records more, e.g. the GPU diagnostic's)."""
    tracker = tracker if tracker is not None else Tracker()
    tracker.track_external(*external)
    _mod_tracker.register_multi_grad_hook = _acyclic_multi_grad_hook  # type: ignore[assignment]
    try:
        with no_gc(), tracker:
            step()
    finally:
        _mod_tracker.register_multi_grad_hook = _register_multi_grad_hook  # type: ignore[assignment]
    return tracker.peak()


# --- CUDA emulation ------------------------------------------------------------------------

class _RoundedInfo(_mt._WeakRefInfo):
    def _calculate_mem_consumed(self) -> int:
        mem = self.size * self.element_size
        return math.ceil(mem / CUDA_BLOCK) * CUDA_BLOCK


def _efficient_sdpa(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                    attn_mask: torch.Tensor | None = None, dropout_p: float = 0.0,
                    is_causal: bool = False, scale: float | None = None,
                    enable_gqa: bool = False) -> torch.Tensor:
    bias = attn_mask
    if bias is not None:
        if bias.dtype == torch.bool:  # sdpa's convert_boolean_attn_mask
            bias = torch.where(bias.logical_not(), float("-inf"), 0.0).to(query.dtype)
        # sdpa's preprocess_mask: pad when a stride is not a multiple of 16, then expand.
        if bias.stride(-1) != 1 or any(st % 16 for st in bias.stride()[:-1]):
            last = bias.shape[-1]
            bias = F.pad(bias, (0, 16 - last % 16))[..., :last]
        bias = bias.expand(query.shape[0], query.shape[1], query.shape[2], key.shape[2])
    need_lse = torch.is_grad_enabled() and any(t.requires_grad for t in (query, key, value))
    out = torch.ops.aten._scaled_dot_product_efficient_attention(
        query, key, value, bias, need_lse, dropout_p, is_causal, scale=scale
    )
    return out[0]


_TORCH_SDPA = F.scaled_dot_product_attention


class _CudaSdpa(TorchFunctionMode):
    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if func is _TORCH_SDPA:
            return _efficient_sdpa(*args, **(kwargs or {}))
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def cuda_emulation() -> Iterator[None]:
    """Within: SDPA takes CUDA's memory-efficient path and tracked blocks round to 512 B.

    Two routes to SDPA are replaced: the function mode catches every call in the forward, and
    ``F.scaled_dot_product_attention`` itself is swapped because the autograd engine runs
    activation-checkpointing recomputation without the caller's function modes (dispatch
    modes, the tracker among them, do stay active there). Without the swap a recomputed layer
    took the CPU kernel, saved other tensors than its forward and checkpointing raised.
    """
    original = _mt._WeakRefInfo
    _mt._WeakRefInfo = _RoundedInfo  # type: ignore[misc]
    F.scaled_dot_product_attention = _efficient_sdpa  # type: ignore[assignment]
    try:
        with _CudaSdpa():
            yield
    finally:
        _mt._WeakRefInfo = original  # type: ignore[misc]
        F.scaled_dot_product_attention = _TORCH_SDPA  # type: ignore[assignment]


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
