"""The deployed model and its size: LoRA merged costs nothing and computes what it trained;
a saved adapter is its trainable bytes plus the safetensors header; every method deploys."""

from __future__ import annotations

import copy
import json
import struct

import pytest
import torch

from spbench import methods
from spbench.case import Case, build
from spbench.measure.inference import deploy_bytes, deploy_figures, measure_inference, predict_deployed
from spbench.measure.params import count_params

# Per tensor, the header holds its name, dtype, shape and two offsets: well under 256 bytes
# for these names; plus 8 bytes of length and at most 7 of alignment padding.
HEADER_BOUND_PER_TENSOR = 256


def _trained_lora(method: str = "lora"):
    """A tiny-bert LoRA case whose adapters are nonzero (B starts at zero: merged or not, that
    would compute the backbone's function and prove nothing)."""
    built = build(Case(method, "tiny-bert", 2, 16), keep_backbone_copy=True)
    plain = built.plain
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in built.model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    built.model.eval()
    return built, plain


@pytest.mark.parametrize("method", ["lora", "lora_blocks", "side_lora", "side_lora_team"])
def test_merged_lora_has_no_parameter_overhead_and_computes_the_same(method: str) -> None:
    built, plain = _trained_lora(method)
    with torch.no_grad():
        before = built.objective.logits(built.model, built.batch)
    deployed, figures = deploy_figures(built, plain)
    assert figures["params_deploy_extra"] == 0
    assert count_params(deployed)["params_total"] == count_params(plain)["params_total"]
    assert type(deployed) is type(plain)  # a plain transformers model again, no peft wrapper
    with torch.no_grad():
        after = built.objective.logits(deployed.eval(), built.batch)
        untouched = built.objective.logits(plain.eval(), built.batch)
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(after, untouched, atol=1e-4)  # the adapters did change the function


def test_lora_adapter_file_is_its_trainable_bytes_plus_the_header() -> None:
    built = build(Case("lora", "tiny-bert", 2, 16))
    state = built.method.deploy_state(built.model)
    trainable = [p for p in built.model.parameters() if p.requires_grad]
    data = sum(p.numel() * p.element_size() for p in trainable)
    assert len(state) == len(trainable)
    size = deploy_bytes(state)
    header = size - data
    assert 8 < header <= 8 + HEADER_BOUND_PER_TENSOR * len(state) + 7
    # the header is what safetensors wrote: its own length field says so
    from safetensors.torch import save

    blob = save({k: v.detach().contiguous() for k, v in state.items()})
    assert len(blob) == size and struct.unpack("<Q", blob[:8])[0] + 8 == header
    assert set(json.loads(blob[8:header])) - {"__metadata__"} == set(state)


def test_deploy_size_of_a_meta_build_equals_the_real_one() -> None:
    real = build(Case("lst", "tiny-bert", 2, 16))
    meta = build(Case("lst", "tiny-bert", 2, 16), meta=True)
    assert deploy_bytes(meta.method.deploy_state(meta.model)) == deploy_bytes(real.method.deploy_state(real.model))


def test_full_copies_and_side_networks_are_stored_as_such() -> None:
    sizes = {}
    for name in ("full_ft", "mezo", "lora", "lst"):
        built = build(Case(name, "tiny-bert", 2, 16), keep_backbone_copy=True)
        plain = built.plain
        sizes[name] = deploy_figures(built, plain)[1]
    weights = sum(p.numel() * p.element_size() for p in plain.parameters())
    header = 8 + HEADER_BOUND_PER_TENSOR * len(list(plain.parameters())) + 7
    for name in ("full_ft", "mezo"):  # the whole model
        assert weights < sizes[name]["deploy_bytes"] <= weights + header
        assert sizes[name]["params_deploy_extra"] == 0
    assert sizes["lst"]["params_deploy_extra"] > 0  # the side network stays at inference
    assert sizes["lora"]["deploy_bytes"] < weights / 10


@pytest.mark.parametrize("method", methods.names())
def test_every_method_deploys_predicted_and_measured(method: str) -> None:
    case = Case(method, "tiny-bert", 2, 16)
    predicted = predict_deployed(build(case, keep_backbone_copy=True, meta=True))
    assert predicted["deploy_bytes"] > 0 and predicted["predicted_deploy_inference_peak_bytes"] > 0
    built = build(case, keep_backbone_copy=True)
    plain = built.plain
    deployed, figures = deploy_figures(built, plain)
    assert figures == {k: predicted[k] for k in figures}  # meta and real builds agree
    measured = measure_inference(built, plain, deployed, rounds=1)
    assert measured["inference_time_s"] > 0 and measured["inference_peak_bytes"] > 0
    merged = figures["params_deploy_extra"] == 0
    if merged:  # the backbone's own shapes: no more memory than the backbone, predicted or measured
        assert predicted["predicted_inference_overhead"] == pytest.approx(1.0, abs=0.01)
        assert measured["inference_peak_overhead"] == pytest.approx(1.0, abs=0.01)
    else:
        assert predicted["predicted_inference_overhead"] > 1.0


def test_klst_keeps_more_at_inference_than_lst() -> None:
    out = {}
    for name in ("lst", "klst"):
        out[name] = predict_deployed(build(Case(name, "tiny-bert", 2, 16), keep_backbone_copy=True, meta=True))
    assert out["klst"]["predicted_deploy_inference_peak_bytes"] > out["lst"]["predicted_deploy_inference_peak_bytes"]
