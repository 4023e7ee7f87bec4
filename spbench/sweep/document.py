"""A study as a result document: the pytest-benchmark JSON that ``spbench report`` and
``spbench check`` read, one benchmark entry per finished trial (its ordinary spbench result),
plus one entry per configuration with its predicted figures (device ``predicted-cuda``, as
``benchmarks/test_memory.py`` writes them). Written atomically; rebuilt from the storage, so
it is never the only copy of anything.
"""

from __future__ import annotations

import json
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from spbench.sweep.setup import Setup
from spbench.sweep.trials import ATTR_CONFIG, ATTR_PREDICTED, ATTR_RESULT, ATTR_SEED, ATTR_UNIT, counted


def one_round_stats(seconds: float | None) -> dict[str, Any]:
    """pytest-benchmark's statistics of one round (the training time)."""
    from pytest_benchmark.stats import Stats

    stats = Stats()
    stats.update(float(seconds or 0.0))
    return stats.as_dict()


def machine_info() -> dict[str, Any]:
    """pytest-benchmark's machine description plus what the benchmarks' conftest adds."""
    from pytest_benchmark.plugin import pytest_benchmark_generate_machine_info

    import spbench
    from spbench.result import SCHEMA_VERSION

    info = pytest_benchmark_generate_machine_info()
    try:
        import torch
        import transformers

        info.update(torch_version=torch.__version__, transformers_version=transformers.__version__,
                    torch_threads=torch.get_num_threads())
    except ImportError:
        pass
    info.update(spbench_version=spbench.__version__, spbench_schema_version=SCHEMA_VERSION,
                python=platform.python_version())
    return info


def entries(study: Any) -> list[dict[str, Any]]:
    """Benchmark entries: every trial that holds a result (the first of each configuration and
    seed: two sweeps taking one run over at once may both store it), then each configuration's
    predictions."""
    out, predicted, units = [], {}, set()
    for t in sorted(counted(study), key=lambda t: t.number):
        info = t.user_attrs.get(ATTR_RESULT)
        unit = t.user_attrs.get(ATTR_UNIT, t.number)
        if info is None or unit in units:
            continue
        units.add(unit)
        seed = t.user_attrs.get(ATTR_SEED)
        params = {**t.params, "seed": seed}
        out.append({
            "group": study.study_name, "name": f"sweep[{info['case_id']}-seed{seed}]",
            "fullname": f"spbench sweep::{study.study_name}::trial{t.number}",
            "params": params, "param": f"trial{t.number}", "extra_info": info, "options": {},
            "stats": one_round_stats(info.get("train_time_s")),
        })
        config = t.user_attrs.get(ATTR_CONFIG)
        if t.user_attrs.get(ATTR_PREDICTED) and config not in predicted:
            predicted[config] = (t.params, t.user_attrs[ATTR_PREDICTED])
    for params, info in predicted.values():
        info = current_prediction(info)
        out.append({"group": study.study_name, "name": f"predicted[{info['case_id']}]",
                    "fullname": f"spbench sweep::{study.study_name}::predicted", "params": dict(params),
                    "param": "predicted", "extra_info": info, "options": {}, "stats": one_round_stats(0.0)})
    return out


def current_prediction(info: dict[str, Any]) -> dict[str, Any]:
    """A configuration's predicted figures as this spbench predicts them. They are deterministic
    figures of the case and the code, not of a trial's run: a study whose trials predicted them
    under an older schema, one that gave them another meaning (``spbench.result.SCHEMA_CHANGES``),
    gets them predicted again, so its document reports beside newer ones. Kept as stored when the
    case no longer predicts (an error is never the document's end)."""
    from spbench.result import METRICS, SCHEMA_VERSION, Result, meaning
    from spbench.sweep.trials import predicted_info

    version = int(info.get("schema_version", SCHEMA_VERSION))
    if all(meaning(k, version) == meaning(k, SCHEMA_VERSION) for k in info if k in METRICS):
        return info
    import dataclasses

    from spbench import methods
    from spbench.sweep.setup import _text

    try:
        case = Result.from_extra_info(info).case
        defaults = _as_json(methods.get(case.method)().config())
        given = _as_json(info.get("method_config") or {})
        case = dataclasses.replace(case, overrides=tuple(sorted(
            (k, _text(v)) for k, v in given.items() if defaults.get(k) != v)))
        if _as_json(case.method_config()) != given:  # not the configuration it was: keep what was stored
            return info
        return predicted_info(case)
    except (RuntimeError, ValueError, NotImplementedError):
        return info


def _as_json(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def document(study: Any, setup: Setup) -> dict[str, Any]:
    from pytest_benchmark import __version__
    from pytest_benchmark.utils import get_commit_info

    return {"machine_info": machine_info(), "commit_info": get_commit_info(),
            "benchmarks": entries(study), "datetime": datetime.now(timezone.utc).isoformat(),
            "version": __version__, "spbench_sweep": {"study": study.study_name, **setup.describe()}}


def write(study: Any, setup: Setup, path: str | Path) -> int:
    """Write the study's document to ``path`` atomically; returns the number of trial results."""
    from spbench.reporting.results import write_atomic

    doc = document(study, setup)
    write_atomic(path, json.dumps(doc, indent=2, default=str) + "\n")
    return sum(1 for b in doc["benchmarks"] if b["param"] != "predicted")
