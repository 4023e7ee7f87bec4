"""bitfit, ia3, prefix, prompt_tuning: what each trains, that the gradient reaches all of it,
and that the fake-tensor prediction of each equals the real CPU tracker's peak."""

from __future__ import annotations

import pytest
import torch

from spbench.case import Case, build
from spbench.measure.measured import measure_built
from spbench.measure.params import BackwardReadHooks
from spbench.measure.predict import predict, predict_built
from spbench.measure.step import ChainHooks, step_fn

BASELINES = ("bitfit", "ia3", "prefix", "prompt_tuning")
TINY = ("tiny-bert", "tiny-roberta", "tiny-distilbert")


def _trainable(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def _step(case: Case) -> tuple[object, BackwardReadHooks, dict[str, torch.Tensor]]:
    built = build(case)
    before = {n: p.detach().clone() for n, p in built.model.named_parameters()}
    optimizer = built.method.make_optimizer(built.model)
    hooks = BackwardReadHooks(built.model)
    step_fn(built, optimizer, ChainHooks(hooks))()
    return built, hooks, before


@pytest.mark.parametrize("backbone", TINY)
@pytest.mark.parametrize("method", BASELINES)
def test_gradient_reaches_every_trainable_element_and_frozen_stay(method: str, backbone: str) -> None:
    built, hooks, before = _step(Case(method, backbone, 2, 8))
    trainable = _trainable(built.model)
    assert trainable
    assert hooks.with_grad == sum(p.numel() for p in trainable.values())
    for name, param in built.model.named_parameters():
        if not param.requires_grad:
            assert torch.equal(param, before[name]), name


@pytest.mark.parametrize("method", BASELINES)
def test_fake_peak_equals_real_cpu_peak(method: str) -> None:
    case = Case(method, "tiny-roberta", 4, 16)
    built = build(case)
    fake = predict_built(built, emulate_cuda=False)["predicted_cuda_peak_bytes"]
    built = build(case)
    assert fake == measure_built(built)[0]["peak_bytes"]


@pytest.mark.parametrize("backbone", TINY)
def test_bitfit_trains_biases_and_head_only(backbone: str) -> None:
    built = build(Case("bitfit", backbone, 2, 8))
    names = set(_trainable(built.model))
    biases = {n for n, _ in built.model.named_parameters() if n.endswith("bias")}
    assert biases <= names
    assert all(n.endswith("bias") or n.startswith(("classifier.", "pre_classifier.", "bert.pooler."))
               for n in names), sorted(names)
    assert any(n.startswith("classifier.") and n.endswith("weight") for n in names)


@pytest.mark.parametrize("backbone", TINY)
def test_ia3_scales_key_value_and_ffn_inner_activation(backbone: str) -> None:
    built = build(Case("ia3", backbone, 2, 8))
    config = built.model.config
    vectors = {n: p for n, p in _trainable(built.model).items() if "ia3_l" in n}
    layers = getattr(config, "num_hidden_layers", None) or config.n_layers
    assert len(vectors) == 3 * layers  # l_k, l_v, l_ff per layer, nothing else
    ffn = getattr(config, "intermediate_size", None) or config.hidden_dim
    ffn_vectors = [p for p in vectors.values() if p.numel() == ffn]
    assert len(ffn_vectors) == layers  # the FFN's second Linear: its d_ffn input is scaled
    assert not any("attention.output" in n for n in vectors)  # peft's "output.dense" would match it
    assert all(torch.all(p == 1) for p in vectors.values())  # starts as the unchanged model


def test_prompt_tuning_lengthens_the_encoder_sequence() -> None:
    built = build(Case("prompt_tuning", "tiny-bert", 2, 8, overrides=(("num_virtual_tokens", "5"),)))
    seen: list[tuple[int, ...]] = []
    layer = next(m for n, m in built.model.named_modules() if n.endswith("encoder.layer.0"))
    layer.register_forward_hook(lambda m, a, out: seen.append(tuple(a[0].shape)))
    built.objective.logits(built.model, built.batch)
    assert seen == [(2, 13, 32)]  # 5 prompt tokens + 8


def test_prompt_tuning_costs_more_activation_memory_than_bitfit() -> None:
    prompt, _ = predict(Case("prompt_tuning", "tiny-roberta", 2, 16))
    bitfit, _ = predict(Case("bitfit", "tiny-roberta", 2, 16))
    assert prompt["mem_activations_bytes"] > bitfit["mem_activations_bytes"]  # 100 + 16 tokens


def test_prompt_tuning_refuses_what_it_cannot_do() -> None:
    with pytest.raises(ValueError, match="classification objective only"):
        build(Case("prompt_tuning", "tiny-roberta", 2, 8, objective="prompt"))
    with pytest.raises(ValueError, match="prompt tokens exceeds"):
        predict(Case("prompt_tuning", "tiny-roberta", 2, 500))


OWN = {  # what each baseline trains besides the head (names with peft's wrappers removed)
    "bitfit": lambda name: name.endswith("bias"),
    "ia3": lambda name: ".ia3_l." in name,
    "prefix": lambda name: ".prefix." in name,
    "prompt_tuning": lambda name: name.startswith("prompt_encoder."),
}
OBJECTIVES = [(m, "classification") for m in BASELINES] + [(m, "prompt") for m in BASELINES if m != "prompt_tuning"]


def _plain_name(name: str) -> str:
    """A parameter's name in the wrapped model, as the unwrapped one names it."""
    for prefix in ("base_model.model.", "base_model."):
        if name.startswith(prefix):
            name = name[len(prefix):]
            break
    return name.replace(".modules_to_save.default.", ".")


@pytest.mark.parametrize("backbone", TINY)
@pytest.mark.parametrize("method, objective", OBJECTIVES)
def test_each_objective_trains_the_method_and_the_head_it_has(method: str, objective: str, backbone: str) -> None:
    """Under the classification objective: the method's own parameters and the whole
    classification head (BERT's pooler too); under the prompt objective: the method's own
    parameters only (the masked-LM head keeps its weights). peft's frozen originals of the
    head stay frozen."""
    from spbench import backbones, objectives
    from spbench.anatomy import head_module_names

    built = build(Case(method, backbone, 2, 8, objective=objective))
    plain = backbones.load(backbone, head=objectives.get(objective).head).model
    heads = tuple(f"{h}." for h in head_module_names(plain)) if objective == "classification" else ()
    params = {_plain_name(n): p for n, p in built.model.named_parameters() if ".original_module." not in n}
    trainable = {n for n, p in params.items() if p.requires_grad}
    assert trainable == {n for n in params if OWN[method](n) or n.startswith(heads)}
    assert any(OWN[method](n) for n in trainable)
    if heads:
        assert any(n.startswith(heads) and n.endswith("weight") for n in trainable)
        assert backbone != "tiny-bert" or "bert.pooler.dense.weight" in trainable  # BERT's head reads its pooler
    originals = [n for n, p in built.model.named_parameters() if ".original_module." in n and p.requires_grad]
    assert not originals, originals
