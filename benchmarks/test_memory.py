"""Predicted memory, parameter counts and FLOPs of one training step, for every case.

Deterministic (fake tensors, CUDA emulated): this is what ``spbench check`` gates. The timed
target is the prediction itself (one round); the figures are in ``extra_info``.
"""

from __future__ import annotations

from typing import Any

from record import base_info, guarded, record

from spbench.case import Case, build, identity
from spbench.measure.predict import predict_built


def test_memory(benchmark: Any, memory_case: Case) -> None:
    case = memory_case

    def body() -> None:
        out: dict[str, Any] = {}

        def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
            built, plain = build(case, keep_backbone_copy=True, meta=True)
            out["built"] = built
            return (built, plain), {}

        metrics = benchmark.pedantic(predict_built, setup=setup, rounds=1, iterations=1)
        built = out["built"]
        record(benchmark, {**base_info(case, "predicted-cuda"), **identity(built), **built.notes, **metrics})

    guarded(benchmark, case, "predicted-cuda", body)
