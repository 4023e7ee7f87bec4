"""SST-2 accuracy cases: train each method on SST-2 train, score the 872-sentence dev split.

    pytest benchmarks/test_accuracy.py -m accuracy --sst2-dir ../shared/data/sst2 \\
        --benchmark-json=reports/accuracy-cpu.json                 # full_ft, lora, ... on minilm-l6
    pytest benchmarks/test_accuracy.py -m accuracy --methods lora --budget steps=50 --set lr=4e-4
    spbench run --accuracy --sst2-dir ../shared/data/sst2         # the same, then the report

Minutes per case, so they run only when asked: with ``-m accuracy`` (or ``--sst2-dir`` /
``--budget`` given); a plain ``pytest benchmarks/`` skips them. Hyperparameters are each
method's defaults (LoRA 5e-4, full FT 2e-5, as in the papers) plus ``--set``; they land in
``method_config``, the training setup (budget, seed, warmup, clipping) in ``train_config``.
Each case writes sst2_accuracy, sst2_f1, train_examples, train_steps, train_time_s,
train_energy_j (where a counter can be read; the ``energy`` note says which, or why not) and
peak_bytes (a tracked steady-state step at the run's largest batch shape) into extra_info.
"""

from __future__ import annotations

from typing import Any

import pytest
from record import guarded, pedantic, record

from spbench.case import Case

pytestmark = pytest.mark.accuracy


def wanted(config: pytest.Config) -> bool:
    """Run only when asked: ``-m`` naming accuracy, or an accuracy option set."""
    return ("accuracy" in (config.getoption("-m") or "")
            or bool(config.getoption("--sst2-dir") or config.getoption("--budget")))


def test_accuracy(benchmark: Any, accuracy_case: Case, request: Any) -> None:
    config = request.config
    if not wanted(config):
        pytest.skip("SST-2 training case: run with -m accuracy")
    case = accuracy_case

    def body() -> None:
        from spbench.train import DEFAULT_CPU_BUDGET, Budget, run_accuracy

        budget = Budget.parse(config.getoption("--budget") or DEFAULT_CPU_BUDGET)
        out: dict[str, Any] = {}

        def run() -> None:
            out["result"], out["run"] = run_accuracy(
                case, budget, config.getoption("--sst2-dir"), seed=config.getoption("--seed"),
                eval_every=config.getoption("--eval-every"))

        pedantic(benchmark, run, rounds=1, warmup_rounds=0, iterations=1)
        record(benchmark, out["result"])
        if not out["result"].ok:  # recorded as a data point, reported as a failure
            pytest.fail(f"{case.id}: {out['result'].reason}")

    guarded(benchmark, case, case.device, body)

