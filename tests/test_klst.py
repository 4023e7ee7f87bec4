"""k-LST's attention fusion as the team's code has it (matoototo/k-LST ``code/adapters.py``):
cross-attention from the side state over all k*S window positions, one shared block position
embedding on keys and values, no gate, whole-member window dropout drawn once per batch, zero
members beyond the ends, and what k=1 means."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import nn

from spbench import backbones, methods
from spbench.data import synthetic_batch
from spbench.methods._ladder import LadderSideModel


def _model(**hp: Any) -> LadderSideModel:
    return methods.get("klst")(**hp).prepare(backbones.load("tiny-bert"))


def _batch(b: int = 3, s: int = 10) -> dict[str, torch.Tensor]:
    return synthetic_batch(backbones.load("tiny-bert").config, b, s, seed=0)


def _run(model: LadderSideModel, batch: dict[str, torch.Tensor]) -> dict[str, list[Any]]:
    """Forward once; record each side layer's input and each MHA call's key/value tensor."""
    seen: dict[str, list[Any]] = {"side_in": [], "kv": []}
    handles = [layer.register_forward_pre_hook(lambda mod, args: seen["side_in"].append(args[0]))
               for layer in model.side_layers]
    handles += [attn.register_forward_hook(lambda mod, args, out: seen["kv"].append(args[1]))
                for attn in model.fusion.attn]
    with torch.no_grad():
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    for h in handles:
        h.remove()
    return seen


def _feats(model: LadderSideModel, batch: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    states = model.backbone_states(batch["input_ids"], batch["attention_mask"])
    with torch.no_grad():
        return [model.downsample("emb", states[0])] + [model.downsample(str(l), h) for l, h in enumerate(states[1:])]


def _cross_attention(attn: nn.MultiheadAttention, q: torch.Tensor, kv: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
    """One-head attention written out: softmax(q Wq (kv Wk)^T / sqrt(D), padded keys masked) kv Wv, Wo."""
    wq, wk, wv = attn.in_proj_weight.chunk(3)
    bq, bk, bv = attn.in_proj_bias.chunk(3)
    scores = (q @ wq.T + bq) @ (kv @ wk.T + bk).transpose(1, 2) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(pad[:, None, :], float("-inf"))
    return attn.out_proj(scores.softmax(-1) @ (kv @ wv.T + bv))


def test_defaults_are_the_teams_9_lst() -> None:
    klst = methods.get("klst")()
    # configs/9-lst.yaml and their report: k=9, dropout 0.2, r=8, AdamW lr 2e-4, weight decay 0.01
    assert (klst.k, klst.fusion, klst.window_dropout, klst.r, klst.lr, klst.weight_decay) == \
        (9, "attention", 0.2, 8, 2e-4, 0.01)
    assert methods.get("lst")().lr == 3e-3  # the LST paper's scripts (T5-base, BART encoder SST-2)


def test_one_head_attention_per_side_layer_one_shared_block_embedding_no_gate() -> None:
    model = _model(k=3)
    width = model.side_layers[0].query.in_features
    assert model.gates is None and not any("gate" in n for n, _ in model.named_parameters())
    assert len(model.fusion.attn) == len(model.side_layers) == 2
    for attn in model.fusion.attn:
        assert isinstance(attn, nn.MultiheadAttention) and attn.num_heads == 1 and attn.batch_first
        assert attn.in_proj_weight.shape == (3 * width, width)  # q, k and v projections
        assert attn.out_proj.weight.shape == (width, width)
    embeddings = [m for m in model.modules() if isinstance(m, nn.Embedding) and not _in_backbone(model, m)]
    assert embeddings == [model.fusion.block_pos] and model.fusion.block_pos.weight.shape == (3, width)


def _in_backbone(model: LadderSideModel, module: nn.Module) -> bool:
    return any(module is m for m in model.backbone.modules())


@pytest.mark.parametrize("k", [1, 3, 5])
def test_side_state_attends_over_all_k_times_s_window_positions(k: int) -> None:
    model = _model(k=k).eval()
    batch = _batch()
    pad = batch["attention_mask"] == 0
    assert pad.any()
    seen = _run(model, batch)
    emb, *layers = _feats(model, batch)
    zero = torch.zeros_like(emb)
    queries = [emb, model.side_layers[0](seen["side_in"][0], batch["attention_mask"].bool()[:, None, None, :])]
    for i, centre in enumerate(model.layers):
        members = [layers[j] if 0 <= j < len(layers) else zero for j in range(centre - k // 2, centre + k // 2 + 1)]
        pos = model.fusion.block_pos.weight if k > 1 else torch.zeros(1, emb.shape[-1])
        kv = torch.cat([m + p for m, p in zip(members, pos)], dim=1)  # member-major, (B, k*S, D)
        assert seen["kv"][i].shape == (3, k * 10, emb.shape[-1])
        with torch.no_grad():
            expected = _cross_attention(model.fusion.attn[i], queries[i], kv, pad.repeat(1, k))
        # No gate, no residual: the fused output is the side layer's whole input.
        torch.testing.assert_close(seen["side_in"][i], expected)
        if k > 1:  # the block embedding is on the values too: on the keys only, the input differs
            with torch.no_grad():
                keys_only = _keys_only(model.fusion.attn[i], queries[i], members, pos, pad.repeat(1, k))
            assert not torch.allclose(seen["side_in"][i], keys_only, atol=1e-4)


def _keys_only(attn: nn.MultiheadAttention, q: torch.Tensor, members: list[torch.Tensor], pos: torch.Tensor,
               pad: torch.Tensor) -> torch.Tensor:
    wq, wk, wv = attn.in_proj_weight.chunk(3)
    bq, bk, bv = attn.in_proj_bias.chunk(3)
    keys = torch.cat([m + p for m, p in zip(members, pos)], dim=1)
    values = torch.cat(members, dim=1)
    scores = (q @ wq.T + bq) @ (keys @ wk.T + bk).transpose(1, 2) / math.sqrt(q.shape[-1])
    return attn.out_proj(scores.masked_fill(pad[:, None, :], float("-inf")).softmax(-1) @ (values @ wv.T + bv))


def test_k1_attends_over_its_own_layer_without_block_embedding_and_is_not_lst() -> None:
    model = _model(k=1, window_dropout=0.0)
    assert model.fusion.block_pos is None and model.gates is None
    assert sorted(model.down) == ["0", "1", "emb"]
    lst = methods.get("lst")().prepare(backbones.load("tiny-bert"))
    side = {k: v for k, v in lst.state_dict().items() if not k.startswith("backbone.")}
    missing, unexpected = model.load_state_dict(side, strict=False)
    assert unexpected == ["gates"] and all(k.startswith(("backbone.", "fusion.attn.")) for k in missing)
    batch = _batch()
    with torch.no_grad():
        out_k1, out_lst = (m.eval()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
                           for m in (model, lst))
    assert not torch.allclose(out_k1, out_lst)  # the team's k=1 is attention, not the paper's gated ladder


def test_window_beyond_the_ends_holds_zero_members() -> None:
    model = _model(k=5).eval()  # 2 backbone layers, window of 5: [0, 0, f0, f1, 0] and [0, f0, f1, 0, 0]
    with torch.no_grad():
        model.fusion.block_pos.weight.zero_()
    batch = _batch()
    _, f0, f1 = _feats(model, batch)
    kv = _run(model, batch)["kv"]
    zero = torch.zeros_like(f0)
    for got, layout in zip(kv, ([zero, zero, f0, f1, zero], [zero, f0, f1, zero, zero])):
        assert torch.equal(got, torch.cat(layout, dim=1))


def test_window_dropout_zeroes_whole_members_one_draw_per_batch_unscaled() -> None:
    model = _model(k=3, window_dropout=0.5).train()
    with torch.no_grad():
        model.fusion.block_pos.weight.zero_()
    batch = _batch(b=8)
    _, f0, f1 = _feats(model, batch)
    centre_dropped = kept = dropped = 0
    for seed in range(12):
        torch.manual_seed(seed)
        kv = _run(model, batch)["kv"]
        for got, real in zip(kv, ({1: f0, 2: f1}, {0: f0, 1: f1})):
            members = got.view(8, 3, 10, -1).unbind(1)
            for j, feat in real.items():
                # Each member is either itself, unscaled, for every example, or zero for every example.
                assert torch.equal(members[j], feat) or torch.equal(members[j], torch.zeros_like(feat))
                gone = not members[j].any()
                dropped, kept = dropped + gone, kept + (not gone)
                centre_dropped += gone and j == 1
    assert dropped and kept and centre_dropped  # the centre member can be dropped too
    kv = _run(model.eval(), batch)["kv"]
    assert torch.equal(kv[0], torch.cat([torch.zeros_like(f0), f0, f1], dim=1))  # no dropout in eval


def test_pool_all_window_is_every_layer_with_one_embedding_per_layer() -> None:
    model = _model(pool_all=True).eval()
    assert model.fusion.block_pos.weight.shape[0] == 2
    batch = _batch()
    _, f0, f1 = _feats(model, batch)
    pos = model.fusion.block_pos.weight
    expected = torch.cat([f0 + pos[0], f1 + pos[1]], dim=1)
    assert all(torch.allclose(kv, expected) for kv in _run(model, batch)["kv"])


def test_downsamplers_only_for_layers_a_window_holds() -> None:
    assert sorted(_model(k=1, layers=(1,)).down) == ["1", "emb"]
    assert sorted(_model(k=3, layers=(1,)).down) == ["0", "1", "emb"]


def test_a_window_deeper_than_the_backbone_says_how_much_is_padding() -> None:
    """k=9 on a 2-layer backbone: 14 of 18 window members are zeros; the result says so (and a
    warning). k=1 fills every window from real layers: no note."""
    import warnings

    from spbench.case import Case, build

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        deep = build(Case("klst", "tiny-bert", 2, 8))
    assert deep.notes["klst_padding"] == "k=9 exceeds the backbone's 2 layers: 14 of 18 window members are all-zero padding"
    assert any("klst_padding" not in str(w.message) and "14 of 18" in str(w.message) for w in caught)
    shallow = build(Case("klst", "tiny-bert", 2, 8, overrides=(("k", "1"),)))
    assert "klst_padding" not in shallow.notes
