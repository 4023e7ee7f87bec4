"""The measurement core: fake-mode prediction agrees with the real CPU tracker, is
deterministic across processes, and emulates CUDA where it says it does."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from spbench.case import Case, build
from spbench.measure.measured import measure_built
from spbench.measure.memory import tracked_peak
from spbench.measure.predict import predict, predict_built


@pytest.mark.parametrize("method", ["full_ft", "lora", "side_lora"])
def test_fake_peak_equals_real_cpu_peak_without_emulation(method: str) -> None:
    case = Case(method, "tiny-roberta", 4, 16)
    built, _ = build(case)
    fake = predict_built(built, emulate_cuda=False)["predicted_cuda_peak_bytes"]
    built, _ = build(case)
    real = measure_built(built)[0]["peak_bytes"]
    assert fake == real


def test_prediction_is_identical_in_two_processes() -> None:
    code = (
        "import json; from spbench.case import Case; from spbench.measure.predict import predict; "
        "print(json.dumps(predict(Case('lora', 'tiny-bert', 4, 32))[0], sort_keys=True))"
    )
    outs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
            for _ in range(2)]
    first = json.loads(outs[0].strip().splitlines()[-1])
    assert first["predicted_cuda_peak_bytes"] > 0
    assert outs[0] == outs[1]


def test_cuda_emulation_uses_memory_efficient_attention() -> None:
    """Efficient attention keeps no L x L probability matrix for backward: at a long sequence the
    emulated step's activations must be far below the CPU math path's."""
    case = Case("full_ft", "tiny-bert", 2, 256)
    built, _ = build(case)
    cpu = predict_built(built, emulate_cuda=False)
    built, _ = build(case)
    cuda = predict_built(built, emulate_cuda=True)
    attn_matrix = 2 * 2 * 256 * 256 * 4  # batch x heads x L x L float32, one layer
    assert cpu["mem_activations_bytes"] - cuda["mem_activations_bytes"] > attn_matrix


def test_steady_state_includes_optimizer_state() -> None:
    metrics, _ = predict(Case("full_ft", "tiny-bert", 2, 8))
    # AdamW keeps two float32 moments per trainable element (and a step counter per tensor).
    assert metrics["mem_optimizer_bytes"] >= 2 * 4 * metrics["params_trainable"]


def test_flops_backward_is_about_twice_forward_for_full_ft() -> None:
    metrics, _ = predict(Case("full_ft", "tiny-roberta", 4, 32))
    assert 1.5 < metrics["flops_backward"] / metrics["flops_forward"] < 2.5


def test_inference_floor_is_below_training_peak() -> None:
    metrics, _ = predict(Case("full_ft", "tiny-bert", 4, 32))
    assert 0 < metrics["predicted_inference_peak_bytes"] < metrics["predicted_cuda_peak_bytes"]


def test_tracker_counts_a_kept_activation() -> None:
    kept = []

    def step() -> None:
        x = torch.ones(1024, 1024)
        kept.append(x * 2)

    assert tracked_peak(step)["peak_bytes"] >= 2 * 4 * 1024 * 1024


def test_peak_grows_with_batch() -> None:
    small, _ = predict(Case("lora", "tiny-bert", 2, 32))
    large, _ = predict(Case("lora", "tiny-bert", 8, 32))
    assert large["mem_activations_bytes"] > 3 * small["mem_activations_bytes"]
    assert large["mem_params_bytes"] == small["mem_params_bytes"]
