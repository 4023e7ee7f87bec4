"""Predicted figures pinned to hand counts: what each number means is fixed here.

Every expected value below is derived from the backbone's config by arithmetic written out in
the test (BERT's parameter shapes, the 512-byte blocks of CUDA's caching allocator, AdamW's
state, the matmuls of a forward and a backward), never copied from a run and never computed
by spbench itself. A change to the measuring code that moves one of them changes what a
number means: bump ``SCHEMA_VERSION`` (spbench/result.py), regenerate the CI baseline, and
update the derivation here with the reason.

full_ft on tiny-bert is pinned because it will not change with the methods (a new method, or
new adapters in an existing one, leave it alone); the inference floor is pinned for every
registered method, since it is measured on the untouched backbone.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from spbench import backbones, methods
from spbench.case import Case
from spbench.measure.cuda import cuda_emulation
from spbench.measure.memory import fake_mode, tracked_peak
from spbench.measure.predict import predict

BLOCK = 512  # CUDA's caching allocator hands out 512-byte multiples (written out, not imported)
F32, I64, BOOL = 4, 8, 1  # bytes per element
B, S = 3, 5  # a shape at which no activation is a whole number of blocks: rounding shows


def blocks(nbytes: int) -> int:
    """Bytes the CUDA allocator reserves for one tensor of ``nbytes``."""
    return -(-nbytes // BLOCK) * BLOCK


def numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


@pytest.fixture(scope="module")
def cfg() -> Any:
    config = backbones.resolve("tiny-bert").config()
    config.num_labels = 2  # backbones.load's default, what every case uses
    return config


def bert_parameters(c: Any) -> list[tuple[int, ...]]:
    """Shapes of BertForSequenceClassification's parameters, in the order BERT defines them."""
    H, I = c.hidden_size, c.intermediate_size
    embeddings = [(c.vocab_size, H), (c.max_position_embeddings, H), (c.type_vocab_size, H), (H,), (H,)]
    attention = [(H, H), (H,)] * 4 + [(H,), (H,)]  # query, key, value, output dense; LayerNorm
    ffn = [(I, H), (I,), (H, I), (H,), (H,), (H,)]  # intermediate, output dense; LayerNorm
    head = [(H, H), (H,), (c.num_labels, H), (c.num_labels,)]  # pooler, classifier
    return embeddings + (attention + ffn) * c.num_hidden_layers + head


def bert_buffers(c: Any) -> list[int]:
    """Bytes of BERT's buffers: position_ids and token_type_ids, each int64 [1, max positions]."""
    return [c.max_position_embeddings * I64] * 2


def batch_bytes() -> int:
    """input_ids and attention_mask (int64 [B, S]) and labels (int64 [B]), each its own block."""
    return 2 * blocks(B * S * I64) + blocks(B * I64)


def param_bytes(c: Any) -> int:
    return sum(blocks(numel(s) * F32) for s in bert_parameters(c))


def test_cuda_emulation_constants() -> None:
    """The allocator's 512-byte rounding and sdpa's mask padding to a multiple of 16, checked
    on single tensors against numbers written out by hand."""

    def alloc(n: int) -> None:
        kept.append(torch.empty(n))

    kept: list[Any] = []
    assert tracked_peak(lambda: alloc(129))["peak_bytes"] == 516  # 129 float32, as they are
    with fake_mode(), cuda_emulation():
        assert tracked_peak(lambda: alloc(1))["peak_bytes"] == 512  # one block at least
        assert tracked_peak(lambda: alloc(128))["peak_bytes"] == 512  # exactly one block
        assert tracked_peak(lambda: alloc(129))["peak_bytes"] == 1024  # 516 bytes: two blocks

    calls: list[tuple[Any, ...]] = []

    class Spy(TorchDispatchMode):
        def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            if func is torch.ops.aten._scaled_dot_product_efficient_attention.default:
                calls.append(args)
            return func(*args, **(kwargs or {}))

    seq = 20
    with fake_mode(), cuda_emulation(), Spy():
        q, k, v = (torch.empty(2, 3, seq, 8, requires_grad=True) for _ in range(3))
        mask = torch.ones(2, 1, seq, seq, dtype=torch.bool)
        F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        with torch.no_grad():
            F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert len(calls) == 2  # CUDA's memory-efficient kernel, not the math path
    bias = calls[0][3]
    assert bias.dtype == torch.float32 and tuple(bias.shape) == (2, 3, seq, seq)
    assert bias.stride(-2) == 32  # rows padded from 20 to the next multiple of 16
    assert calls[0][4] is True and calls[1][4] is False  # logsumexp kept only for backward


def test_full_ft_tiny_bert_predicted_figures_are_pinned(cfg: Any) -> None:
    """full_ft, tiny-bert, batch 3 x seq 5, CUDA emulated: every figure by hand.

    At this size the peak is inside foreach AdamW's step, after backward: weights, gradients,
    both moments, one step counter per tensor, and foreach's ``sqrt(exp_avg_sq)`` list (one
    temporary per parameter) are live; of the forward, only the batch and the loss are.
    """
    c = cfg
    shapes = bert_parameters(c)
    H, I, L, T = c.hidden_size, c.intermediate_size, c.num_hidden_layers, B * S
    params = param_bytes(c)
    expected = {
        "params_total": sum(map(numel, shapes)),
        "params_trainable": sum(map(numel, shapes)),
        "params_with_grad": sum(map(numel, shapes)),
        # Backward multiplies by every Linear's matrix (input gradients) and hands each
        # LayerNorm its weight and bias; embedding tables get an index scatter, nothing read.
        "params_backward_read": L * (4 * H * H + 2 * H * I) + H * H + c.num_labels * H
                                + (2 * L + 1) * 2 * H,
        "mem_params_bytes": params + sum(blocks(b) for b in bert_buffers(c)),
        "mem_grads_bytes": params,
        # exp_avg + exp_avg_sq + foreach's sqrt(exp_avg_sq), and a float32 step per tensor
        "mem_optimizer_bytes": 3 * params + len(shapes) * blocks(F32),
        "mem_activations_bytes": batch_bytes() + blocks(F32),  # the batch and the scalar loss
        "mem_temp_bytes": 0,
        # Linear: 2 * tokens * in * out. Attention: QK^T and PV, 2 * 2 * B * S * S * H.
        "flops_forward": L * (4 * 2 * T * H * H + 2 * 2 * T * H * I + 4 * B * S * S * H)
                         + 2 * B * H * H + 2 * B * H * c.num_labels,
        # Every Linear twice again (input and weight gradients); the memory-efficient
        # attention backward recomputes QK^T and runs four more such matmuls: 5 x 2 * B*S*S*H.
        "flops_backward": 2 * (L * (4 * 2 * T * H * H + 2 * 2 * T * H * I)
                               + 2 * B * H * H + 2 * B * H * c.num_labels)
                          + L * 10 * B * S * S * H,
    }
    expected["predicted_cuda_peak_bytes"] = sum(expected[k] for k in (
        "mem_params_bytes", "mem_grads_bytes", "mem_optimizer_bytes", "mem_activations_bytes", "mem_temp_bytes"))
    expected["predicted_inference_peak_bytes"] = inference_floor(c)
    got, _ = predict(Case("full_ft", "tiny-bert", B, S))
    assert {k: got[k] for k in expected} == expected, \
        "a predicted figure changed meaning: bump SCHEMA_VERSION and fix the derivation here"


def inference_floor(c: Any) -> int:
    """No-grad eval forward of tiny-bert (2 layers), CUDA emulated, by hand.

    The peak is the last layer's output LayerNorm. Live then, besides weights, buffers and
    the batch: BERT's boolean attention mask [B, 1, S, S]; the embedding output (held by
    BertModel while the encoder runs); the last layer's input (the previous layer's output);
    its attention output (the residual); the FFN's GELU output [B, S, I]; the output dense's
    result, the residual sum and the LayerNorm's output [B, S, H] each; the LayerNorm's mean
    and rstd [B, S, 1].
    """
    assert c.num_hidden_layers == 2, "the live set below assumes two layers"
    H, I = c.hidden_size, c.intermediate_size
    hidden = blocks(B * S * H * F32)
    live = (blocks(B * S * S * BOOL) + 6 * hidden + blocks(B * S * I * F32) + 2 * blocks(B * S * F32))
    return param_bytes(c) + sum(blocks(b) for b in bert_buffers(c)) + batch_bytes() + live


@pytest.mark.parametrize("method", methods.names())
def test_inference_floor_is_the_untouched_backbones(method: str, cfg: Any) -> None:
    """The floor is a no-grad forward of the backbone as loaded: the same for every method
    (adapters, side networks or frozen flags must not move it), and equal to the hand count."""
    floor = inference_floor(cfg)
    got, _ = predict(Case(method, "tiny-bert", B, S))
    assert got["predicted_inference_peak_bytes"] == floor, f"{method}: not the backbone's floor"
