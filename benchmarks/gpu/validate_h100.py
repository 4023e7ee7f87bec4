"""Today's prediction against every committed H100 measurement, with and without the CUDA
emulation features of ``spbench.measure.cuda.FEATURES`` (dropout, autocast).

    PYTHONPATH=. python benchmarks/gpu/validate_h100.py [--output reports/gpu/h100/allocated-error.md]

Each measured case of ``reports/gpu/h100/measured-cuda.json`` is predicted at the
configuration it was measured with: its recorded ``method_config`` becomes ``--set``
overrides, translated where a default's meaning moved since (``THEN``). A recorded key the
method no longer has makes the case not reproducible (listed, with the key). "before" leaves
every feature of ``FEATURES`` at CPU's behaviour, "after" emulates them all; the prediction
committed beside the measurement (``predicted-*.json``, same run) is shown as a check that
"before" still reproduces it. Nothing here is fitted to the measurements.
"""

from __future__ import annotations

import argparse
import glob
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from tabulate import tabulate

from spbench import methods
from spbench.case import Case, build
from spbench.measure.cuda import FEATURES
from spbench.measure.predict import predict_built

HERE = Path(__file__).resolve().parents[2] / "reports" / "gpu" / "h100"
MIB = 2**20

# Recorded values whose meaning moved since the measurement, as today's values: empty LoRA
# targets then meant the architecture's query/value (now the token "qv").
THEN: dict[str, dict[Any, Any]] = {"targets": {(): "qv"}}
# Hyperparameters added since, set to what the measured code did: k-LST then was the
# per-position fusion with LST's gate (kept as fusion=position; the default is now another).
THEN_ADDED: dict[str, dict[str, str]] = {"klst": {"fusion": "position"}}


def _as_set(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def overrides_of(method: str, recorded: dict[str, Any]) -> tuple[tuple[tuple[str, str], ...], str | None]:
    """(--set pairs reproducing ``recorded``, None), or ((), why it cannot be reproduced)."""
    cls = methods.get(method)
    default = cls.from_overrides({}).config()
    out = dict(THEN_ADDED.get(method, {}))
    for key, value in recorded.items():
        if key not in default:
            return (), f"`{key}` (recorded {value!r}) is no longer a {method} hyperparameter"
        value = tuple(value) if isinstance(value, list) else value
        value = THEN.get(key, {}).get(value, value)
        if value != default[key]:
            out[key] = _as_set(value)
    return tuple(sorted(out.items())), None


def case_of(info: dict[str, Any]) -> tuple[Case | None, str | None]:
    overrides, why = overrides_of(info["method"], info.get("method_config", {}))
    if why:
        return None, why
    return Case(info["method"], info["backbone"], info["batch_size"], info["seq_len"],
                objective=info.get("objective", "classification"), dtype=info["dtype"],
                overrides=overrides), None


def predicted_then() -> dict[str, int]:
    """The predictions committed with the measurement (same run), by case id."""
    out: dict[str, int] = {}
    for path in sorted(glob.glob(str(HERE / "predicted-*.json"))):
        for bench in json.loads(Path(path).read_text())["benchmarks"]:
            info = bench.get("extra_info", {})
            if info.get("status", "ok") == "ok" and "predicted_cuda_peak_bytes" in info:
                out[info["case_id"]] = info["predicted_cuda_peak_bytes"]
    return out


def predict_peak(case: Case, skip: tuple[str, ...]) -> int:
    built = build(case, meta=True)
    return int(predict_built(built, skip=skip)["predicted_cuda_peak_bytes"])


def err(pred: int, measured: int) -> float:
    """Signed error of a prediction, in % of the measurement."""
    return 100.0 * (pred - measured) / measured


def error_summary(rows: list[dict[str, Any]], pairs: list[tuple[Any, Any]], decimals: int) -> list[list[str]]:
    """Per dtype and over all rows: the count, then for each (predicted, measured) getter pair the
    median absolute error and the worst error in % (rows whose measurement is missing left out)."""
    out = []
    for dtype in [*sorted({r["dtype"] for r in rows}), "all"]:
        group = [r for r in rows if dtype in ("all", r["dtype"])]
        line = [dtype, str(len(group))]
        for predicted, measured in pairs:
            errs = [err(predicted(r), measured(r)) for r in group if measured(r)]
            line += ([f"{statistics.median(abs(e) for e in errs):.{decimals}f}", f"{max(errs, key=abs):+.{decimals}f}"]
                     if errs else ["", ""])
        out.append(line)
    return out


def _summary(rows: list[dict[str, Any]]) -> list[list[str]]:
    return error_summary(rows, [(lambda r, k=k: r[k], lambda r: r["measured"]) for k in ("before", "after")], 1)


def render(rows: list[dict[str, Any]], skipped: list[str]) -> str:
    table = [[r["case"], f"{r['measured'] / MIB:,.1f}",
              "" if r["then"] is None else f"{r['then'] / MIB:,.1f}",
              f"{r['before'] / MIB:,.1f}", f"{err(r['before'], r['measured']):+.1f}",
              f"{r['after'] / MIB:,.1f}", f"{err(r['after'], r['measured']):+.1f}",
              " ".join(f"{k}={v}" for k, v in r["overrides"])] for r in rows]
    lines = [
        "# H100: measured vs predicted allocated peak, with and without CUDA's emulated choices",
        "",
        "Measured: `max_memory_allocated` of one steady-state step (`measured-cuda.json`). Predicted "
        f"today, at the measured configuration. *before*: without the emulation of {', '.join(FEATURES)} "
        "(CPU's behaviour there); *after*: with it. *then*: the prediction committed with the measurement. "
        "error % = (predicted - measured) / measured. Written by `benchmarks/gpu/validate_h100.py`.",
        "",
        tabulate(table, headers=["case", "measured MiB", "then MiB", "before MiB", "before %",
                                 "after MiB", "after %", "--set"],
                 tablefmt="github", disable_numparse=True),
        "",
        "Median absolute and worst error, %:",
        "",
        tabulate(_summary(rows), headers=["dtype", "cases", "before median", "before worst",
                                           "after median", "after worst"],
                 tablefmt="github", disable_numparse=True),
        "",
    ]
    moved = [f"- `{r['case']}`: {(r['before'] - r['then']) / MIB:+,.1f} MiB ({err(r['before'], r['then']):+.2f}%)"
             for r in rows if r["then"] is not None and r["then"] != r["before"]]
    with_then = sum(r["then"] is not None for r in rows)
    lines += [f"*before* equals *then* to the byte for {with_then - len(moved)} of the {with_then} cases "
              "predicted in the measured run" + ("; it differs (today's code of the method is not exactly "
                                                  "the measured one) for:" if moved else "."), "", *moved, ""]
    if skipped:
        lines += ["Not reproducible at today's code:", "", *skipped, ""]
    return "\n".join(lines)


def base_parser(doc: str | None, output: str) -> argparse.ArgumentParser:
    """The options every validation script shares: the measured run, the table, a case filter."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--measured", type=Path, default=HERE / "measured-cuda.json")
    parser.add_argument("--output", type=Path, default=HERE / output)
    parser.add_argument("--only", default="", help="predict only case ids containing this")
    return parser


def measured_cases(path: Path, only: str) -> list[dict[str, Any]]:
    """The ``extra_info`` of every measured case that ran (whose id contains ``only``)."""
    infos = [bench["extra_info"] for bench in json.loads(path.read_text())["benchmarks"]]
    return [i for i in infos if i.get("status", "ok") == "ok" and only in i["case_id"]]


def main(argv: list[str] | None = None) -> int:
    ns = base_parser(__doc__, "allocated-error.md").parse_args(argv)
    then = predicted_then()
    rows: list[dict[str, Any]] = []
    skipped: list[str] = []
    for info in measured_cases(ns.measured, ns.only):
        case, why = case_of(info)
        if case is None:
            skipped.append(f"- `{info['case_id']}`: {why}")
            continue
        start = time.perf_counter()
        row = {"case": info["case_id"], "dtype": info["dtype"], "measured": info["peak_bytes"],
               "then": then.get(info["case_id"]), "overrides": case.overrides,
               "before": predict_peak(case, FEATURES), "after": predict_peak(case, ())}
        rows.append(row)
        print(f"{row['case']}: measured {row['measured'] / MIB:,.1f}, "
              f"before {err(row['before'], row['measured']):+.1f}%, "
              f"after {err(row['after'], row['measured']):+.1f}% ({time.perf_counter() - start:.0f} s)",
              file=sys.stderr, flush=True)
    text = render(rows, skipped)
    ns.output.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
