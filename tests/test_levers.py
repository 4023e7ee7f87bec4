"""The levers a user weighs against the methods: gradient checkpointing and half-precision
weights, each a Case field, predicted and measured, refused where it does not apply."""

from __future__ import annotations

import pytest
import torch
from torch.utils.checkpoint import checkpoint

from spbench import methods
from spbench.case import Case, build
from spbench.cli import main
from spbench.errors import InputError
from spbench.measure.measured import measure_built
from spbench.measure.memory import tracked_peak
from spbench.measure.predict import predict, predict_built
from spbench.measure.step import ChainHooks, step_fn

CHECKPOINTED = [n for n in methods.names() if methods.get(n).supports_grad_checkpointing]


def test_levers_are_declared_where_they_apply() -> None:
    assert {"full_ft", "lora", "side_lora", "bitfit", "ia3", "prefix", "prompt_tuning"} <= set(CHECKPOINTED)
    assert not {"lst", "klst", "mezo", "mezo_lst"} & set(CHECKPOINTED)
    half = {n for n in methods.names() if methods.get(n).supports_half_weights}
    assert half == {"mezo", "lst", "klst"}


def test_case_ids_name_the_levers() -> None:
    assert Case("full_ft", "tiny-bert", 2, 8, grad_checkpointing=True).id == "full_ft-tiny-bert-b2-s8-gc"
    assert Case("mezo", "tiny-bert", 2, 8, dtype="bf16-weights").id == "mezo-tiny-bert-b2-s8-bf16-weights"


@pytest.mark.parametrize(("case", "message"), [
    (Case("lst", "tiny-bert", 2, 8, grad_checkpointing=True), "does not apply to lst"),
    (Case("mezo", "tiny-bert", 2, 8, grad_checkpointing=True), "does not apply to mezo"),
    (Case("full_ft", "tiny-bert", 2, 8, dtype="bf16-weights"), "not sound for full_ft"),
    (Case("lora", "tiny-bert", 2, 8, dtype="fp16-weights"), "not sound for lora"),
])
def test_a_lever_where_it_does_not_apply_is_refused(case: Case, message: str) -> None:
    with pytest.raises(InputError, match=message):
        case.validate()


def test_cli_refuses_checkpointing_lst_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["estimate", "--method", "lst", "--backbone", "tiny-bert", "--grad-checkpointing"]) == 2
    err = capsys.readouterr().err.strip()
    assert "does not apply to lst" in err and len(err.splitlines()) == 1


def test_tracker_sees_checkpoint_recomputation() -> None:
    """Non-reentrant recomputation runs inside backward; the tracker (a dispatch mode) must
    count what it allocates, or a checkpointed peak would be under-predicted."""
    x = torch.randn(256, 256, requires_grad=True)
    big = 64 * 256 * 256 * 4  # the recomputed intermediate

    def block(t: torch.Tensor) -> torch.Tensor:
        return t.unsqueeze(0).expand(64, -1, -1).exp().sum(0)

    def step() -> None:
        checkpoint(block, x, use_reentrant=False).sum().backward()

    assert tracked_peak(step, x)["peak_bytes"] >= big


def test_checkpointing_keeps_gradients_and_lowers_activations() -> None:
    grads = []
    for gc in (False, True):
        built = build(Case("lora", "tiny-roberta", 4, 32, grad_checkpointing=gc))
        built.model.eval()  # no dropout: the two runs must compute the same thing
        built.objective.loss(built.model, built.batch).backward()
        grads.append({n: p.grad for n, p in built.model.named_parameters() if p.requires_grad})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], msg=name)


@pytest.mark.parametrize("method", ["full_ft", "lora", "prefix"])
def test_checkpointing_in_the_prediction(method: str) -> None:
    base, _ = predict(Case(method, "tiny-roberta", 4, 64))
    gc, _ = predict(Case(method, "tiny-roberta", 4, 64, grad_checkpointing=True))
    assert gc["mem_activations_bytes"] < base["mem_activations_bytes"]
    assert gc["predicted_cuda_peak_bytes"] < base["predicted_cuda_peak_bytes"]
    # Backward recomputes each layer's forward (the head and embeddings are not recomputed).
    assert gc["flops_backward"] - base["flops_backward"] > 0.8 * base["flops_forward"]
    assert gc["flops_forward"] == base["flops_forward"]


@pytest.mark.parametrize("method", CHECKPOINTED)
def test_checkpointed_fake_peak_equals_real_cpu_peak(method: str) -> None:
    case = Case(method, "tiny-bert", 2, 16, grad_checkpointing=True)
    built = build(case)
    fake = predict_built(built, emulate_cuda=False)["predicted_cuda_peak_bytes"]
    built = build(case)
    assert fake == measure_built(built)[0]["peak_bytes"]


def test_mezo_half_weights_halve_its_weights_and_its_floor() -> None:
    full, _ = predict(Case("mezo", "tiny-roberta", 4, 32))
    half, built = predict(Case("mezo", "tiny-roberta", 4, 32, dtype="bf16-weights"))
    assert all(p.dtype == torch.bfloat16 for p in built.model.parameters())
    assert half["mem_params_bytes"] < 0.55 * full["mem_params_bytes"]
    assert half["predicted_inference_peak_bytes"] < full["predicted_inference_peak_bytes"]
    assert half["predicted_cuda_peak_bytes"] < full["predicted_cuda_peak_bytes"]


@pytest.mark.parametrize("method", ["mezo", "lst", "klst"])
def test_half_weights_fake_peak_equals_real_cpu_peak(method: str) -> None:
    case = Case(method, "tiny-roberta", 2, 16, dtype="bf16-weights")
    built = build(case)
    fake = predict_built(built, emulate_cuda=False)["predicted_cuda_peak_bytes"]
    built = build(case)
    assert fake == measure_built(built)[0]["peak_bytes"]


@pytest.mark.parametrize("objective", ["classification", "prompt"])
def test_lst_half_weights_keep_the_side_network_float32_and_trained(objective: str) -> None:
    built = build(Case("lst", "tiny-roberta", 2, 16, objective=objective, dtype="bf16-weights"))
    backbone = {id(p) for p in built.model.backbone.parameters()}
    side = [(n, p) for n, p in built.model.named_parameters() if id(p) not in backbone]
    assert all(p.dtype == torch.bfloat16 for p in built.model.backbone.parameters())
    assert side and all(p.dtype == torch.float32 and p.requires_grad for _, p in side)
    before = {n: p.detach().clone() for n, p in side}
    optimizer = built.method.make_optimizer(built.model)
    step_fn(built, optimizer, ChainHooks())()
    assert all(not torch.equal(p, before[n]) for n, p in side)  # the gradient reaches all of it


def test_lst_half_weights_refuse_unfrozen_backbone_layers() -> None:
    with pytest.raises(InputError, match="unfreeze_last"):
        build(Case("lst", "tiny-roberta", 2, 16, dtype="bf16-weights", overrides=(("unfreeze_last", "1"),)))


def test_a_matrix_with_levers_has_each_lever_only_where_it_applies() -> None:
    from spbench.options import Options

    cases = Options(methods="full_ft,lst,mezo", backbones="tiny-bert", shapes="2x8",
                    dtypes="float32,bf16-weights", grad_checkpointing="off,on").cases("memory")
    assert [c.id for c in cases] == [
        "full_ft-tiny-bert-b2-s8", "full_ft-tiny-bert-b2-s8-gc", "lst-tiny-bert-b2-s8", "mezo-tiny-bert-b2-s8",
        "lst-tiny-bert-b2-s8-bf16-weights", "mezo-tiny-bert-b2-s8-bf16-weights"]
    with pytest.raises(InputError, match="--grad-checkpointing wants off, on or off,on"):
        Options(grad_checkpointing="yes").cases("memory")


FROZEN_EMBEDDINGS = [n for n in CHECKPOINTED if n != "full_ft"]


@pytest.mark.parametrize("method", FROZEN_EMBEDDINGS)
def test_checkpointing_keeps_frozen_embeddings_out_of_backward(method: str) -> None:
    """Non-reentrant checkpointing needs no input that requires grad: the frozen embeddings'
    output must not require one (transformers' enable_input_require_grads is undone: it would
    pull backward through every frozen layer down to the embeddings), and the gradient must
    still reach every trainable parameter inside the checkpointed layers (reentrant
    checkpointing gives them none when no input requires grad)."""
    built = build(Case(method, "tiny-roberta", 2, 8, grad_checkpointing=True))
    embeddings = built.model.get_input_embeddings()
    assert not any(p.requires_grad for p in embeddings.parameters())
    seen: list[bool] = []
    embeddings.register_forward_hook(lambda module, args, out: seen.append(out.requires_grad))
    built.objective.loss(built.model, built.batch).backward()
    assert seen and not any(seen)
    missing = [n for n, p in built.model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, missing
