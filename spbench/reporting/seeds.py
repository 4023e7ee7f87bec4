"""Runs repeated over seeds, as one row: metric means, accuracy and F1 as mean ± std (n).

Training runs of one configuration (the same case, hyperparameters and training setup) that
differ only in their seed are folded into one record before rows are merged: each metric is
the mean over the runs that finished, accuracy and F1 also carry their sample standard
deviation and count (``Row.spread``), and the training configuration lists the seeds. A failed
seed is named in the row's reason, never averaged. Runs of the same configuration under
different training setups (a quarter-epoch grid and a one-epoch repeat) stay separate rows,
labelled by what differs.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
from dataclasses import dataclass
from typing import Any

from spbench.reporting.results import Record, Row, _label, merge_rows
from spbench.result import CASE_FIELDS, PREDICTED

SPREAD_METRICS = ("sst2_accuracy", "sst2_f1")


# What makes two runs' training setups the same (the seed aside; the schedule and clipping
# follow from the method, and a failed run may not have recorded them).
SETUP_KEYS = ("budget", "warmup", "eval_every", "max_len", "group_by_length", "select_on")


def _setup_key(record: Record) -> str | None:
    """The training setup of a run, bar its seed (None for a benchmark step or a prediction)."""
    train = record.result.train_config
    if train is None or record.result.device == PREDICTED:
        return None
    return json.dumps({k: train.get(k) for k in SETUP_KEYS}, sort_keys=True, default=str)


def _case_key(record: Record) -> str:
    r = record.result
    return json.dumps([[getattr(r.case, k) for k in CASE_FIELDS], r.method_config, r.device],
                      sort_keys=True, default=str)


@dataclass
class Folded:
    """What folding a configuration's seeds adds to its row: the spread of accuracy and F1, the
    dev accuracy's interval over examples, the per-example correctness (seeds x examples)."""

    spread: dict[str, tuple[float | None, int]]
    interval: dict[str, tuple[float, float]]
    correct: Any = None


def fold(group: list[Record]) -> tuple[Record, Folded]:
    """One record for a configuration's runs over seeds, and what the seeds add (:class:`Folded`)."""
    from spbench.reporting import stats

    first = group[0].result
    ok = [g.result for g in group if g.result.ok]
    keys = [k for k in first.metrics if all(k in r.metrics for r in ok)] if ok else list(first.metrics)
    metrics = {k: statistics.fmean(r.metrics[k] for r in ok) for k in keys} if ok else dict(first.metrics)
    spread = {}
    for key in SPREAD_METRICS:
        values = [r.metrics[key] for r in ok if key in r.metrics]
        if values:
            spread[key] = (statistics.stdev(values) if len(values) > 1 else None, len(values))
    seeds = sorted(r.train_config.get("seed") for r in ok if r.train_config)  # type: ignore[union-attr]
    failed = [f"seed {g.result.train_config.get('seed')}: {g.result.reason or g.result.status}"  # type: ignore[union-attr]
              for g in group if not g.result.ok]
    train = {k: v for k, v in (first.train_config or {}).items() if k != "seed"}
    notes = {k: v for k, v in first.notes.items() if k != "sweep"}  # per-trial notes: the trial table's
    if ok and failed:
        notes["failed seeds"] = "; ".join(failed)
    result = dataclasses.replace(
        first, metrics=metrics, notes=notes, train_config={**train, "seeds": seeds},
        status="ok" if ok else first.status, reason="" if ok else "; ".join(failed),
        best_step=first.best_step if len(group) == 1 else None, predictions=None)
    folded = Folded(spread, {})
    if ok and all(r.predictions for r in ok):
        folded.correct, _ = stats.correctness([r.predictions for r in ok])  # type: ignore[misc]
        folded.interval["sst2_accuracy"] = stats.interval(folded.correct)
    return Record(group[0].source, group[0].name, result), folded


def merge_over_seeds(records: list[Record]) -> list[Row]:
    """:func:`~spbench.reporting.results.merge_rows` with seeds folded (see the module docstring)."""
    setups: dict[str | None, dict[str, list[Record]]] = {}
    for rec in records:
        setups.setdefault(_setup_key(rec), {}).setdefault(_case_key(rec), []).append(rec)
    plain: dict[str, list[Record]] = {}  # by identity: each setup takes its own cases' records
    for rec in (r for runs in setups.pop(None, {}).values() for r in runs):
        plain.setdefault(_identity(rec), []).append(rec)
    trained_cases = {_identity(r) for runs in setups.values() for group in runs.values() for r in group}
    untrained = [r for key, recs in plain.items() if key not in trained_cases for r in recs]
    rows = merge_rows(untrained) if untrained else []
    for setup, by_case in setups.items():
        folded, extras = [], {}
        for group in by_case.values():
            record, extra = fold(group)
            folded.append(record)
            extras[_identity(record)] = extra
        part = merge_rows(folded + [r for key in extras for r in plain.get(key, [])])
        for row in part:
            extra = extras.get(_row_identity(row))
            if extra is not None:
                row.spread, row.interval, row.correct = extra.spread, extra.interval, extra.correct
            row.notes["_setup"] = setup
        rows += part
    _label(rows)  # over every row, so a configuration keeps one name across setups
    for row in rows:
        setup = row.notes.pop("_setup", None)
        if len(setups) > 1 and setup is not None:
            row.label += f" [{_budget(setup)}]"
    return sorted(rows, key=lambda row: (row.group, row.label))


def _identity(record: Record) -> str:
    r = record.result
    return json.dumps([[getattr(r.case, k) for k in CASE_FIELDS], r.method_config], sort_keys=True, default=str)


def _row_identity(row: Row) -> str:
    return json.dumps([[getattr(row.case, k) for k in CASE_FIELDS], row.method_config], sort_keys=True, default=str)


def _budget(setup: str | None) -> str:
    train = json.loads(setup) if setup else {}
    return str(train.get("budget", "training setup " + (setup or "")[:12]))


def spread_text(row: Row, key: str, divisor: float, decimals: int) -> str:
    """`` ± std (n)`` for a folded metric (`` (n)`` for a single run), then `` [low, high]``, its
    95% interval over dev examples, where the runs kept their predictions; else ""."""
    if key not in row.spread:
        return ""
    std, n = row.spread[key]
    text = (f" ± {std / divisor:.{decimals}f}" if std is not None else "") + f" ({n})"
    if key in row.interval:
        low, high = row.interval[key]
        text += f" [{low / divisor:.{decimals}f}, {high / divisor:.{decimals}f}]"
    return text
