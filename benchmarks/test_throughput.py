"""SST-2 training throughput with and without length grouping, measured in the same run.

    pytest benchmarks/test_throughput.py -m throughput --sst2-dir ../shared/data/sst2 \\
        --benchmark-json=out/throughput.json -s           # full_ft and lst, minilm-l6, 32 x 64

A training batch is padded to its own longest row, so a batch of one long and 31 short
sentences costs as much as 32 long ones. ``spbench.train.batches`` groups rows by length with
transformers' ``LengthGroupedSampler`` (on by default); this benchmark trains the same method
on the same data for one mega-batch (50 steps: a representative mix of lengths), once with a
plain permutation and once grouped, and records both examples/s, their ratio, and the token
positions each processed (real tokens vs. padded batch area). Seconds-long targets belong here,
not in timed unit tests; the ratio is what to read on a shared machine.
"""

from __future__ import annotations

import time
from itertools import islice
from typing import Any

import pytest
from record import guarded, record

from spbench.case import Case
from spbench.result import Result

pytestmark = pytest.mark.throughput
STEPS = 50  # one LengthGroupedSampler mega-batch (50 batches)
SHAPE = (32, 64)  # batch size x max length, as the accuracy cases


def _rows(case: Case, sst2_dir: str | None) -> tuple[list[dict[str, Any]], int]:
    from spbench import backbones, objectives
    from spbench.data import encode_sst2, load_sst2

    tokenizer = backbones.load(case.backbone).tokenizer
    rows = encode_sst2(load_sst2(sst2_dir)["train"], tokenizer, objectives.get(case.objective), case.seq_len)
    return rows, int(tokenizer.pad_token_id or 0)


def _train(case: Case, rows: list[dict[str, Any]], pad_id: int, grouped: bool) -> dict[str, Any]:
    from spbench.case import build
    from spbench.train import Budget, batches, fit

    built = build(case)
    res = fit(built.method, built.model, built.objective, rows, None, Budget(steps=STEPS),
              batch_size=case.batch_size, seed=0, pad_id=pad_id, progress=False, measure_peak=False,
              group_by_length=grouped)
    if res.status != "ok":
        raise RuntimeError(res.reason)
    seen = list(islice(batches(rows, case.batch_size, pad_id, 0, grouped), STEPS))  # the same batches again
    return {"examples_per_s": res.train_examples / res.train_time_s, "train_time_s": res.train_time_s,
            "batch_positions": sum(b["input_ids"].numel() for b in seen),
            "real_tokens": sum(int(b["attention_mask"].sum()) for b in seen)}


@pytest.mark.parametrize("method", ["full_ft", "lst"])
def test_length_grouping_throughput(benchmark: Any, method: str, request: Any) -> None:
    config = request.config
    if "throughput" not in (config.getoption("-m") or ""):
        pytest.skip("throughput benchmark (minutes): run with -m throughput")
    case = Case(method, "minilm-l6", *SHAPE)

    def body() -> None:
        rows, pad_id = _rows(case, config.getoption("--sst2-dir"))
        plain = _train(case, rows, pad_id, grouped=False)
        out: dict[str, dict[str, Any]] = {}
        started = time.perf_counter()
        benchmark.pedantic(lambda: out.update(grouped=_train(case, rows, pad_id, grouped=True)),
                           rounds=1, warmup_rounds=0, iterations=1)
        grouped = out["grouped"]
        ratio = grouped["examples_per_s"] / plain["examples_per_s"]
        figures = {
            "examples_per_s_plain": round(plain["examples_per_s"], 2),
            "examples_per_s_grouped": round(grouped["examples_per_s"], 2),
            "throughput_ratio_grouped_over_plain": round(ratio, 3),
            "batch_positions_plain": plain["batch_positions"], "batch_positions_grouped": grouped["batch_positions"],
            "real_tokens_plain": plain["real_tokens"], "real_tokens_grouped": grouped["real_tokens"],
            "throughput_steps": STEPS,
        }
        record(benchmark, Result.of(case, "cpu", metrics={"train_time_s": grouped["train_time_s"]}, notes=figures))
        print(f"\n{case.id}: {plain['examples_per_s']:.1f} ex/s plain, {grouped['examples_per_s']:.1f} ex/s "
              f"grouped ({ratio:.2f}x); padded positions {plain['batch_positions']:,} -> "
              f"{grouped['batch_positions']:,} (real tokens {plain['real_tokens']:,} / {grouped['real_tokens']:,}) "
              f"(wall {time.perf_counter() - started:.0f} s)")

    guarded(benchmark, case, "cpu", body)
