"""``spbench check``: the CI memory gate against a committed baseline.

    pytest benchmarks/test_memory.py --benchmark-json=current.json
    spbench check current.json --baseline benchmarks/baselines/cpu-matrix.json [--tolerance 1%]
    spbench check current.json --baseline benchmarks/baselines/cpu-matrix.json --update

Only deterministic figures are gated (``deterministic=True`` in ``spbench.result.METRICS``:
the predicted CUDA peak and its breakdown, parameter counts, FLOPs): they are the same on every
machine, so a change is a change of the code, not noise. pytest-benchmark's own
``--benchmark-compare-fail`` only understands timings, which CI machines make noise of.

Cases are matched by ``case_id`` and the schema version of their figures' meaning; a baseline
whose figures meant something else (``spbench.result.SCHEMA_CHANGES``) is refused. Exit 1, with a table, when a figure got
worse (in its declared bad direction) by more than the tolerance, when a case failed, when a
figure is NaN or infinite on either side, or when a case or figure is missing on either side;
improvements beyond the tolerance are printed as a note (exit 0: run ``--update`` to lock them
in). ``--update`` writes the baseline atomically, keeping only what is gated, so its diff in a
pull request shows exactly what changed; it refuses (exit 1, baseline untouched) to lock in a
failed case or a figure that is not a finite number. Every failure exits non-zero.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
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
    """Deterministic figures by (case_id, the version of their meaning), from the records that hold them."""
    from spbench.result import METRICS, meaning

    out: dict[tuple[str, int], Figures] = {}
    for rec in records:
        res = rec.result
        figures = {k: v for k, v in res.metrics.items() if METRICS[k].deterministic}
        if res.device != GATED_DEVICE and not figures:
            continue  # a measured (timing) record: nothing deterministic in it
        version = max((meaning(k, res.schema_version) for k in figures), default=res.schema_version)
        entry = out.setdefault((rec.case_id, version), Figures(rec.case_id))
        for key, value in figures.items():
            if key in entry.metrics and entry.metrics[key] != value:
                raise InputError(f"{rec.source}: case {rec.case_id} has two values of {key}; one run per file")
            entry.metrics[key] = value
        if res.status != "ok":
            entry.failure = f"{res.status}: {res.reason or 'no reason recorded'}"
    return out


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def own_failures(figures: dict[tuple[str, int], Figures]) -> list[tuple[str, str, Any, Any, str]]:
    """What is wrong with one side on its own: failed cases and figures that are not finite numbers."""
    rows = []
    for (case, _), entry in sorted(figures.items()):
        if entry.failure:
            rows.append((case, "(status)", "", entry.failure, "failed"))
        rows += [(case, metric, "", value, "not a finite number")
                 for metric, value in sorted(entry.metrics.items()) if not _finite(value)]
    return rows


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
        if c.failure:  # failed in the baseline too is no excuse: a failure never passes
            out.regressions.append((case, "(status)", b.failure or "ok", c.failure, "failed"))
            continue
        for metric in sorted(b.metrics.keys() | c.metrics.keys()):
            if metric not in c.metrics:
                out.regressions.append((case, metric, b.metrics[metric], "missing", "missing in current"))
                continue
            if metric not in b.metrics:
                out.regressions.append((case, metric, "missing", c.metrics[metric], "missing in baseline"))
                continue
            out.compared += 1
            bv, cv = b.metrics[metric], c.metrics[metric]
            if not (_finite(bv) and _finite(cv)):  # NaN compares false both ways: never "ok"
                side = "current" if _finite(bv) else "baseline" if _finite(cv) else "both"
                out.regressions.append((case, metric, bv, cv, f"not a finite number ({side})"))
                continue
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
    from spbench.reporting.results import load, refuse_overwriting
    from spbench.result import mixed_meanings

    tolerance = parse_tolerance(args.tolerance)
    if args.update:
        refuse_overwriting({"--baseline": args.baseline}, [args.current])
    _, cur_records = load([args.current])
    cur = gated(cur_records)
    if not cur:
        raise InputError(f"{args.current}: no deterministic figures (run benchmarks/test_memory.py)")
    if args.update:
        return _update(args, cur_records, cur, tolerance)
    _, base_records = load([args.baseline])
    why = mixed_meanings([(r.source, r.result) for r in base_records + cur_records])
    if why:
        raise InputError(f"{why}; review, then rerun with --update")
    outcome = compare(gated(base_records), cur, tolerance)
    tol = f"{tolerance * 100:g}%"
    if outcome.regressions:
        print(f"REGRESSIONS vs {args.baseline} (worse by more than {tol}, failed, not a number, or missing):")
        print(_table(outcome.regressions))
    if outcome.improvements:
        print(f"note: improved by more than {tol} (run with --update to lock in):")
        print(_table(outcome.improvements))
    if outcome.failed:
        print(f"FAILED: {len(outcome.regressions)} problem(s)", file=sys.stderr)
        return 1
    print(f"ok: {outcome.compared} figures compared, none worse by more than {tol}")
    return 0


def _update(args: argparse.Namespace, cur_records: list[Any], cur: dict[tuple[str, int], Figures],
            tolerance: float) -> int:
    """Replace the baseline with CURRENT's gated figures, unless CURRENT holds a failure."""
    from pathlib import Path

    from spbench.reporting.results import load, read_json, schema_version, write_atomic
    from spbench.result import mixed_meanings

    broken = own_failures(cur)
    if broken:
        print(f"not updating {args.baseline}: {args.current} holds failed cases or figures that are not "
              "finite numbers:")
        print(_table(broken))
        print(f"FAILED: {len(broken)} problem(s); baseline unchanged", file=sys.stderr)
        return 1
    if Path(args.baseline).exists():
        _, base_records = load([args.baseline])
        vb, vc = schema_version(base_records), schema_version(cur_records)
        if mixed_meanings([(r.source, r.result) for r in base_records + cur_records]):
            print(f"schema_version {vb} -> {vc}: figures measured by different code are not compared; "
                  "the baseline is replaced")
        else:
            outcome = compare(gated(base_records), cur, tolerance)
            changes = outcome.regressions + outcome.improvements
            if changes:
                print(f"changes locked in (beyond {tolerance * 100:g}%, or cases/figures added or removed):")
                print(_table(changes))
    doc = baseline_document(read_json(args.current), cur_records)
    write_atomic(args.baseline, json.dumps(doc, indent=2, allow_nan=False) + "\n")
    print(f"wrote {args.baseline} ({len(doc['benchmarks'])} records)")
    return 0
