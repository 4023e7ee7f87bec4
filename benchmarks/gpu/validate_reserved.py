"""The predicted reserved bytes and device total against every committed H100 measurement.

    PYTHONPATH=. python benchmarks/gpu/validate_reserved.py [--output reports/gpu/h100/reserved-error.md]

Each measured case of ``reports/gpu/h100/measured-cuda.json`` is predicted at the
configuration it was measured with (``validate_h100.case_of``), with every CUDA emulation
feature on. Its step's allocation trace is replayed by the simulated caching allocator
(``spbench.measure.allocator``): reserved is compared with ``max_memory_reserved``
(``reserved_peak_bytes``), the device total (reserved + the card's context constant) with
NVML's used bytes, the allocated peak with ``max_memory_allocated``. Nothing is fitted to the
measurements but the context constant, whose derivation ``allocator.CONTEXT_BYTES`` states.
Rows are also appended to ``--rows`` (JSON lines) as they come, so a partial run keeps them.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from tabulate import tabulate

sys.path.insert(0, str(Path(__file__).resolve().parent))
from validate_h100 import MIB, base_parser, case_of, err, error_summary, measured_cases  # noqa: E402

from spbench.case import build  # noqa: E402
from spbench.measure.allocator import CONTEXT_BYTES, simulate  # noqa: E402
from spbench.measure.predict import predict_built  # noqa: E402
from spbench.measure.trace import Trace  # noqa: E402

KEYS = (("allocated", "peak_bytes"), ("reserved", "reserved_peak_bytes"), ("device", "nvml_used_bytes"))


def predict_row(info: dict[str, Any]) -> dict[str, Any] | str:
    case, why = case_of(info)
    if case is None:
        return f"- `{info['case_id']}`: {why}"
    built = build(case, meta=True)
    traces: list[Trace] = []
    metrics = predict_built(built, traces=traces)
    expandable = simulate(traces[0].events, expandable=True, start=traces[0].step_start)
    return {"case": info["case_id"], "dtype": info["dtype"],
            "measured": {key: info.get(field) for key, field in KEYS},
            "predicted": {"allocated": metrics["predicted_cuda_peak_bytes"],
                          "reserved": metrics["predicted_cuda_reserved_bytes"],
                          "device": metrics["predicted_cuda_device_bytes"]},
            "expandable_reserved": expandable.peak_reserved}


def _summary(rows: list[dict[str, Any]]) -> list[list[str]]:
    return error_summary(rows, [(lambda r, k=k: r["predicted"][k], lambda r, k=k: r["measured"][k]) for k, _ in KEYS],
                         2)


def render(rows: list[dict[str, Any]], skipped: list[str]) -> str:
    table = []
    for r in rows:
        m, p = r["measured"], r["predicted"]
        line = [r["case"]]
        for key, _ in KEYS:
            line += [f"{m[key] / MIB:,.1f}" if m[key] else "", f"{p[key] / MIB:,.1f}",
                     f"{err(p[key], m[key]):+.2f}" if m[key] else ""]
        line.append(f"{r['expandable_reserved'] / MIB:,.1f}")
        table.append(line)
    headers = ["case"] + [f"{key} {what}" for key, _ in KEYS for what in ("measured MiB", "predicted MiB", "%")]
    lines = [
        "# H100: measured vs predicted reserved bytes and device total",
        "",
        "Measured (`measured-cuda.json`): `max_memory_allocated` (allocated), `max_memory_reserved` "
        "(reserved) and NVML's used bytes of the process (device) over one case. Predicted today at the "
        "measured configuration: the step's allocation trace (parameters, batch, warm-up step, measured "
        "step) replayed by the simulated caching allocator (`spbench/measure/allocator.py`, default "
        f"settings); device = reserved + {CONTEXT_BYTES['h100'] / MIB:,.0f} MiB, the h100 context constant "
        "(the median NVML minus reserved of these cases: the one figure taken from the measurements). "
        "*expandable*: the reserved bytes predicted under `expandable_segments:True` (not measured). "
        "error % = (predicted - measured) / measured. Written by `benchmarks/gpu/validate_reserved.py`.",
        "",
        tabulate(table, headers=headers + ["expandable MiB"], tablefmt="github", disable_numparse=True),
        "",
        "Median absolute and worst error, %:",
        "",
        tabulate(_summary(rows), headers=["dtype", "cases", "allocated median", "allocated worst",
                                           "reserved median", "reserved worst", "device median", "device worst"],
                 tablefmt="github", disable_numparse=True),
        "",
    ]
    if skipped:
        lines += ["Not reproducible at today's code:", "", *skipped, ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__, "reserved-error.md")
    parser.add_argument("--rows", type=Path, default=None, help="append each row here (JSON lines)")
    parser.add_argument("--from-rows", type=Path, default=None, help="render these rows, predict nothing")
    ns = parser.parse_args(argv)
    rows: list[dict[str, Any]] = []
    skipped: list[str] = []
    if ns.from_rows:
        for line in ns.from_rows.read_text().splitlines():
            item = json.loads(line)
            (skipped.append if isinstance(item, str) else rows.append)(item)
    else:
        for info in measured_cases(ns.measured, ns.only):
            start = time.perf_counter()
            row = predict_row(info)
            (skipped.append if isinstance(row, str) else rows.append)(row)
            if ns.rows:
                with ns.rows.open("a") as fh:
                    fh.write(json.dumps(row) + "\n")
            if not isinstance(row, str):
                m, p = row["measured"], row["predicted"]
                print(f"{row['case']}: reserved {err(p['reserved'], m['reserved']):+.2f}%, "
                      f"allocated {err(p['allocated'], m['allocated']):+.2f}% "
                      f"({time.perf_counter() - start:.0f} s)", file=sys.stderr, flush=True)
    text = render(rows, skipped)
    ns.output.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
