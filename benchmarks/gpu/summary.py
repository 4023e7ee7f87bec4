"""Measured vs predicted memory, per case, from the pytest-benchmark JSONs of a run.

    python benchmarks/gpu/summary.py OUT/*.json --output OUT/gpu-report.md

The table of ``spbench report`` (:mod:`spbench.reporting.prediction`): per case, allocated,
reserved and device total, measured and predicted with the error of each, then the median
absolute and the worst error per figure. Unlike ``spbench report``, a file that ran no case (a
prediction shard stopped by the time budget) is skipped with a line, and cases measured but not
predicted are listed, not hidden.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from tabulate import tabulate

from spbench.errors import InputError
from spbench.reporting.prediction import prediction_tables
from spbench.reporting.results import read_json, records_of, write_atomic


def load(paths: list[str]) -> tuple[list[Any], dict[str, Any]]:
    records: list[Any] = []
    machine: dict[str, Any] = {}
    for path in paths:
        try:
            doc = read_json(path)
            records += records_of(doc, path)
        except InputError as exc:  # e.g. a shard that ran no case: say so, use the rest
            print(f"skipping {exc}", file=sys.stderr)
            continue
        if doc.get("machine_info", {}).get("gpu_name") or not machine:
            machine = doc.get("machine_info", {})
    return records, machine


def render(records: list[Any], machine: dict[str, Any]) -> str:
    lines = [
        "# Measured vs predicted CUDA memory",
        "",
        f"GPU: {machine.get('gpu_name', 'none')}, torch {machine.get('torch_version', '?')}, "
        f"CUDA {machine.get('cuda_version', '-')}, transformers {machine.get('transformers_version', '?')}, "
        f"spbench schema {machine.get('spbench_schema_version', '?')}.",
        "Measured: `max_memory_allocated` / `max_memory_reserved` of one steady-state step after a warm-up "
        "and a reset, and NVML's memory used by the process. Predicted: the same step on fake tensors with "
        "CUDA's kernels and caching allocator emulated, computed in the same run.",
        "",
    ]
    for table in prediction_tables(records, measured_on=lambda device: True):  # --device cpu: a dry run
        lines += [tabulate(table.rows, headers=table.headers, tablefmt="github", colalign=table.align,
                           disable_numparse=True), "", *(f"- {n}" for n in table.notes), ""]
    return "\n".join(lines)


def main(paths: list[str], output: Path | None = None) -> int:
    records, machine = load(paths)
    if not records:
        print("no results found in " + ", ".join(paths), file=sys.stderr)
        return 1
    text = render(records, machine)
    if output is not None:
        write_atomic(output, text)
    print(text)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("json", nargs="+")
    parser.add_argument("--output", type=Path)
    ns = parser.parse_args()
    sys.exit(main(ns.json, ns.output))
