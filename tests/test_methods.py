"""Trainable sets and what backward touches, for every method, on tiny models."""

from __future__ import annotations

import pytest
import torch

from spbench import backbones, methods
from spbench.case import Case, build
from spbench.errors import InputError
from spbench.measure.step import ChainHooks, step_fn
from spbench.measure.params import BackwardReadHooks

TINY = ["tiny-bert", "tiny-roberta", "tiny-distilbert"]


def _trainable(model: torch.nn.Module) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def _run_step(case: Case) -> tuple[object, BackwardReadHooks]:
    built = build(case)
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


@pytest.mark.parametrize("backbone", TINY)
def test_lora_trains_adapters_and_head_only(backbone: str) -> None:
    built, hooks = _run_step(Case("lora", backbone, 2, 8))
    names = _trainable(built.model)
    assert names and all("lora_" in n or "modules_to_save" in n for n in names)
    # LoRA's backward multiplies by frozen weights to reach earlier adapters.
    assert hooks.reads.frozen_read()


@pytest.mark.parametrize("backbone", TINY)
def test_side_lora_has_lora_blocks_trainable_set(backbone: str) -> None:
    lora = build(Case("lora_blocks", backbone, 2, 8))
    side = build(Case("side_lora", backbone, 2, 8))
    assert _trainable(side.model) == _trainable(lora.model)


@pytest.mark.parametrize("backbone", TINY)
def test_blocks_targets_are_the_six_linears_of_every_block(backbone: str) -> None:
    from peft.tuners.lora import LoraLayer

    from spbench.methods.lora import block_linears

    plain = backbones.load(backbone).model
    n_layers = plain.config.num_hidden_layers if hasattr(plain.config, "num_hidden_layers") else plain.config.n_layers
    found = block_linears(plain)
    assert len(found) == 6 * n_layers
    assert not any(k in name for name in found for k in ("pooler", "classifier"))
    built = build(Case("side_lora", backbone, 2, 8))
    wrapped = [name for name, m in built.model.named_modules() if isinstance(m, LoraLayer)]
    assert len(wrapped) == 6 * n_layers
    lora = build(Case("lora", backbone, 2, 8))  # the LoRA paper's default: query and value only
    assert len([m for m in lora.model.modules() if isinstance(m, LoraLayer)]) == 2 * n_layers


@pytest.mark.parametrize("backbone", TINY)
def test_side_lora_all_reads_no_frozen_linear_weight(backbone: str) -> None:
    built, hooks = _run_step(Case("side_lora", backbone, 2, 8))
    frozen_linear_weights = {
        f"{name}.weight" for name, m in built.model.named_modules()
        if isinstance(m, torch.nn.Linear) and not m.weight.requires_grad
    }
    assert frozen_linear_weights  # the model has frozen Linears ...
    assert not frozen_linear_weights & set(hooks.reads.read)  # ... and backward reads none
    assert hooks.with_grad == _numel(built.model, lambda n: True)  # ... yet every adapter is reached


def _numel(model: torch.nn.Module, pred: object) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if p.requires_grad and pred(n))


def test_side_lora_targets_scope_skips_only_wrapped_weights() -> None:
    qv_targets = (("targets", "qv"), ("scope", "targets"))
    built, hooks = _run_step(Case("side_lora", "tiny-roberta", 2, 8, overrides=qv_targets))
    read = set(hooks.reads.read)
    assert not any(n.endswith(("query.base_layer.weight", "value.base_layer.weight")) for n in read)
    assert any(n.endswith("attention.output.dense.weight") for n in read)  # not detached
    # The output projection passes the gradient on, so every adapter receives one.
    assert hooks.with_grad == _numel(built.model, lambda n: True)


def test_side_lora_backward_is_cheaper_than_lora_with_the_same_adapters() -> None:
    from spbench.measure.predict import predict

    lora, _ = predict(Case("lora_blocks", "tiny-roberta", 2, 16))
    side, _ = predict(Case("side_lora", "tiny-roberta", 2, 16))
    # On d=32 the rank-8 branches are a quarter of each Linear: strictly less, not the
    # distilbert-base ratios (the targets; see the README's LoRA vs Side-LoRA figures).
    assert side["flops_backward"] < lora["flops_backward"]
    assert side["params_backward_read"] < lora["params_backward_read"] / 2
    assert side["flops_forward"] == lora["flops_forward"]
    assert side["params_with_grad"] == side["params_trainable"] == lora["params_trainable"]


def test_side_lora_with_qv_adapters_only_trains_the_head() -> None:
    """With q/v adapters and every frozen block Linear detached, the gradient cannot pass the
    frozen attention-output projection: only the head is reached. ``params_with_grad`` makes
    this visible, and every report warns about it."""
    built, hooks = _run_step(Case("side_lora", "tiny-roberta", 2, 8, overrides=(("targets", "qv"),)))
    head = _numel(built.model, lambda n: "modules_to_save" in n)
    adapters = _numel(built.model, lambda n: "lora_" in n)
    assert adapters > 0 and head > 0
    assert hooks.with_grad == head


@pytest.mark.parametrize("method", ["lora", "lora_blocks", "side_lora", "mezo"])
def test_bert_pooler_trains_with_the_head(method: str) -> None:
    overrides = (("trainable", "head"),) if method == "mezo" else ()
    built = build(Case(method, "tiny-bert", 2, 8, overrides=overrides))
    pooler = {n for n in _trainable(built.model) if ".pooler." in n}
    assert pooler and all(n.endswith(("dense.weight", "dense.bias")) for n in pooler)


def test_overrides_parse_by_type_and_reject_unknown() -> None:
    lora = methods.get("lora").from_overrides({"r": "16", "targets": "query,key", "train_head": "false"})
    assert lora.r == 16 and lora.targets == ("query", "key") and lora.train_head is False
    assert methods.get("lora")().targets == ("qv",) and methods.get("side_lora")().targets == ("blocks",)
    assert methods.get("side_lora").from_overrides({"targets": "qv"}).targets == ("qv",)
    side = methods.get("side_lora").from_overrides({"scope": "targets"})
    assert side.scope == "targets"
    with pytest.raises(ValueError, match="no hyperparameter 'rank'"):
        methods.get("lora").from_overrides({"rank": "4"})
    with pytest.raises(ValueError, match="expects int"):
        methods.get("lora").from_overrides({"r": "four"})
    with pytest.raises(ValueError, match="must be one of"):
        methods.get("side_lora").from_overrides({"scope": "some"})


def three_steps(case: Case) -> tuple[list[str], list[str], int]:
    """Run three steps of ``case``; return (trainable tensors that never trained, frozen
    tensors that changed, number of trainable tensors). Trained: received a nonzero gradient
    in some step, or, for a forward-only method such as MeZO, changed."""
    torch.manual_seed(0)
    built = build(case)
    model = built.model
    optimizer = built.method.make_optimizer(model)
    params = dict(model.named_parameters())
    trainable = {n: p for n, p in params.items() if p.requires_grad}
    frozen = {n: p.detach().clone() for n, p in params.items() if not p.requires_grad}
    start = {n: p.detach().clone() for n, p in trainable.items()}
    nonzero: set[str] = set()
    for name, p in trainable.items():
        p.register_post_accumulate_grad_hook(lambda t, n=name: nonzero.add(n) if bool(t.grad.ne(0).any()) else None)
    step = step_fn(built, optimizer, ChainHooks())
    for _ in range(3):
        step()
    if built.method.uses_backward:
        untrained = sorted(set(trainable) - nonzero)
    else:
        untrained = sorted(n for n, p in trainable.items() if torch.equal(p.detach(), start[n]))
    moved = sorted(n for n, p in params.items() if n in frozen and not torch.equal(p.detach(), frozen[n]))
    return untrained, moved, len(trainable)


@pytest.mark.parametrize("objective", ["classification", "prompt"])
@pytest.mark.parametrize("backbone", TINY)
@pytest.mark.parametrize("method", methods.names())
def test_every_trainable_parameter_trains_and_every_frozen_one_stays(method: str, backbone: str,
                                                                    objective: str) -> None:
    """The registry-wide invariant, for every registered method (present and future): after
    three steps every trainable parameter has received a nonzero gradient (MeZO: changed) and
    every frozen parameter is bit-identical. Three steps, because LoRA's B starts at zero: an
    adapter behind another one gets a nonzero gradient only once the other's B has moved."""
    try:
        untrained, moved, n_trainable = three_steps(Case(method, backbone, 4, 16, objective=objective))
    except InputError as exc:  # a method may refuse an objective, with a clear error
        if objective == "classification":
            raise
        pytest.skip(f"{method} refuses the {objective} objective: {exc}")
    assert n_trainable
    assert not untrained, f"{len(untrained)} of {n_trainable} trainable tensors never trained: {untrained[:4]}"
    assert not moved, f"frozen parameters changed: {moved[:4]}"


def test_the_invariant_catches_adapters_the_gradient_never_reaches() -> None:
    untrained, moved, _ = three_steps(Case("side_lora", "tiny-bert", 4, 16, overrides=(("targets", "qv"),)))
    assert untrained and all("lora_" in n for n in untrained) and not moved


@pytest.mark.parametrize("method", methods.names())
def test_the_matrix_figure_params_with_grad_equals_params_trainable(method: str) -> None:
    """What the benchmark matrix records (the predicted step on fake tensors): every method's
    gradient reaches all it trains, so no report row carries the untrained-parameters warning."""
    from spbench.measure.predict import predict

    metrics, built = predict(Case(method, "tiny-bert", 2, 16))
    if built.method.uses_backward:
        assert metrics["params_with_grad"] == metrics["params_trainable"] > 0
    else:
        assert "params_with_grad" not in metrics  # no backward: nothing to reach


def _adapter_grads(case: Case, state: dict[str, torch.Tensor] | None) -> tuple[dict[str, torch.Tensor], dict]:
    """One backward of ``case`` (dropout off) from the parameters ``state``: the gradient of every
    trainable parameter, and the state used."""
    torch.manual_seed(0)
    built = build(case)
    model = built.model
    if state is None:
        with torch.no_grad():  # B starts at zero (zero A gradients): give every adapter a value
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.5)
        state = {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(state)
    model.eval()  # no dropout: both forms must see the same function
    built.objective.loss(model, built.batch).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}, state


@pytest.mark.parametrize("backbone", TINY)
def test_team_side_lora_has_lora_blocks_gradients_and_the_detached_form_does_not(backbone: str) -> None:
    """The team's Side-LoRA (one F.linear with W + s B A) is LoRA with another memory layout: the
    same gradients as lora_blocks (relative tolerance 1e-4, absolute 1e-6, float32). The detached
    form is another optimiser: its first block's adapter gradients differ."""
    reference, state = _adapter_grads(Case("lora_blocks", backbone, 2, 8), None)
    team, _ = _adapter_grads(Case("side_lora", backbone, 2, 8, overrides=(("backward", "team"),)), state)
    detached, _ = _adapter_grads(Case("side_lora", backbone, 2, 8), state)
    assert team.keys() == reference.keys() == detached.keys()
    for name, grad in reference.items():
        assert torch.allclose(team[name], grad, rtol=1e-4, atol=1e-6), name
    first = [n for n in reference if "lora_A" in n and (".0." in n)]
    assert first and any(not torch.allclose(detached[n], reference[n], rtol=1e-2, atol=1e-6) for n in first)


def test_team_side_lora_multiplies_by_a_merged_copy_and_forms_the_full_weight_gradient() -> None:
    """The team form's backward reads no frozen weight's storage (it multiplies by W + s B A, a
    weight-sized copy made in forward), and it forms each adapted Linear's full d_out x d_in weight
    gradient before reducing it to A and B: more backward FLOPs than lora_blocks, which reads W."""
    from spbench.measure.predict import predict

    _, hooks = _run_step(Case("side_lora", "tiny-bert", 2, 8, overrides=(("backward", "team"),)))
    assert not [n for n in hooks.reads.frozen_read() if n.endswith("base_layer.weight")]
    _, lora_hooks = _run_step(Case("lora_blocks", "tiny-bert", 2, 8))
    assert [n for n in lora_hooks.reads.frozen_read() if n.endswith("base_layer.weight")]
    team, _ = predict(Case("side_lora_team", "tiny-roberta", 2, 16))
    lora, _ = predict(Case("lora_blocks", "tiny-roberta", 2, 16))
    assert team["flops_backward"] > lora["flops_backward"]
    with pytest.raises(InputError, match="backward"):
        build(Case("side_lora", "tiny-bert", 2, 8, overrides=(("backward", "nope"),)))


@pytest.mark.parametrize("name", methods.names())
def test_every_declared_domain_holds_the_default_and_refuses_outside(name: str) -> None:
    """Each method's defaults lie in their fields' domains; a value past a domain's end is refused
    where the method is built, with one line naming the method and the field."""
    import dataclasses

    from spbench.domains import DOMAIN_KEY, declared

    cls = methods.get(name)
    cls()  # the defaults pass their own checks
    for f in dataclasses.fields(cls):
        domain = declared(cls, f.name, DOMAIN_KEY)
        if domain is None or domain.low is None:
            continue
        bad = domain.low if domain.low_open else domain.low - 1
        if domain.zero and bad == 0:
            bad = -1
        with pytest.raises(InputError) as info:
            cls(**{f.name: type(f.default)(bad)})
        assert str(info.value).startswith(f"{name}: {f.name} must be ") and "\n" not in str(info.value)


def test_domains() -> None:
    from spbench.domains import Domain, fraction, odd, positive

    assert positive().why_not(1e-9) == "" and positive().why_not(0) == "must be > 0, not 0"
    assert fraction().why_not(0.0) == "" and "in [0, 1)" in fraction().why_not(1.0)
    assert fraction(open_low=True).why_not(0.0) != ""
    assert odd(1).why_not(9) == "" and odd(1).why_not(4) == "must be odd and >= 1, not 4" and odd(1).why_not(-1)
    assert Domain(low=2, zero=True).why_not(0) == "" and Domain(low=2, zero=True).why_not(1) != ""
    assert positive().why_not(float("nan")) != "" and positive().why_not(True) != ""
