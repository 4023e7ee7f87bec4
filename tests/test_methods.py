"""Trainable sets and what backward touches, for every method, on tiny models."""

from __future__ import annotations

import pytest
import torch

from spbench import methods
from spbench.case import Case, build
from spbench.measure.step import ChainHooks, step_fn
from spbench.measure.params import BackwardReadHooks


def _trainable(model: torch.nn.Module) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def _run_step(case: Case) -> tuple[object, BackwardReadHooks]:
    built, _ = build(case)
    optimizer = built.method.make_optimizer(built.model)
    hooks = BackwardReadHooks(built.model)
    step_fn(built, optimizer, ChainHooks(hooks))()
    return built, hooks


def test_full_ft_trains_everything() -> None:
    built, hooks = _run_step(Case("full_ft", "tiny-bert", 2, 8))
    params = list(built.model.parameters())
    assert all(p.requires_grad for p in params)
    # Every matrix of every layer is read by backward (embedding tables are not: their
    # backward is an index scatter).
    assert any(".attention.self.query.weight" in n for n in hooks.reads.read)
    assert hooks.with_grad == sum(p.numel() for p in params)


@pytest.mark.parametrize("backbone", ["tiny-bert", "tiny-roberta", "tiny-distilbert"])
def test_lora_trains_adapters_and_head_only(backbone: str) -> None:
    built, hooks = _run_step(Case("lora", backbone, 2, 8))
    names = _trainable(built.model)
    assert names and all("lora_" in n or "modules_to_save" in n for n in names)
    # LoRA's backward multiplies by frozen weights to reach earlier adapters.
    assert hooks.reads.frozen_read()


@pytest.mark.parametrize("backbone", ["tiny-bert", "tiny-roberta", "tiny-distilbert"])
def test_side_lora_has_loras_trainable_set(backbone: str) -> None:
    lora, _ = build(Case("lora", backbone, 2, 8))
    side, _ = build(Case("side_lora", backbone, 2, 8))
    assert _trainable(side.model) == _trainable(lora.model)


@pytest.mark.parametrize("backbone", ["tiny-bert", "tiny-roberta", "tiny-distilbert"])
def test_side_lora_all_reads_no_frozen_linear_weight(backbone: str) -> None:
    built, hooks = _run_step(Case("side_lora", backbone, 2, 8))
    frozen_linear_weights = {
        f"{name}.weight" for name, m in built.model.named_modules()
        if isinstance(m, torch.nn.Linear) and not m.weight.requires_grad
    }
    assert frozen_linear_weights  # the model has frozen Linears ...
    assert not frozen_linear_weights & set(hooks.reads.read)  # ... and backward reads none


def _numel(model: torch.nn.Module, pred: object) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if p.requires_grad and pred(n))


def test_side_lora_targets_scope_skips_only_wrapped_weights() -> None:
    built, hooks = _run_step(Case("side_lora", "tiny-roberta", 2, 8, overrides=(("scope", "targets"),)))
    read = set(hooks.reads.read)
    assert not any(n.endswith(("query.base_layer.weight", "value.base_layer.weight")) for n in read)
    assert any(n.endswith("attention.output.dense.weight") for n in read)  # not detached
    # The output projection passes the gradient on, so every adapter receives one.
    assert hooks.with_grad == _numel(built.model, lambda n: True)


def test_side_lora_backward_is_cheaper_than_lora() -> None:
    from spbench.measure.predict import predict

    lora, _ = predict(Case("lora", "tiny-roberta", 2, 16))
    side, _ = predict(Case("side_lora", "tiny-roberta", 2, 16))
    assert side["flops_backward"] < lora["flops_backward"]
    assert side["params_backward_read"] < lora["params_backward_read"]
    assert side["flops_forward"] == lora["flops_forward"]


def test_side_lora_all_gradient_stops_at_frozen_projections() -> None:
    """Documented property of scope "all": with every frozen Linear's input detached the gradient
    cannot pass the frozen attention-output projection, so query/value adapters receive none;
    only the head is reached. ``params_with_grad`` makes this visible in every report."""
    built, hooks = _run_step(Case("side_lora", "tiny-roberta", 2, 8))
    head = _numel(built.model, lambda n: "modules_to_save" in n)
    adapters = _numel(built.model, lambda n: "lora_" in n)
    assert adapters > 0 and head > 0
    assert hooks.with_grad == head


def test_overrides_parse_by_type_and_reject_unknown() -> None:
    lora = methods.get("lora").from_overrides({"r": "16", "targets": "query,key", "train_head": "false"})
    assert lora.r == 16 and lora.targets == ("query", "key") and lora.train_head is False
    side = methods.get("side_lora").from_overrides({"scope": "targets"})
    assert side.scope == "targets"
    with pytest.raises(ValueError, match="no hyperparameter 'rank'"):
        methods.get("lora").from_overrides({"rank": "4"})
    with pytest.raises(ValueError, match="expects int"):
        methods.get("lora").from_overrides({"r": "four"})
    with pytest.raises(ValueError, match="must be one of"):
        methods.get("side_lora").from_overrides({"scope": "some"})
