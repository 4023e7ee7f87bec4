"""Predicted memory, parameter counts and FLOPs of one training step, for every case.

Deterministic (fake tensors, CUDA emulated): this is what ``spbench check`` gates. The timed
target is the prediction itself (one round); the figures are in ``extra_info``.
"""

from __future__ import annotations

from typing import Any

from record import guarded, pedantic, record

from spbench.case import Case, build
from spbench.measure.predict import predict_built
from spbench.result import PREDICTED, Result


def test_memory(benchmark: Any, memory_case: Case) -> None:
    case = memory_case

    def body() -> None:
        out: dict[str, Any] = {}

        def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
            built = build(case, keep_backbone_copy=True, meta=True)
            plain = built.plain
            out["built"] = built
            return (built, plain), {}

        metrics = pedantic(benchmark, predict_built, setup=setup, rounds=1, iterations=1)
        built = out["built"]
        record(benchmark, Result.of(case, PREDICTED, metrics=metrics, notes=built.notes))

    guarded(benchmark, case, PREDICTED, body)
