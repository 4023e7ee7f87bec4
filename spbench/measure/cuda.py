"""CUDA's choices, emulated on fake CPU tensors: what the predicted CUDA peak runs under.

The prediction's step runs on fake *CPU* tensors, where several ops take CPU's path and save
other tensors for backward than they would on a GPU. Within ``cuda_emulation()``:

* attention: SDPA runs the memory-efficient kernel (it keeps output + logsumexp for backward,
  not the L x L attention matrix); a boolean mask becomes a float bias padded to a multiple
  of 16 along its last dimension, as ``sdpa`` does before that kernel;
* dropout (training, 0 < p < 1): ``aten::dropout`` takes the fused ``native_dropout``, which
  saves a bool mask for backward; CPU's composite path saves a noise tensor of the input's
  dtype (4x the bytes in float32). This is decided inside ``aten::dropout`` by the input's
  device, so the override sits at that op, under every caller (``nn.Dropout``, peft's LoRA
  dropout, ``F.dropout``, a checkpointed layer's recomputation);
* every block is rounded up to 512 bytes, as the caching allocator does.

AdamW's ``foreach=True`` (CUDA's default) is chosen where the optimizer is made
(``predict.fake_step``). The real CPU step never runs under this context.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch.distributed._tools import mem_tracker as _mt
from torch.overrides import TorchFunctionMode

CUDA_BLOCK = 512  # CUDACachingAllocator's minimum / rounding unit
FEATURES = ("dropout",)  # what ``cuda_emulation(skip=...)`` may leave at CPU's behaviour


class _RoundedInfo(_mt._WeakRefInfo):
    def _calculate_mem_consumed(self) -> int:
        mem = self.size * self.element_size
        return math.ceil(mem / CUDA_BLOCK) * CUDA_BLOCK


# --- attention ------------------------------------------------------------------------------

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
def _sdpa() -> Iterator[None]:
    """Two routes to SDPA are replaced: the function mode catches every call in the forward,
    and ``F.scaled_dot_product_attention`` itself is swapped because the autograd engine runs
    activation-checkpointing recomputation without the caller's function modes (dispatch
    modes, the tracker among them, do stay active there). Without the swap a recomputed layer
    took the CPU kernel, saved other tensors than its forward and checkpointing raised."""
    F.scaled_dot_product_attention = _efficient_sdpa  # type: ignore[assignment]
    try:
        with _CudaSdpa():
            yield
    finally:
        F.scaled_dot_product_attention = _TORCH_SDPA  # type: ignore[assignment]


# --- dropout --------------------------------------------------------------------------------

def _cuda_dropout(input: torch.Tensor, p: float, train: bool) -> torch.Tensor:
    """``aten::dropout`` as on a CUDA tensor (ATen's ``dropout``): the fused kernel where
    ``is_fused_kernel_acceptable`` allows it (0 < p < 1, not empty), else what the composite
    does on either device: the input itself in eval, at p = 0 or when empty; zeros at p = 1.
    (``OpOverload.decompose`` is not used for those: under fake tensors it returns a clone.)"""
    if not 0 <= p <= 1:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    if not train or p == 0 or input.numel() == 0:
        return input
    if p == 1:
        return input * torch.zeros((), dtype=input.dtype, device=input.device)
    return torch.ops.aten.native_dropout.default(input, p, train)[0]


@contextlib.contextmanager
def _dropout() -> Iterator[None]:
    """``aten::dropout`` is CompositeImplicitAutograd: it decomposes above every mode, so the
    CUDA choice is registered as its autograd kernel for CPU tensors (fake ones included),
    which takes precedence over the composite until the library is destroyed. Only
    ``aten::dropout`` uses the fused kernel on CUDA; ``dropout_`` (in place) does not."""
    lib = torch.library.Library("aten", "IMPL")
    try:
        lib.impl("dropout", _cuda_dropout, "AutogradCPU")
        yield
    finally:
        lib._destroy()


@contextlib.contextmanager
def cuda_emulation(skip: tuple[str, ...] = ()) -> Iterator[None]:
    """Within: CUDA's SDPA kernel and dropout, and tracked blocks rounded to 512 B.

    ``skip``: features of ``FEATURES`` left at CPU's behaviour (to measure what each one
    moves, e.g. the prediction error with and without it).
    """
    unknown = set(skip) - set(FEATURES)
    if unknown:
        raise ValueError(f"unknown CUDA emulation features {sorted(unknown)}; choose from {FEATURES}")
    original = _mt._WeakRefInfo
    _mt._WeakRefInfo = _RoundedInfo  # type: ignore[misc]
    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(_sdpa())
            if "dropout" not in skip:
                stack.enter_context(_dropout())
            yield
    finally:
        _mt._WeakRefInfo = original  # type: ignore[misc]
