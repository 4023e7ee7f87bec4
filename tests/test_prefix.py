"""prefix: each self-attention attends to its P prefix keys/values, the mask covers them, and
padding still masks what it masks."""

from __future__ import annotations

import math

import pytest
import torch

from spbench.case import Case, build


def _attention(built: object) -> torch.nn.Module:
    return next(m for m in built.model.modules() if type(m).__name__.endswith("SelfAttention"))


def test_prefix_attention_is_softmax_over_prefix_and_input() -> None:
    built = build(Case("prefix", "tiny-bert", 2, 8))
    attn = _attention(built).eval()
    x = torch.randn(2, 6, 32)
    with torch.no_grad():
        out = attn(x, attention_mask=None)[0]
        heads, hd = attn.num_attention_heads, attn.attention_head_size

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(t.shape[0], -1, heads, hd).transpose(1, 2)

        q = split(attn.query(x))
        k = torch.cat([split(attn.prefix.key.expand(2, -1, -1)), split(attn.key(x))], dim=2)
        v = torch.cat([split(attn.prefix.value.expand(2, -1, -1)), split(attn.value(x))], dim=2)
        probs = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd), dim=-1)
        expected = (probs @ v).transpose(1, 2).reshape(2, 6, -1)
    assert k.shape[2] == 5 + 6
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("backbone", ["tiny-bert", "tiny-roberta", "tiny-distilbert"])
def test_padding_stays_masked_and_prefix_matters(backbone: str) -> None:
    built = build(Case("prefix", backbone, 2, 8))
    model = built.model.eval()
    batch = {k: v.clone() for k, v in built.batch.items()}
    with torch.no_grad():
        base = built.objective.logits(model, batch)
        padded = batch["attention_mask"] == 0
        assert padded.any()
        batch["input_ids"][padded] = 7  # other tokens where the mask says "padding"
        torch.testing.assert_close(built.objective.logits(model, batch), base)
        for attn in (m for m in model.modules() if hasattr(m, "prefix")):
            attn.prefix.value.add_(1.0)
        assert not torch.allclose(built.objective.logits(model, batch), base)


def test_real_init_differs_from_random_and_is_deterministic() -> None:
    real1 = build(Case("prefix", "tiny-roberta", 2, 8))
    real2 = build(Case("prefix", "tiny-roberta", 2, 8))
    rand = build(Case("prefix", "tiny-roberta", 2, 8, overrides=(("init", "random"),)))
    a, b, c = (_attention(x).prefix.key for x in (real1, real2, rand))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    assert a.shape == (5, 32)
