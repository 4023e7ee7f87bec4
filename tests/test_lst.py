"""LST and k-LST on tiny models: what backward touches, gates, layer dropping, the position
fusion (k=1 == LST, window padding, dropout), pruned init, the padding mask, a real training
step. The team's attention fusion has its own tests in test_klst.py."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from spbench import anatomy, backbones, methods
from spbench.case import Case, build
from spbench.measure.step import ChainHooks, step_fn
from spbench.measure.params import BackwardReadHooks
from spbench.methods._fusion import WindowFusion
from spbench.methods._ladder import LadderSideModel, prune_plan, side_layer_indices

TINY = ["tiny-bert", "tiny-roberta", "tiny-distilbert"]


def _model(method: str, backbone: str = "tiny-bert", head: str = "classification", **hp: Any) -> LadderSideModel:
    bb = backbones.load(backbone, head=head)
    return methods.get(method)(**hp).prepare(bb)


def _batch(backbone: str = "tiny-bert", b: int = 3, s: int = 10, seed: int = 0) -> dict[str, torch.Tensor]:
    bb = backbones.load(backbone)
    from spbench.data import synthetic_batch

    return synthetic_batch(bb.config, b, s, seed=seed)


def _logits(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def _backbone_params(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if n.startswith("backbone.")}


@pytest.mark.parametrize("backbone", TINY)
@pytest.mark.parametrize("method,overrides", [
    ("lst", ()), ("lst", (("drop_every", "2"),)), ("klst", ()), ("klst", (("fusion", "position"), ("k", "3"))),
    ("klst", (("pool_all", "true"), ("window_dropout", "0.2"))),
    ("klst", (("fusion", "position"), ("pool_all", "true"), ("window_dropout", "0.2")))])
def test_backward_never_touches_the_backbone(backbone: str, method: str, overrides: tuple) -> None:
    built = build(Case(method, backbone, 2, 8, overrides=overrides))
    optimizer = built.method.make_optimizer(built.model)
    hooks = BackwardReadHooks(built.model)
    step_fn(built, optimizer, ChainHooks(hooks))()
    frozen = _backbone_params(built.model)
    assert frozen and not any(p.requires_grad or p.grad is not None for p in frozen.values())
    assert hooks.reads.read  # the side network's weights are read ...
    assert not [n for n in hooks.reads.read if n.startswith("backbone.")]  # ... no backbone weight is
    trainable = sum(p.numel() for p in built.model.parameters() if p.requires_grad)
    assert hooks.with_grad == trainable  # and the gradient reaches every side parameter


def test_unfreezing_last_layer_lets_backward_into_it_only() -> None:
    built = build(Case("lst", "tiny-bert", 2, 8, overrides=(("unfreeze_last", "1"),)))
    hooks = BackwardReadHooks(built.model)
    step_fn(built, built.method.make_optimizer(built.model), ChainHooks(hooks))()
    read = [n for n in hooks.reads.read if n.startswith("backbone.")]
    assert read and all(".encoder.layer.1." in n for n in read)
    assert built.model.backbone.bert.encoder.layer[1].training  # unfrozen: dropout on
    assert not built.model.backbone.bert.encoder.layer[0].training  # frozen: always eval


@pytest.mark.parametrize("method,hp", [("lst", {}), ("klst", {"fusion": "position"})])
def test_gates_start_at_one_half(method: str, hp: dict) -> None:
    model = _model(method, **hp)
    mu = torch.sigmoid(model.gates / model.spec.gate_temperature)
    assert mu.shape == (2,) and torch.equal(mu, torch.full((2,), 0.5))


def test_layer_dropping_follows_the_papers_scripts() -> None:
    # ladder_side_tuning_base.sh (T5-base, 12 layers) and ..._large.sh (T5-large, 24 layers)
    assert side_layer_indices(12, (), 4) == (1, 2, 3, 5, 6, 7, 9, 10, 11)
    assert side_layer_indices(24, (), 2) == tuple(range(1, 24, 2))
    assert side_layer_indices(12, (), 0) == tuple(range(12))
    assert side_layer_indices(12, (0, -1), 0) == (0, 11)
    model = _model("lst", drop_every=2)
    assert model.layers == (1,) and len(model.side_layers) == 1 and model.gates.shape == (1,)
    assert sorted(model.down) == ["1", "emb"]  # no downsampler for a dropped layer
    for bad in ({"drop_every": 1}, {"drop_every": 2, "layers": (1,)}):
        with pytest.raises(ValueError, match="drop_every"):
            _model("lst", **bad)


@pytest.mark.parametrize("backbone", TINY)
def test_position_fusion_k1_equals_lst_given_the_same_weights(backbone: str) -> None:
    lst, klst1, klst3 = (_model(m, backbone, **hp) for m, hp in [
        ("lst", {}), ("klst", {"k": 1, "fusion": "position"}), ("klst", {"k": 3, "fusion": "position"})])
    lst_state = {k: v for k, v in lst.state_dict().items() if not k.startswith("backbone.")}
    for other in (klst1, klst3):
        missing, unexpected = other.load_state_dict(lst_state, strict=False)
        assert not unexpected and all(k.startswith(("backbone.", "fusion.")) for k in missing)
    batch = _batch(backbone)
    models = [m.eval() for m in (lst, klst1, klst3)]
    out_lst, out_k1, out_k3 = (_logits(m, batch) for m in models)
    assert torch.equal(out_lst, out_k1)
    assert not torch.allclose(out_lst, out_k3)  # a real window does change the ladder


def _windows(model: LadderSideModel, batch: dict[str, torch.Tensor]) -> list[tuple[Any, ...]]:
    seen: list[tuple[Any, ...]] = []
    handles = [f.register_forward_hook(lambda mod, args, out: seen.append(args)) for f in model.fusion.position]
    _logits(model, batch)
    for h in handles:
        h.remove()
    return seen


def test_position_window_is_zero_padded_at_first_and_last_layers() -> None:
    model = _model("klst", k=5, fusion="position").eval()  # 2 backbone layers, window of 5: two pads on each side
    batch = _batch()
    states = model.backbone_states(batch["input_ids"], batch["attention_mask"])
    with torch.no_grad():
        feats = [model.downsample(str(l), h) for l, h in enumerate(states[1:])]
    (_, first, _), (_, last, _) = _windows(model, batch)
    assert first.shape[2] == last.shape[2] == 5
    # layer 0's window: [0, 0, f0, f1, 0]; layer 1's: [0, f0, f1, 0, 0]
    for window, layout in ((first, [None, None, 0, 1, None]), (last, [None, 0, 1, None, None])):
        for j, l in enumerate(layout):
            expected = torch.zeros_like(feats[0]) if l is None else feats[l]
            assert torch.equal(window[:, :, j], expected), (j, l)


def test_position_pool_all_attends_over_every_layer_without_padding() -> None:
    model = _model("klst", pool_all=True, fusion="position").eval()
    (_, w0, _), (_, w1, _) = _windows(model, _batch())
    assert w0.shape[2] == 2 and torch.equal(w0, w1) and w0.abs().sum(-1).gt(0).all()


def test_position_window_dropout_drops_members_but_never_the_centre() -> None:
    model = _model("klst", k=5, window_dropout=0.5, fusion="position").train()
    torch.manual_seed(0)
    keeps = [keep for _, _, keep in _windows(model, _batch(b=16))]
    assert all(k is not None and k[..., 2].all() for k in keeps)
    assert any((~k).any() for k in keeps)
    assert all(keep is None for _, _, keep in _windows(model.eval(), _batch()))


def test_pruned_init_keeps_shapes_and_the_most_important_channels() -> None:
    bb = backbones.load("tiny-bert")  # d=32, 2 attention heads of 16, FFN 64; r=8 keeps 4 / 2+2 / 8
    layer = bb.model.bert.encoder.layer[1]
    parts = anatomy.of(bb.model).parts(layer)
    res, attn, ffn = [3, 9, 20, 31], [1, 6, 16, 30], [0, 5, 7, 12, 33, 40, 50, 63]
    with torch.no_grad():
        for key in ("q", "k", "v", "fi"):
            parts[key].weight[:, res] *= 50
        for key in ("o", "fo"):
            parts[key].weight[res] *= 50
        for key in ("q", "k", "v"):
            parts[key].weight[attn] *= 50
        parts["o"].weight[:, attn] *= 50
        parts["fi"].weight[ffn] *= 50
        parts["fo"].weight[:, ffn] *= 50
    plan = prune_plan(parts, attn_heads=2, r=8)
    assert plan["res"].tolist() == res and plan["attn"].tolist() == attn and plan["ffn"].tolist() == ffn

    model = methods.get("lst")().prepare(bb)
    side = model.side_layers[1]
    assert side.query.weight.shape == (4, 4) and side.fc_in.weight.shape == (8, 4) and side.fc_out.weight.shape == (4, 8)
    r_, a_, f_ = (torch.tensor(x) for x in (res, attn, ffn))
    assert torch.equal(side.query.weight, parts["q"].weight[a_][:, r_])
    assert torch.equal(side.value.bias, parts["v"].bias[a_])
    assert torch.equal(side.out.weight, parts["o"].weight[r_][:, a_])
    assert torch.equal(side.fc_in.weight, parts["fi"].weight[f_][:, r_])
    assert torch.equal(side.fc_out.weight, parts["fo"].weight[r_][:, f_])
    assert torch.equal(side.ln2.weight, parts["ln2"].weight[r_])
    random = methods.get("lst")(init="random").prepare(backbones.load("tiny-bert"))
    assert not torch.equal(random.side_layers[1].query.weight, side.query.weight)


@pytest.mark.parametrize("backbone", TINY)
@pytest.mark.parametrize("method,hp", [("lst", {}), ("klst", {}), ("klst", {"k": 1}), ("klst", {"pool_all": True}),
                                       ("klst", {"fusion": "position", "k": 3}),
                                       ("klst", {"fusion": "position", "pool_all": True})])
def test_padded_tokens_do_not_leak_into_the_logits(backbone: str, method: str, hp: dict) -> None:
    model = _model(method, backbone, **hp).eval()
    batch = _batch(backbone, b=4, s=12)
    pad = batch["attention_mask"] == 0
    assert pad.any()
    changed = dict(batch, input_ids=torch.where(pad, torch.randint(5, 1000, pad.shape), batch["input_ids"]))
    assert not torch.equal(changed["input_ids"], batch["input_ids"])
    torch.testing.assert_close(_logits(model, changed), _logits(model, batch), rtol=0, atol=0)
    real = dict(batch, input_ids=batch["input_ids"].clone())
    real["input_ids"][:, 1] = (real["input_ids"][:, 1] + 1) % 1000  # a real token does matter
    assert not torch.allclose(_logits(model, real), _logits(model, batch))


def test_mlm_head_scores_the_vocabulary_and_backward_skips_the_encoder() -> None:
    model = _model("lst", "tiny-roberta", head="mlm")
    batch = _batch("tiny-roberta", b=2, s=8)
    hooks = BackwardReadHooks(model)
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert out.shape == (2, 8, 1000)
    with hooks.phase("backward"):
        out[:, 0].logsumexp(-1).sum().backward()
    read = [n for n in hooks.reads.read if n.startswith("backbone.")]
    # The frozen head only: its own layers and its decoder, tied to the word embeddings.
    assert any(n.startswith("backbone.lm_head.") for n in read)
    assert all(n.startswith("backbone.lm_head.") or n.endswith("word_embeddings.weight") for n in read)
    assert all(p.grad is None for p in _backbone_params(model).values())


@pytest.mark.parametrize("overrides", [(("k", "3"),), (("k", "3"), ("fusion", "position"))])
def test_training_step_changes_side_parameters_only(overrides: tuple) -> None:
    built = build(Case("klst", "tiny-bert", 4, 8, overrides=overrides))
    before = {n: p.detach().clone() for n, p in built.model.named_parameters()}
    optimizer = built.method.make_optimizer(built.model)
    for _ in range(2):
        step_fn(built, optimizer, ChainHooks())()
    after = dict(built.model.named_parameters())
    backbone_names = [n for n in before if n.startswith("backbone.")]
    side_names = [n for n in before if not n.startswith("backbone.")]
    assert backbone_names and all(torch.equal(before[n], after[n]) for n in backbone_names)
    assert side_names and all(not torch.equal(before[n], after[n]) for n in side_names)


def test_hyperparameters_parse_and_shape_the_side_network() -> None:
    klst = methods.get("klst").from_overrides({"k": "5", "layers": "0,-1", "downsampler": "shared",
                                              "fusion": "position"})
    assert klst.k == 5 and klst.layers == (0, -1) and klst.downsampler == "shared" and klst.fusion == "position"
    model = _model("lst", layers=(-1,), downsampler="avgpool")
    assert len(model.side_layers) == 1 and model.layers == (1,)
    assert not any(".down" in n or n.startswith("down") for n, _ in model.named_parameters())
    shared = _model("lst", downsampler="shared")
    assert sum(1 for n, _ in shared.named_parameters() if n.startswith("down")) == 2  # one weight, one bias
    assert isinstance(_model("klst").fusion, WindowFusion) and _model("lst").fusion is None
    with pytest.raises(ValueError, match="odd"):
        _model("klst", k=4)
    with pytest.raises(ValueError, match="fusion must be one of attention, position"):
        methods.get("klst").from_overrides({"fusion": "gated"})
    with pytest.raises(ValueError, match="outside"):
        _model("lst", layers=(5,))
    with pytest.raises(ValueError, match="must divide"):
        _model("lst", r=3)


def test_predicted_step_runs_on_fake_tensors() -> None:
    from spbench.measure.predict import predict

    lst, _ = predict(Case("lst", "tiny-roberta", 2, 16))
    klst, _ = predict(Case("klst", "tiny-roberta", 2, 16, overrides=(("k", "3"),)))
    position, _ = predict(Case("klst", "tiny-roberta", 2, 16, overrides=(("k", "3"), ("fusion", "position"))))
    for m in (lst, klst, position):
        assert 0 < m["params_backward_read"] <= m["params_trainable"] < m["params_total"]
        assert m["params_with_grad"] == m["params_trainable"]
        assert m["predicted_cuda_peak_bytes"] > m["mem_params_bytes"] > 0
    assert klst["params_trainable"] > lst["params_trainable"]
    assert position["params_trainable"] > lst["params_trainable"]
