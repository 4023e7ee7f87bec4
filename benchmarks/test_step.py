"""The real training step on --device: measured peak memory and median step time.

Peak: one steady-state step after a warm-up (CUDA: max_memory_allocated after a reset; CPU:
the tracker). Time: ``benchmark.pedantic`` over --rounds synchronised steps; step_time_s is
their median. Energy: NVML (CUDA) or RAPL (CPU) over whole steps lasting >= 1 s
(``spbench.measure.energy``).
"""

from __future__ import annotations

from typing import Any

from record import guarded, pedantic, record

from spbench.case import Case, build
from spbench.measure.energy import energy_per_step
from spbench.measure.measured import cuda_baseline, measure_built
from spbench.measure.timing import median_step_time, synced
from spbench.result import Result


def test_step(benchmark: Any, step_case: Case, request: Any) -> None:
    case = step_case
    rounds = request.config.getoption("--rounds")

    def body() -> None:
        baseline = cuda_baseline(case.device)
        built = build(case, on_device=True)
        metrics, step = measure_built(built, baseline)
        pedantic(benchmark, synced(step, case.device), rounds=rounds, warmup_rounds=0, iterations=1)
        if benchmark.stats is not None:
            metrics["step_time_s"] = float(benchmark.stats.stats.median)
        else:  # --benchmark-disable: pytest-benchmark ran the step once, untimed
            metrics["step_time_s"] = median_step_time(step, case.device, rounds=rounds, warmup=0)
        joules, how = energy_per_step(step, case.device)  # absent, with the reason, where no counter
        metrics.update(joules)
        record(benchmark, Result.of(case, metrics=metrics, notes={**built.notes, **how}))

    guarded(benchmark, case, case.device, body)
