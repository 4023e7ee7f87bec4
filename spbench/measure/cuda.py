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
* autocast (a half dtype): CUDA's op policy where it differs from CPU's. CUDA runs norms,
  softmax, sums, exp/log/pow and most losses in float32 (a LayerNorm of a half input keeps
  a float32 copy of it for backward and outputs float32); CPU's autocast leaves them in the
  input's dtype. It moves half-precision paths such as LST's side network; a BERT layer's
  residual stream is float32 under both (it starts from the float32 embeddings). CUDA's
  policy is registered as CPU's autocast kernel of the ops of CUDA's float32 lists that CPU
  has no policy for (``_AUTOCAST_FP32``);
* every block is rounded up to 512 bytes, as the caching allocator does.

AdamW's ``foreach=True`` (CUDA's default) is chosen where the optimizer is made
(``predict.fake_step``). The real CPU step never runs under this context; the dropout and
autocast kernels are dispatcher registrations, process-wide while it is active, so no real
CPU step may run in another thread meanwhile (spbench runs cases one at a time per process).
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
from torch.utils._pytree import tree_map

CUDA_BLOCK = 512  # CUDACachingAllocator's minimum / rounding unit
FEATURES = ("dropout", "autocast")  # what ``cuda_emulation(skip=...)`` may leave at CPU's behaviour


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


# --- autocast --------------------------------------------------------------------------------

# CUDA's autocast lists (ATen's autocast_mode.h: AT_FORALL_FP32, AT_FORALL_FP32_SET_OPT_DTYPE).
# Only those without a CPU autocast kernel are emulated (``_autocast`` checks): CPU already
# runs e.g. nll_loss, prod, cdist in float32. Not emulated, as they move no peak here: CPU's
# own float32 entries that CUDA lacks (cross_entropy_loss: CUDA's log_softmax and nll_loss
# are float32 too), and CUDA's half-precision entries that CPU lacks (einsum, mv, addmv,
# addr, chain_matmul: CPU's autocast casts the matmuls they decompose into).
_AUTOCAST_FP32 = (
    "acos", "asin", "cosh", "erfinv", "exp", "expm1", "log", "log10", "log2", "log1p", "reciprocal",
    "rsqrt", "sinh", "tan", "pow.Tensor_Scalar", "pow.Tensor_Tensor", "pow.Scalar", "softplus",
    "layer_norm", "native_layer_norm", "group_norm", "frobenius_norm.dim", "nuclear_norm",
    "nuclear_norm.dim", "cosine_similarity", "poisson_nll_loss", "cosine_embedding_loss", "nll_loss",
    "nll_loss2d", "hinge_embedding_loss", "kl_div", "l1_loss", "smooth_l1_loss", "huber_loss",
    "mse_loss", "margin_ranking_loss", "multilabel_margin_loss", "soft_margin_loss",
    "triplet_margin_loss", "multi_margin_loss", "binary_cross_entropy_with_logits", "dist", "pdist",
    "cdist", "renorm", "logsumexp",
)
_AUTOCAST_FP32_SET_OPT_DTYPE = (
    "prod", "prod.dim_int", "softmax.int", "log_softmax.int", "cumprod", "cumsum",
    "linalg_vector_norm", "linalg_matrix_norm", "linalg_matrix_norm.str_ord", "sum", "sum.dim_IntList",
)
_NO_AUTOCAST = torch._C.DispatchKeySet(torch._C.DispatchKey.AutocastCPU)


def _op(name: str) -> Any:
    packet, _, overload = name.partition(".")
    return getattr(getattr(torch.ops.aten, packet), overload or "default")


def _eligible(arg: Any) -> bool:
    """Autocast's ``is_eligible``: a floating tensor of the autocast device, not double."""
    return isinstance(arg, torch.Tensor) and arg.is_floating_point() and arg.dtype != torch.float64


def _fp32(op: Any) -> Any:
    """CUDA's ``fp32`` policy: every eligible tensor argument cast to float32, then the op."""
    def kernel(*args: Any, **kwargs: Any) -> Any:
        with torch._C._ExcludeDispatchKeyGuard(_NO_AUTOCAST):
            args, kwargs = tree_map(lambda a: a.float() if _eligible(a) else a, (args, kwargs))
            return op(*args, **kwargs)
    return kernel


def _fp32_set_opt_dtype(op: Any) -> Any:
    """CUDA's ``fp32_set_opt_dtype`` policy: an eligible first argument runs with
    ``dtype=float32`` unless a dtype is given (the output is float32)."""
    index = [a.name for a in op._schema.arguments].index("dtype")

    def kernel(*args: Any, **kwargs: Any) -> Any:
        with torch._C._ExcludeDispatchKeyGuard(_NO_AUTOCAST):
            if args and _eligible(args[0]):
                if len(args) > index:
                    if args[index] is None:
                        args = (*args[:index], torch.float32, *args[index + 1:])
                elif kwargs.get("dtype") is None:
                    kwargs = {**kwargs, "dtype": torch.float32}
            return op(*args, **kwargs)
    return kernel


@contextlib.contextmanager
def _autocast() -> Iterator[None]:
    """CUDA's policy for the ops above, registered as CPU's autocast kernels (used only while
    an autocast to a CPU half type is on, i.e. in the forward of a half-dtype case)."""
    lib = torch.library.Library("aten", "IMPL")
    try:
        for names, policy in ((_AUTOCAST_FP32, _fp32), (_AUTOCAST_FP32_SET_OPT_DTYPE, _fp32_set_opt_dtype)):
            for name in names:
                if not torch._C._dispatch_has_kernel_for_dispatch_key(f"aten::{name}", "AutocastCPU"):
                    lib.impl(name, policy(_op(name)), "AutocastCPU")
        yield
    finally:
        lib._destroy()


@contextlib.contextmanager
def cuda_emulation(skip: tuple[str, ...] = ()) -> Iterator[None]:
    """Within: CUDA's SDPA kernel, dropout and autocast policy, and tracked blocks rounded to 512 B.

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
            if "autocast" not in skip:
                stack.enter_context(_autocast())
            yield
    finally:
        _mt._WeakRefInfo = original  # type: ignore[misc]
