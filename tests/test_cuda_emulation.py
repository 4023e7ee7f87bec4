"""CUDA's dropout in the prediction: a bool mask saved for backward, as ``native_dropout``.

On CPU tensors (fake ones included) ``aten::dropout`` saves a noise tensor of the input's dtype
for backward; on CUDA it runs the fused kernel, which saves a bool mask. The prediction must
take CUDA's path; the real CPU step must keep CPU's. Expected bytes are written out by hand.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from spbench import backbones
from spbench.case import Case, build
from spbench.measure.cuda import cuda_emulation
from spbench.measure.memory import fake_mode, tracked_peak
from spbench.measure.predict import fake_step

BLOCK = 512  # CUDA's caching allocator hands out 512-byte multiples (written out, not imported)
F32, BF16, BOOL = 4, 2, 1


def blocks(nbytes: int) -> int:
    return -(-nbytes // BLOCK) * BLOCK


def saved_tensors(grad_fn: Any) -> list[torch.Tensor]:
    return [getattr(grad_fn, n) for n in dir(grad_fn)
            if n.startswith("_saved_") and isinstance(getattr(grad_fn, n), torch.Tensor)]


def test_emulated_dropout_saves_a_bool_mask_and_cpu_keeps_its_noise() -> None:
    """Training dropout: CUDA's fused kernel under the emulation (bool mask saved), CPU's
    composite outside it (float noise saved), before and after an emulated step."""
    drop = torch.nn.Dropout(0.1).train()

    def real_cpu_saves() -> list[torch.dtype]:
        y = drop(torch.ones(4, 8, requires_grad=True))
        return [t.dtype for t in saved_tensors(y.grad_fn)]

    assert real_cpu_saves() == [torch.float32]
    with fake_mode(), cuda_emulation():
        x = torch.ones(4, 8, requires_grad=True)
        y = drop(x)
        assert type(y.grad_fn).__name__ == "NativeDropoutBackward0"
        assert [t.dtype for t in saved_tensors(y.grad_fn)] == [torch.bool]
        y.sum().backward()  # CUDA's backward: grad * mask * scale
        assert x.grad is not None and x.grad.shape == x.shape
        # Where CUDA does not fuse either, the composite's behaviour is kept.
        assert drop.eval()(x) is x and F.dropout(x, 0.0, True) is x
        drop.train()
    with fake_mode(), cuda_emulation(skip=("dropout",)):
        y = drop(torch.ones(4, 8, requires_grad=True))
        assert [t.dtype for t in saved_tensors(y.grad_fn)] == [torch.float32]
    assert real_cpu_saves() == [torch.float32]  # the override is gone with the context


def test_predicted_lora_forward_keeps_bool_masks(monkeypatch: Any) -> None:
    """tiny-bert LoRA (dropout 0.1), one training forward: with CUDA's dropout the live bytes
    after the forward drop by (4 bytes - 1 byte) per element of every dropout that saves for
    backward, in 512-byte blocks.

    Dropouts on [B, S, H] inputs: the embeddings', then per layer the attention output's, the
    FFN output's, and LoRA's on the inputs of query and value (two modules). The embeddings
    are frozen, so the embeddings' dropout and the first layer's two LoRA dropouts see inputs
    that need no gradient and save nothing: 4 L - 2 masks. One more on the pooled [B, H]
    before the classifier (a single block either way at this size). Attention probabilities
    are dropped inside SDPA's kernel, not by ``aten::dropout``.
    """
    c = backbones.resolve("tiny-bert").config()
    B, S, H, L = 4, 32, c.hidden_size, c.num_hidden_layers
    assert blocks(B * H * F32) == blocks(B * H * BOOL), "the pooled dropout must not move at this size"
    expected = (4 * L - 2) * (blocks(B * S * H * F32) - blocks(B * S * H * BOOL))
    big = 1 << 24  # elements; allocated after the forward, so the peak is the live set then

    def live_after_forward(skip: tuple[str, ...]) -> int:
        built = build(Case("lora", "tiny-bert", B, S, overrides=(("dropout", "0.1"),)), meta=True)
        kept: list[torch.Tensor] = []

        def forward() -> None:
            kept.append(built.objective.loss(built.model, built.batch))
            kept.append(torch.empty(big))

        with fake_step(built, skip=skip):
            return tracked_peak(forward, built.model, list(built.batch.values()))["peak_bytes"]

    assert live_after_forward(("dropout",)) - live_after_forward(()) == expected


def test_emulated_autocast_runs_cuda_float32_ops_in_float32() -> None:
    """Under a bfloat16 autocast, CUDA runs LayerNorm, softmax and sum in float32 (their
    outputs float32); CPU's autocast leaves them in the input's dtype. The emulation takes
    CUDA's policy; an explicit dtype is kept, matmuls stay bfloat16, and CPU's own policy is
    back once the context is left."""

    def dtypes() -> dict[str, torch.dtype]:
        x = torch.ones(4, 8)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            h = torch.nn.Linear(8, 8)(x)  # bfloat16 under either policy
            return {"linear": h.dtype, "layer_norm": torch.nn.LayerNorm(8)(h).dtype,
                    "softmax": h.softmax(-1).dtype, "sum": h.sum().dtype,
                    "sum(dtype=bf16)": h.sum(dtype=torch.bfloat16).dtype}

    bf16, f32 = torch.bfloat16, torch.float32
    cpu = {"linear": bf16, "layer_norm": bf16, "softmax": bf16, "sum": bf16, "sum(dtype=bf16)": bf16}
    assert dtypes() == cpu
    with fake_mode(), cuda_emulation():
        assert dtypes() == {"linear": bf16, "layer_norm": f32, "softmax": f32, "sum": f32, "sum(dtype=bf16)": bf16}
    with fake_mode(), cuda_emulation(skip=("autocast",)):
        assert dtypes() == cpu
    assert dtypes() == cpu


def test_emulated_autocast_layer_norm_keeps_float32_activations() -> None:
    """A trainable LayerNorm on a bfloat16 tensor x [N, H], CUDA's autocast: x is cast to a
    new float32 [N, H] tensor (saved for backward) and the output is float32 [N, H]. CPU's
    autocast saves x itself and outputs bfloat16 [N, H]. Mean and rstd ([N, 1]) are one
    block under both."""
    N, H = 64, 96
    big = 1 << 22  # elements, allocated last so the peak is the live set after the forward

    def live_after_forward(skip: tuple[str, ...]) -> int:
        with fake_mode(), cuda_emulation(skip=skip):
            x = torch.ones(N, H, dtype=torch.bfloat16)
            norm = torch.nn.LayerNorm(H)
            kept: list[torch.Tensor] = []

            def forward() -> None:
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    kept.append(norm(x))
                kept.append(torch.empty(big))

            return tracked_peak(forward, norm, x)["peak_bytes"]

    cuda = 2 * blocks(N * H * F32)  # the float32 copy of x, the float32 output
    cpu = blocks(N * H * BF16)  # the bfloat16 output
    assert live_after_forward(()) - live_after_forward(("autocast",)) == cuda - cpu
