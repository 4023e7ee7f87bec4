"""Speed of the prediction path: a case built on the meta device vs with real random weights.

    pytest benchmarks/test_predict_path.py -m predict_path --methods klst --backbones roberta-large \
        --shapes 32x512 --benchmark-json=out/predict-path.json
    pytest benchmarks/test_predict_path.py -m predict_path      # every default memory case

Each case is predicted twice in one process, as ``spbench estimate`` does it: built on the meta
device (no weights drawn, no copy of them for the inference floor; the timed target), then
built the old way, with real random weights and a deep copy of them. ``extra_info`` gets both
wall times and CPU times, their ratio, and whether the figures agree to the byte (asserted: the
meta build must not move a figure). The new path runs first, so it also pays for the first
fake-tensor kernels; the ratio is conservative. Both paths share today's tracker, so the ratio
is the meta build's alone; against the code before the meta build (whose tracker also walked every
module after every op) time ``spbench estimate`` from both checkouts.

Cases are the memory cases (``--methods``, ``--backbones``, ``--shapes``); the target
case is ``--methods klst --backbones roberta-large --shapes 32x512`` (``spbench estimate`` in
at most 5 s on 2 cores, 49 s before). The old path takes up to minutes per case (it draws
roberta-large's 355M weights twice), so the module runs only with ``-m predict_path``.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from record import guarded, pedantic, record

from spbench.case import Case, build
from spbench.measure.predict import predict_built
from spbench.result import PREDICTED, Result

pytestmark = pytest.mark.predict_path


def _timed(case: Case, meta: bool) -> tuple[dict[str, Any], dict[str, Any], float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    built = build(case, keep_backbone_copy=True, meta=meta)
    plain = built.plain
    metrics = predict_built(built, plain)
    return metrics, built.notes, time.perf_counter() - wall, time.process_time() - cpu


def test_predict_path(benchmark: Any, memory_case: Case, request: Any) -> None:
    if "predict_path" not in (request.config.getoption("-m") or ""):
        pytest.skip("prediction-path speed (minutes per case): run with -m predict_path")
    case = memory_case

    def body() -> None:
        out: dict[str, Any] = {}

        def new_path() -> None:
            out["new"] = _timed(case, meta=True)

        pedantic(benchmark, new_path, rounds=1, warmup_rounds=0, iterations=1)
        new, notes, new_s, new_cpu = out["new"]
        old, _, old_s, old_cpu = _timed(case, meta=False)
        timings = {"predict_new_s": new_s, "predict_old_s": old_s, "predict_new_cpu_s": new_cpu,
                   "predict_old_cpu_s": old_cpu, "new_over_old": new_s / old_s, "figures_identical": new == old}
        record(benchmark, Result.of(case, PREDICTED, metrics=new, notes={**notes, **timings}))
        assert new == old, f"meta build moved a figure: {sorted(k for k in new if new[k] != old.get(k))}"

    guarded(benchmark, case, PREDICTED, body)
