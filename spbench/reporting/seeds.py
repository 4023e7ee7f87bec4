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
import functools
import json
import statistics
from dataclasses import dataclass
from typing import Any

from spbench.reporting.results import Record, Row, _label, merge_rows
from spbench.result import PREDICTED, SETUP_KEYS, Result, identity_key

SPREAD_METRICS = ("sst2_accuracy", "sst2_f1")


def _setup_key(record: Record) -> str | None:
    """The training setup of a run, bar its seed (None for a benchmark step or a prediction)."""
    train = record.result.train_config
    if train is None or record.result.device == PREDICTED:
        return None
    return json.dumps({k: train.get(k) for k in SETUP_KEYS}, sort_keys=True, default=str)


class Stat:
    """Mean, sample standard deviation (n - 1; None for one value) and count of one metric over
    seeds. The deviation is computed when first read (``statistics.stdev`` is exact, and slow)."""

    def __init__(self, values: list[float]) -> None:
        self.values = values
        self.mean = statistics.fmean(values)
        self.n = len(values)

    @classmethod
    def of(cls, values: list[float]) -> "Stat":
        return cls(values)

    @functools.cached_property
    def std(self) -> float | None:
        return statistics.stdev(self.values) if self.n > 1 else None

    def __repr__(self) -> str:
        return f"Stat(mean={self.mean!r}, n={self.n})"

    def text(self, scale: float = 1.0, decimals: int = 2) -> str:
        spread = f" ± {self.std * scale:.{decimals}f}" if self.std is not None else ""
        return f"{self.mean * scale:.{decimals}f}{spread} ({self.n})"


@dataclass
class Seeds:
    """One configuration's runs over seeds, aggregated: what the overview's row and a sweep's
    configuration both show."""

    ok: list[Result]  # the runs that finished ("ok"); every other run is named in ``failed``
    stats: dict[str, Stat]  # per metric of the finished runs, over those that have it
    seeds: list[int]
    failed: list[str]  # "seed S: why"
    correct: Any = None  # (seeds x dev examples) 0/1, where every finished run kept its predictions
    interval: tuple[float, float] | None = None  # dev accuracy, 95% over dev examples (stats.py)


def over_seeds(runs: list[Result]) -> Seeds:
    """The one aggregation of a configuration's runs over seeds: each metric's mean, sample
    standard deviation and count over the runs that finished; a failed run is named, never
    averaged; the dev accuracy's interval over examples where the runs kept their predictions
    (none when they scored different dev sets)."""
    from spbench.errors import InputError
    from spbench.reporting import stats

    ok = [r for r in runs if r.ok]
    keys = list(dict.fromkeys(k for r in ok for k in r.metrics))
    out = Seeds(ok, {k: Stat.of([r.metrics[k] for r in ok if k in r.metrics]) for k in keys},
                sorted(s for s in (_seed(r) for r in ok) if s is not None),
                [f"seed {_seed(r)}: {r.reason or r.status}" for r in runs if not r.ok])
    if ok and all(r.predictions for r in ok):
        try:
            out.correct, _ = stats.correctness([r.predictions for r in ok])  # type: ignore[misc]
            out.interval = stats.interval(out.correct)
        except InputError:  # seeds scored different dev sets: no interval rather than a wrong one
            out.correct = None
    return out


def _seed(result: Result) -> Any:
    return (result.train_config or {}).get("seed")


@dataclass
class Folded:
    """What folding a configuration's seeds adds to its row: the spread of accuracy and F1, the
    dev accuracy's interval over examples, the per-example correctness (seeds x examples)."""

    spread: dict[str, tuple[float | None, int]]
    interval: dict[str, tuple[float, float]]
    correct: Any = None


def fold(group: list[Record]) -> tuple[Record, Folded]:
    """One record for a configuration's runs over seeds (:func:`over_seeds`), and what the seeds
    add (:class:`Folded`)."""
    first = group[0].result
    agg = over_seeds([g.result for g in group])
    ok = agg.ok
    # a metric every finished run has: its mean (a failed configuration keeps its own figures)
    metrics = {k: s.mean for k, s in agg.stats.items() if s.n == len(ok)} if ok else dict(first.metrics)
    spread = {k: (agg.stats[k].std, agg.stats[k].n) for k in SPREAD_METRICS if k in agg.stats}
    train = {k: v for k, v in (first.train_config or {}).items() if k != "seed"}
    notes = {k: v for k, v in first.notes.items() if k != "sweep"}  # per-trial notes: the trial table's
    if ok and agg.failed:
        notes["failed seeds"] = "; ".join(agg.failed)
    result = dataclasses.replace(
        first, metrics=metrics, notes=notes, train_config={**train, "seeds": agg.seeds},
        status="ok" if ok else first.status, reason="" if ok else "; ".join(agg.failed),
        best_step=first.best_step if len(group) == 1 else None, predictions=None)
    folded = Folded(spread, {"sst2_accuracy": agg.interval} if agg.interval else {}, agg.correct)
    return Record(group[0].source, group[0].name, result), folded


def merge_over_seeds(records: list[Record]) -> list[Row]:
    """:func:`~spbench.reporting.results.merge_rows` with seeds folded (see the module docstring)."""
    setups: dict[str | None, dict[str, list[Record]]] = {}
    for rec in records:
        setups.setdefault(_setup_key(rec), {}).setdefault(rec.result.key(setup=False), []).append(rec)
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
    return record.result.key(setup=False, device=False)


def _row_identity(row: Row) -> str:
    return identity_key(row.case, row.method_config)


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
