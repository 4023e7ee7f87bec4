"""``spbench check``: the CI memory gate against a committed baseline.

    pytest benchmarks/test_memory.py --benchmark-json=current.json
    spbench check current.json --baseline benchmarks/baselines/cpu-matrix.json [--tolerance 1%]
    spbench check current.json --baseline benchmarks/baselines/cpu-matrix.json --update

Only deterministic figures are gated (``deterministic=True`` in ``spbench.result.METRICS``:
the predicted CUDA peak and its breakdown, parameter counts, FLOPs): they are the same on every
machine, so a change is a change of the code, not noise. pytest-benchmark's own
``--benchmark-compare-fail`` only understands timings, which CI machines make noise of.

Cases are matched by ``case_id`` and ``schema_version``. Exit 1, with a table, when a figure got
worse (in its declared bad direction) by more than the tolerance, when a case failed, or when
a case or figure is missing on either side; improvements beyond the tolerance are printed as a
note (exit 0: run ``--update`` to lock them in). ``--update`` writes the baseline atomically,
keeping only what is gated, so its diff in a pull request shows exactly what changed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from dataclasses import dataclass, field
from typing import Any

from spbench.errors import InputError
from spbench.result import PREDICTED

GATED_DEVICE = PREDICTED


@dataclass
class Figures:
    """The deterministic figures of one case (and why it has none, if it failed)."""

    case_id: str
    metrics: dict[str, float] = field(default_factory=dict)
    failure: str = ""


@dataclass
class Outcome:
    regressions: list[tuple[str, str, Any, Any, str]] = field(default_factory=list)
    improvements: list[tuple[str, str, Any, Any, str]] = field(default_factory=list)
    new: list[tuple[str, str]] = field(default_factory=list)
    compared: int = 0

    @property
    def failed(self) -> bool:
        return bool(self.regressions)


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "check", help="CI gate: deterministic memory figures vs a committed baseline",
        description="Compare the deterministic figures (predicted CUDA peak and breakdown, parameter counts, "
                    "FLOPs) of CURRENT with BASELINE, case by case. Exit 1 on a regression or a missing case.")
    p.add_argument("current", metavar="CURRENT.json", help="pytest-benchmark JSON of this run")
    p.add_argument("--baseline", required=True, metavar="BASELINE.json", help="the committed baseline")
    p.add_argument("--tolerance", default="1%", help="relative slack, e.g. 1%%, 0.5%% or 0.01 (default: %(default)s)")
    p.add_argument("--update", action="store_true", help="write CURRENT's gated figures as the new baseline")
    p.set_defaults(func=cmd_check)


def parse_tolerance(text: str) -> float:
    raw = text.strip()
    try:
        value = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        raise InputError(f"--tolerance wants a percentage like 1% or a fraction like 0.01, not {text!r}") from None
    if not 0 <= value < 10:
        raise InputError(f"--tolerance {text!r} is out of range")
    return value


def gated(records: list[Any]) -> dict[tuple[str, int], Figures]:
    """Deterministic figures by (case_id, schema_version), from the records that hold them."""
    from spbench.result import METRICS

    out: dict[tuple[str, int], Figures] = {}
    for rec in records:
        res = rec.result
        figures = {k: v for k, v in res.metrics.items() if METRICS[k].deterministic}
        if res.device != GATED_DEVICE and not figures:
            continue  # a measured (timing) record: nothing deterministic in it
        entry = out.setdefault((rec.case_id, rec.schema_version), Figures(rec.case_id))
        for key, value in figures.items():
            if key in entry.metrics and entry.metrics[key] != value:
                raise InputError(f"{rec.source}: case {rec.case_id} has two values of {key}; one run per file")
            entry.metrics[key] = value
        if res.status != "ok":
            entry.failure = f"{res.status}: {res.reason or 'no reason recorded'}"
    return out


def _change(base: float, cur: float) -> float:
    if base == cur:
        return 0.0
    return float("inf") if base == 0 else (cur - base) / abs(base)


def _pct(change: float) -> str:
    return "new nonzero" if change == float("inf") else f"{change * 100:+.2f}%"


def compare(base: dict[tuple[str, int], Figures], cur: dict[tuple[str, int], Figures], tolerance: float) -> Outcome:
    from spbench.result import METRICS

    out = Outcome()
    for key in sorted(base.keys() | cur.keys()):
        case = key[0]
        if key not in cur:
            out.regressions.append((case, "(case)", "present", "missing", "missing in current"))
            continue
        if key not in base:
            out.regressions.append((case, "(case)", "missing", "present", "missing in baseline"))
            continue
        b, c = base[key], cur[key]
        if c.failure and not b.failure:
            out.regressions.append((case, "(status)", "ok", c.failure, "failed"))
            continue
        for metric in sorted(b.metrics.keys() | c.metrics.keys()):
            if metric not in c.metrics:
                out.regressions.append((case, metric, b.metrics[metric], "missing", "missing in current"))
                continue
            if metric not in b.metrics:
                out.new.append((case, metric))
                continue
            out.compared += 1
            bv, cv = b.metrics[metric], c.metrics[metric]
            change = _change(bv, cv)
            direction = METRICS[metric].higher_is_better
            worse = abs(change) if direction is None else -change if direction else change
            if worse > tolerance:
                out.regressions.append((case, metric, bv, cv, _pct(change)))
            elif worse < -tolerance:
                out.improvements.append((case, metric, bv, cv, _pct(change)))
    return out


def _table(rows: list[tuple[str, str, Any, Any, str]]) -> str:
    from tabulate import tabulate

    def num(v: Any) -> str:
        return f"{v:,}" if isinstance(v, (int, float)) else str(v)

    return tabulate([(c, m, num(b), num(v), ch) for c, m, b, v, ch in rows],
                    headers=["case", "figure", "baseline", "current", "change"], tablefmt="simple",
                    colalign=("left", "left", "right", "right", "right"), disable_numparse=True)


def baseline_document(doc: dict[str, Any], records: list[Any]) -> dict[str, Any]:
    """A pytest-benchmark-shaped JSON holding only the gated figures of ``records``."""
    from spbench.result import METRICS

    benchmarks = []
    for rec in sorted(records, key=lambda r: (r.case_id, r.name)):
        res = rec.result
        figures = {k: v for k, v in res.metrics.items() if METRICS[k].deterministic}
        if res.device != GATED_DEVICE and not figures:
            continue
        info = dataclasses.replace(res, metrics=figures, notes={}, train_config=None, stages=None,
                                   best_step=None).to_extra_info()
        benchmarks.append({"name": rec.name, "extra_info": info})
    machine = {k: v for k, v in (doc.get("machine_info") or {}).items()
               if k in ("spbench_version", "spbench_schema_version", "torch_version", "transformers_version")}
    return {"machine_info": {**machine, "note": "spbench check baseline: deterministic figures only"},
            "commit_info": {k: v for k, v in (doc.get("commit_info") or {}).items() if k in ("id", "branch", "dirty")},
            "datetime": doc.get("datetime", ""), "version": doc.get("version", ""), "benchmarks": benchmarks}


def cmd_check(args: argparse.Namespace) -> int:
    from pathlib import Path

    from spbench.reporting.results import load, read_json, schema_version, write_atomic

    tolerance = parse_tolerance(args.tolerance)
    _, cur_records = load([args.current])
    cur = gated(cur_records)
    if not cur:
        raise InputError(f"{args.current}: no deterministic figures (run benchmarks/test_memory.py)")
    if args.update and not Path(args.baseline).exists():
        base_records: list[Any] = []
    else:
        _, base_records = load([args.baseline])
        vb, vc = schema_version(base_records), schema_version(cur_records)
        if vb != vc and not args.update:
            raise InputError(f"baseline {args.baseline} has schema_version {vb}, {args.current} has {vc}: the "
                           "measuring code changed what the numbers mean; review, then rerun with --update")
    outcome = compare(gated(base_records), cur, tolerance) if base_records else Outcome()
    _print(outcome, tolerance, args)
    if args.update:
        doc = baseline_document(read_json(args.current), cur_records)
        write_atomic(args.baseline, json.dumps(doc, indent=2) + "\n")
        print(f"wrote {args.baseline} ({len(doc['benchmarks'])} records)")
        return 0
    return 1 if outcome.failed else 0


def _print(outcome: Outcome, tolerance: float, args: argparse.Namespace) -> None:
    tol = f"{tolerance * 100:g}%"
    if outcome.regressions:
        print(f"REGRESSIONS vs {args.baseline} (worse by more than {tol}, failed, or missing):")
        print(_table(outcome.regressions))
    if outcome.improvements:
        print(f"note: improved by more than {tol} (run with --update to lock in):")
        print(_table(outcome.improvements))
    if outcome.new:
        print(f"note: {len(outcome.new)} figure(s) not in the baseline, not gated: "
              + ", ".join(f"{c} {m}" for c, m in outcome.new[:5]) + (" ..." if len(outcome.new) > 5 else ""))
    if not outcome.failed:
        print(f"ok: {outcome.compared} figures compared, none worse by more than {tol}")
    else:
        print(f"FAILED: {len(outcome.regressions)} problem(s)", file=sys.stderr)
