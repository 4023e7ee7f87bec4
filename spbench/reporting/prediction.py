"""Measured vs predicted: every case measured on a CUDA device beside its prediction.

When a report's files hold both a case's measured CUDA step (``spbench run --device cuda``,
``pytest benchmarks/test_step.py --device cuda``) and its prediction (the ``predicted-cuda``
entry of ``benchmarks/test_memory.py``, made in the same run), the report gains one table:
per case, per figure, the measured and predicted MiB and the error
``(predicted - measured) / measured``, then per figure the number of cases, the median
absolute error and the worst error. The figures:

- allocated: ``max_memory_allocated`` of a steady-state step vs the fake-tensor step;
- reserved: ``max_memory_reserved`` vs the caching-allocator simulation of that step;
- device total: NVML's memory used by the process (the CUDA context included) vs reserved
  plus the card's context.

A measured case without its prediction (or the reverse) is listed, never dropped silently.
"""

from __future__ import annotations

import statistics
from typing import Any, Callable, Iterable

from spbench.reporting.tables import Table
from spbench.result import PREDICTED

# (name, measured key, predicted key)
FIGURES = (
    ("allocated", "peak_bytes", "predicted_cuda_peak_bytes"),
    ("reserved", "reserved_peak_bytes", "predicted_cuda_reserved_bytes"),
    ("device total", "nvml_used_bytes", "predicted_cuda_device_bytes"),
)


def error(predicted: float, measured: float) -> float:
    """Signed relative error of a prediction, in percent of the measured figure."""
    return 100.0 * (predicted - measured) / measured


def _mib(n: float | None) -> str:
    return "" if n is None else f"{n / 2**20:,.1f}"


def on_cuda(device: str) -> bool:
    return device.startswith("cuda")


def pairs(records: Iterable[Any], measured_on: Callable[[str], bool] = on_cuda,
          ) -> tuple[list[tuple[str, dict[str, float], dict[str, float]]], list[str]]:
    """``([(case_id, measured metrics, predicted metrics)], notes)`` for every case measured on
    a device that ``measured_on`` accepts (a CUDA device: a CPU's tracked peak is no CUDA
    figure, except in a dry run); the notes name cases measured without prediction, or not
    measured successfully."""
    measured: dict[str, Any] = {}
    predicted: dict[str, Any] = {}
    for rec in records:
        res = rec.result
        if res.device == PREDICTED:
            predicted[res.case_id] = res
        elif measured_on(str(res.device or "")):
            measured[res.case_id] = res
    out, notes = [], []
    for case in sorted(measured):
        m, p = measured[case], predicted.get(case)
        if m.status != "ok" or "peak_bytes" not in m.metrics:
            notes.append(f"`{case}`: measured {m.status}" + (f" ({m.reason})" if m.reason else ""))
        elif p is None or p.status != "ok":
            notes.append(f"`{case}`: no prediction in these files" + ("" if p is None else f" ({p.status})"))
        else:
            out.append((case, m.metrics, p.metrics))
    return out, notes


def summary(rows: list[tuple[str, dict[str, float], dict[str, float]]]) -> list[str]:
    """One line per figure: cases compared, median absolute error, worst error (signed)."""
    lines = []
    for name, mkey, pkey in FIGURES:
        errors = [error(p[pkey], m[mkey]) for _, m, p in rows if m.get(mkey) and p.get(pkey) is not None]
        if errors:
            worst = max(errors, key=abs)
            lines.append(f"{name}: {len(errors)} case(s), median absolute error "
                         f"{statistics.median(abs(e) for e in errors):.1f}%, worst {worst:+.1f}%")
    return lines


def prediction_tables(records: Iterable[Any], measured_on: Callable[[str], bool] = on_cuda) -> list[Table]:
    """The measured-vs-predicted table, or nothing when no case was measured on CUDA."""
    rows, notes = pairs(records, measured_on)
    if not rows and not notes:
        return []
    headers = ["case", *(f"{name}: measured / predicted MiB (error)" for name, _, _ in FIGURES)]
    cells = []
    for case, m, p in rows:
        line = [case]
        for _, mkey, pkey in FIGURES:
            mv, pv = m.get(mkey), p.get(pkey)
            line.append("" if mv is None and pv is None else f"{_mib(mv) or '?'} / {_mib(pv) or '?'}"
                        + (f" ({error(pv, mv):+.1f}%)" if mv and pv is not None else ""))
        cells.append(line)
    return [Table("Measured vs predicted CUDA memory", headers, cells, ["left"] + ["right"] * len(FIGURES),
                  [*summary(rows), *("not compared: " + n for n in notes)])]
