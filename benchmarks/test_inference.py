"""What each method costs once trained: the deployed model's no-grad forward and stored size.

The deployed model is the method's ``deployable`` (LoRA merged with peft's
``merge_and_unload``; side networks, prefixes and prompt tokens kept; full_ft and mezo the
whole model); see ``spbench.measure.inference``.

test_inference_predicted (the memory cases; gated by ``spbench check``): deployable size
(safetensors), parameters beyond the backbone, predicted CUDA peak of the forward and its
ratio to the backbone's. test_inference (the step cases, on --device): measured peak and
median time of the forward, each as a ratio to the untouched backbone measured in the same run.

    pytest benchmarks/test_inference.py --methods lora,lst,klst --backbones distilbert-base
"""

from __future__ import annotations

from typing import Any

import pytest
from record import guarded, pedantic, record

from spbench.case import Case, build
from spbench.measure.inference import measure_inference, predict_deployed
from spbench.result import PREDICTED, Result


def _skip_levers(case: Case) -> None:
    if case.grad_checkpointing:  # a training-step lever: the forward is the case's without it
        pytest.skip("gradient checkpointing does not change inference: see the case without it")


def test_inference_predicted(benchmark: Any, memory_case: Case) -> None:
    case = memory_case
    _skip_levers(case)

    def body() -> None:
        def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
            return (build(case, keep_backbone_copy=True, meta=True),), {}

        metrics = pedantic(benchmark, predict_deployed, setup=setup, rounds=1, iterations=1)
        record(benchmark, Result.of(case, PREDICTED, metrics=metrics))

    guarded(benchmark, case, PREDICTED, body)


def test_inference(benchmark: Any, step_case: Case, request: Any) -> None:
    case = step_case
    _skip_levers(case)
    rounds = request.config.getoption("--rounds")

    def body() -> None:
        built = build(case, keep_backbone_copy=True)
        plain = built.plain
        deployed = built.method.deployable(built.model)  # its size and counts: the predicted case's
        metrics = pedantic(benchmark, measure_inference, args=(built, plain, deployed),
                           kwargs={"rounds": rounds}, rounds=1, iterations=1)
        record(benchmark, Result.of(case, metrics=metrics, notes=built.notes))

    guarded(benchmark, case, case.device, body)
