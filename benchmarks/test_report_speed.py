"""``spbench report`` on many records: its time must grow linearly with the configurations.

    pytest benchmarks/test_report_speed.py --benchmark-json=report-speed.json
    pytest benchmarks/test_report_speed.py --report-records 2000      # another size

A synthetic benchmark JSON of ``--report-records`` records (default 10,000), shaped as a sweep
and a matrix leave them: per configuration (method, backbone, shape, lr, with and without
gradient checkpointing) one predicted record, one measured step and three seeds of an accuracy
run in a study. The timed target is the whole of ``spbench report FILE`` (reading, merging,
folding seeds, the overview and the studies' trial tables, Markdown), once per round, through
``benchmark.pedantic``: a long target is timed as it runs, never calibrated.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest

RECORDS_PER_CONFIG = 5  # predicted, measured step, three seeds
SEEDS = (0, 1, 2)
METHODS = ("full_ft", "lora", "lora_blocks")  # grad checkpointing applies to each
BACKBONES = ("distilbert-base", "roberta-base")
SHAPES = ((16, 128), (32, 64))


def synthetic_records(n: int) -> list[dict[str, Any]]:
    """``n`` records (rounded down to whole configurations) of distinct configurations."""
    from spbench.case import Case
    from spbench.result import PREDICTED, Result

    out: list[dict[str, Any]] = []
    combos = itertools.product(range(10**6), METHODS, BACKBONES, SHAPES, (False, True))
    for i, method, backbone, (batch, seq), gc in combos:
        if len(out) + RECORDS_PER_CONFIG > n:
            break
        lr = f"{1e-5 * (1 + i):.6g}"
        case = Case(method, backbone, batch, seq, grad_checkpointing=gc, overrides=(("lr", lr),))
        config = case.method_config()
        peak = 100_000_000 + 4_096 * i + (0 if gc else 7_000_000)

        def of(device: str | None = None, **kw: Any) -> dict[str, Any]:
            return Result.of(case, device, **kw).to_extra_info() | {"method_config": config}

        out.append(of(PREDICTED, metrics={"predicted_cuda_peak_bytes": peak, "params_trainable": 1000 + i}))
        out.append(of(metrics={"peak_bytes": peak + 1_000, "step_time_s": 0.5 + i * 1e-6}))
        study = f"{method}-{backbone}-b{batch}-s{seq}{'-gc' if gc else ''}"
        for seed in SEEDS:
            accuracy = 0.8 + (i % 97) / 1000 + seed / 10_000
            train = {"budget": "examples=6000", "seed": seed, "warmup": 0.06, "clip": 1.0, "eval_every": 0,
                     "max_len": seq, "group_by_length": True, "select_on": "validation"}
            sweep = {"study": study, "trial": i * len(SEEDS) + seed, "params": {"lr": float(lr)}, "seed": seed}
            out.append(of(metrics={"sst2_accuracy": accuracy, "sst2_f1": accuracy - 0.01, "val_accuracy": accuracy,
                                   "train_time_s": 60.0, "train_examples": 6000, "train_steps": 188},
                          train_config=train, notes={"sweep": sweep}))
    return out


@pytest.fixture
def records(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    n = int(request.config.getoption("--report-records"))
    infos = synthetic_records(n)
    path = tmp_path / "records.json"
    path.write_text(json.dumps({"benchmarks": [{"name": f"r{i}", "extra_info": info} for i, info in enumerate(infos)]}))
    return path


def test_report_speed(benchmark: Any, records: Path) -> None:
    from spbench.reporting.command import render, report_args

    text = benchmark.pedantic(render, args=(report_args([str(records)]),), rounds=1, iterations=1)
    doc = json.loads(records.read_text())
    configs = len(doc["benchmarks"]) // RECORDS_PER_CONFIG
    benchmark.extra_info.update({"records": len(doc["benchmarks"]), "configurations": configs})
    # every configuration is a row of the overview and every seed a row of its study's trial table
    assert text.count("\n| full_ft") + text.count("\n| lora") >= configs
    assert text.count("## study ") == len(METHODS) * len(BACKBONES) * len(SHAPES) * 2
