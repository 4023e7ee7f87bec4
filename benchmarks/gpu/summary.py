"""Measured vs predicted peak memory, per case, from the pytest-benchmark JSONs of a run.

    python benchmarks/gpu/summary.py OUT/*.json --output OUT/gpu-report.md

error % = (predicted - measured) / measured, per case; the summary gives the worst case and
the median absolute error. Cases skipped for the time budget or failed are listed, not hidden.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

from tabulate import tabulate

from spbench.errors import InputError
from spbench.reporting.results import read_json
from spbench.result import PREDICTED


def _mib(n: float | None) -> str:
    return "" if n is None else f"{n / 2**20:,.1f}"


def load(paths: list[str]) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]], dict[str, Any]]:
    measured: dict[str, dict[str, Any]] = {}
    predicted: dict[str, dict[str, Any]] = {}
    machine: dict[str, Any] = {}
    for path in paths:
        try:
            data = read_json(path)
        except InputError as exc:  # e.g. a shard that ran no case: say so, use the rest
            print(f"skipping {exc}", file=sys.stderr)
            continue
        machine = machine or data.get("machine_info", {})
        for bench in data["benchmarks"]:
            info = bench.get("extra_info", {})
            case = info.get("case_id")
            if not case:
                continue
            (predicted if info.get("device") == PREDICTED else measured)[case] = info
    return measured, predicted, machine


def render(measured: dict[str, dict[str, Any]], predicted: dict[str, dict[str, Any]],
           machine: dict[str, Any]) -> tuple[str, list[float]]:
    rows, errors, notes = [], [], []
    for case in sorted(set(measured) | set(predicted)):
        m, p = measured.get(case), predicted.get(case)
        if m is None or m.get("status", "ok") != "ok" or "peak_bytes" not in m:
            notes.append(f"- `{case}`: measured {'not run (budget or not planned)' if m is None else m.get('status')}"
                         f"{': ' + m['reason'] if m and m.get('reason') else ''}")
            continue
        pred = p.get("predicted_cuda_peak_bytes") if p and p.get("status", "ok") == "ok" else None
        err = None if pred is None else 100.0 * (pred - m["peak_bytes"]) / m["peak_bytes"]
        if err is not None:
            errors.append(err)
        else:
            notes.append(f"- `{case}`: no prediction ({'its shard passed the time budget' if p is None else p.get('status')})")
        rows.append([case, _mib(m["peak_bytes"]), _mib(pred), "" if err is None else f"{err:+.1f}",
                     _mib(m.get("reserved_peak_bytes")), _mib(m.get("nvml_used_bytes")),
                     f"{1000 * m['step_time_s']:.1f}" if "step_time_s" in m else ""])
    headers = ["case", "measured peak MiB", "predicted MiB", "error %", "reserved MiB", "NVML used MiB",
               "step ms (median)"]
    lines = [
        "# Measured vs predicted CUDA peak memory",
        "",
        f"GPU: {machine.get('gpu_name', 'none')}, torch {machine.get('torch_version', '?')}, "
        f"CUDA {machine.get('cuda_version', '-')}, transformers {machine.get('transformers_version', '?')}, "
        f"spbench schema {machine.get('spbench_schema_version', '?')}.",
        "Measured: `max_memory_allocated` of one steady-state step after a warm-up and a reset. "
        "Predicted: the same step on fake tensors with CUDA's kernels and allocator rounding emulated, "
        "computed in the same run.",
        "",
        tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True),
        "",
    ]
    if errors:
        worst = max(errors, key=abs)
        lines += [f"Cases compared: {len(errors)}; median absolute error "
                  f"{statistics.median(abs(e) for e in errors):.1f}%; worst {worst:+.1f}%.", ""]
    if notes:
        lines += ["Not compared:", *notes, ""]
    return "\n".join(lines), errors


def main(paths: list[str], output: Path | None = None) -> int:
    measured, predicted, machine = load(paths)
    if not measured and not predicted:
        print("no results found in " + ", ".join(paths), file=sys.stderr)
        return 1
    text, _ = render(measured, predicted, machine)
    if output is not None:
        tmp = output.with_suffix(output.suffix + ".partial")
        tmp.write_text(text)
        tmp.replace(output)
    print(text)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("json", nargs="+")
    parser.add_argument("--output", type=Path)
    ns = parser.parse_args()
    sys.exit(main(ns.json, ns.output))
