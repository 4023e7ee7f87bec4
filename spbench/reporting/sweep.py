"""Seeds and sweeps in reports: configurations as mean ± std (n) over seeds, the best one with
its hyperparameters, the Pareto fronts of accuracy vs predicted peak and vs training energy,
a study's trial table.

A configuration is everything that defines a training run except its seed: the case (method,
backbone, shape, objective, dtype, device), every hyperparameter and the training setup. Runs
of one configuration with different seeds are its samples; the standard deviation is the
sample one (n - 1), shown only when n > 1. A failed run is counted apart, never averaged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterable

from spbench.reporting.seeds import Stat, over_seeds
from spbench.result import PREDICTED, Result

SELECTION_METRICS = ("sst2_accuracy", "sst2_f1", "val_accuracy", "train_time_s", "peak_bytes", "train_energy_j")


@dataclass
class Configuration:
    """One configuration's runs over seeds."""

    method: str
    method_config: dict[str, Any]
    params: dict[str, Any]  # the hyperparameters the sweep chose (or those that differ)
    train_config: dict[str, Any]
    seeds: list[int] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    stats: dict[str, Stat] = field(default_factory=dict)
    predicted_peak: float | None = None
    trials: list[int] = field(default_factory=list)
    interval: tuple[float, float] | None = None  # dev accuracy, 95% over dev examples (stats.py)
    correct: Any = None  # (seeds x dev examples) 0/1, for paired comparisons
    select: str = "val_accuracy"  # what ``selection`` ranks by

    @property
    def label(self) -> str:
        params = ", ".join(f"{k}={_short(v)}" for k, v in self.params.items())
        return f"{self.method} ({params})" if params else self.method

    @property
    def accuracy(self) -> float:
        """Mean dev accuracy (the reported split)."""
        stat = self.stats.get("sst2_accuracy")
        return stat.mean if stat else float("-inf")

    @property
    def selection(self) -> float:
        """What configurations are ranked by: mean validation accuracy (dev's only for results
        that have none, and then every report says it selected on dev)."""
        stat = self.stats.get(self.select) or self.stats.get("sst2_accuracy")
        return stat.mean if stat else float("-inf")


def _short(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def configurations(results: Iterable[Result], select: str = "val_accuracy") -> list[Configuration]:
    """Training runs (and predicted records, joined by case) -> configurations, best first by
    ``select`` (validation accuracy; see :attr:`Configuration.selection`). A configuration is
    :func:`spbench.result.identity_key` with the training setup and device; its seeds are
    aggregated by :func:`spbench.reporting.seeds.over_seeds`, as the overview's rows are."""
    runs: dict[str, list[Result]] = {}
    predicted: dict[str, float] = {}
    for r in results:
        if r.device == PREDICTED:
            if "predicted_cuda_peak_bytes" in r.metrics:
                predicted[r.key(setup=False, device=False)] = r.metrics["predicted_cuda_peak_bytes"]
        elif r.train_config is not None:
            runs.setdefault(r.key(), []).append(r)
    out = []
    for group in runs.values():
        first = group[0]
        sweep = first.notes.get("sweep") or {}
        agg = over_seeds(group)
        out.append(Configuration(
            first.case.method, first.method_config, dict(sweep.get("params") or {}),
            {k: v for k, v in first.train_config.items() if k != "seed"},  # type: ignore[union-attr]
            seeds=agg.seeds, failed=agg.failed,
            stats={k: agg.stats[k] for k in SELECTION_METRICS if k in agg.stats},
            predicted_peak=predicted.get(first.key(setup=False, device=False)),
            trials=sorted(r.notes["sweep"]["trial"] for r in group if "trial" in (r.notes.get("sweep") or {})),
            interval=agg.interval, correct=agg.correct, select=select))
    _name_params(out)
    return sorted(out, key=lambda c: (-c.selection, -c.accuracy, -len(c.seeds)))


def _name_params(configs: list[Configuration]) -> None:
    """Configurations without sweep parameters are named by the hyperparameters that differ."""
    by_method: dict[str, list[Configuration]] = {}
    for c in configs:
        by_method.setdefault(c.method, []).append(c)
    for group in by_method.values():
        keys = sorted({k for c in group for k in c.method_config})
        differing = [k for k in keys if len({json.dumps(c.method_config.get(k), default=str) for c in group}) > 1]
        for c in group:
            if not c.params:
                c.params = {k: c.method_config.get(k) for k in differing}


# What a Pareto front weighs against accuracy: its label and each configuration's cost (None: unknown).
COSTS = {
    "peak": ("predicted CUDA peak", lambda c: c.predicted_peak),
    "energy": ("training energy", lambda c: c.stats["train_energy_j"].mean if "train_energy_j" in c.stats else None),
}


def pareto_front(configs: list[Configuration], cost: str = "peak") -> list[Configuration]:
    """Configurations that no other beats on both accuracy (higher) and ``cost`` (lower):
    "peak" (the predicted CUDA peak) or "energy" (mean training energy over seeds, joules)."""
    from spbench.reporting.plot import pareto

    of = COSTS[cost][1]
    scored = [c for c in configs if of(c) is not None and "sst2_accuracy" in c.stats]
    front = pareto([(float(of(c)), c.accuracy) for c in scored], higher_is_better=True)  # type: ignore[arg-type]
    return sorted((scored[i] for i in front), key=of)  # type: ignore[arg-type, return-value]


def configuration_rows(configs: list[Configuration]) -> tuple[list[str], list[list[str]]]:
    """Headers and rows of the configuration table (accuracy and F1 in %, as mean ± std (n))."""
    from spbench.units import format_bytes

    headers = ["configuration", "validation accuracy [%] ↑", "dev accuracy [%] ↑", "dev 95% interval [%]",
               "dev F1 [%] ↑", "train time [s]", "predicted peak", "failed"]
    rows = []
    for c in configs:
        acc, f1, t, val = (c.stats.get(k) for k in ("sst2_accuracy", "sst2_f1", "train_time_s", "val_accuracy"))
        rows.append([c.label, val.text(100) if val else "—", acc.text(100) if acc else "—",
                     f"[{c.interval[0] * 100:.2f}, {c.interval[1] * 100:.2f}]" if c.interval else "—",
                     f1.text(100) if f1 else "—", f"{t.mean:.0f}" if t else "—",
                     format_bytes(int(c.predicted_peak)) if c.predicted_peak is not None else "—",
                     str(len(c.failed)) if c.failed else ""])
    return headers, rows


def best_line(configs: list[Configuration]) -> str:
    """The best configuration (by validation accuracy), its dev accuracy with its interval, and
    how it compares, paired on dev, with the runner-up."""
    from spbench.errors import InputError
    from spbench.reporting import stats

    scored = [c for c in configs if "sst2_accuracy" in c.stats]
    if not scored:
        return "best: none (no run finished with an accuracy)"
    best = scored[0]
    on = "validation" if best.select in best.stats else "DEV (the reported split)"
    hp = ", ".join(f"{k}={_short(v)}" for k, v in sorted(best.method_config.items()))
    ci = f" [{best.interval[0] * 100:.2f}, {best.interval[1] * 100:.2f}]" if best.interval else ""
    line = (f"best on {on}: {best.label}: dev accuracy {best.stats['sst2_accuracy'].text(100)}{ci} %, "
            f"seeds {','.join(map(str, best.seeds))}; hyperparameters: {hp}")
    if len(scored) > 1 and best.correct is not None and scored[1].correct is not None:
        try:
            pair = stats.paired(scored[1].correct, best.correct)
            line += f"; vs the runner-up {scored[1].label}, paired on dev: {pair.text(scored[1].label, best.label)}"
        except InputError:  # different dev sets: no paired line
            pass
    return line


def format_configurations(configs: list[Configuration], pareto: bool = False) -> str:
    """Plain-text summary for the terminal: the table, the best configuration, the front."""
    from tabulate import tabulate

    headers, rows = configuration_rows(configs)
    lines = [tabulate(rows, headers=headers, tablefmt="simple", disable_numparse=True), "", best_line(configs)]
    if pareto:
        front = pareto_front(configs)
        lines.append("Pareto front (predicted peak ↓, accuracy ↑): "
                     + ("; ".join(f"{c.label} {c.stats['sst2_accuracy'].mean * 100:.2f}%" for c in front) or "none"))
    for c in configs:
        lines += [f"{c.label}: failed run {f}" for f in c.failed]
    return "\n".join(lines)


def trial_tables(records: list[Any]) -> list[Any]:
    """One table per study in ``records`` (sweep results carry a ``sweep`` note): every trial
    with its parameters, seed, status and scores; the notes give the best configuration as
    mean ± std (n) over seeds with its hyperparameters, and the Pareto front."""
    from spbench.reporting.tables import NONE, Table

    studies: dict[str, list[tuple[dict[str, Any], Result]]] = {}
    predicted: dict[str, Result] = {}  # by case: each study joins its own, not every one
    for rec in records:
        r = rec.result
        note = r.notes.get("sweep")
        if isinstance(note, dict) and "study" in note:
            studies.setdefault(note["study"], []).append((r.to_extra_info(), r))
        elif r.device == PREDICTED and "predicted_cuda_peak_bytes" in r.metrics:
            predicted[r.key(setup=False, device=False)] = r
    tables = []
    for study, runs in studies.items():
        runs.sort(key=lambda run: run[0]["sweep"].get("trial", 0))
        infos = [info for info, _ in runs]
        cases = dict.fromkeys(r.key(setup=False, device=False) for _, r in runs)
        names = list(dict.fromkeys(k for i in infos for k in i["sweep"].get("params", {})))
        headers = ["trial", *names, "seed", "status", "trained examples", "validation accuracy [%] ↑",
                   "dev accuracy [%] ↑", "dev F1 [%] ↑", "train time [s]"]
        rows = []
        for i in infos:
            params = i["sweep"].get("params", {})
            rows.append([str(i["sweep"].get("trial", "")), *(_short(params[n]) if n in params else NONE for n in names),
                         str(i["sweep"].get("seed", "")), i.get("status", "ok"),
                         f"{i['train_examples']:,}" if "train_examples" in i else NONE,
                         *(f"{i[k] * 100:.2f}" if k in i else NONE for k in ("val_accuracy", "sst2_accuracy", "sst2_f1")),
                         f"{i['train_time_s']:.0f}" if "train_time_s" in i else NONE])
        configs = configurations([r for _, r in runs] + [predicted[c] for c in cases if c in predicted])
        notes = [best_line(configs)]
        front = pareto_front(configs)
        if len([c for c in configs if c.predicted_peak is not None]) > 1:
            notes.append("Pareto front (predicted CUDA peak ↓, accuracy ↑): "
                         + "; ".join(f"{c.label}: {c.stats['sst2_accuracy'].text(100)} %" for c in front))
        if len([c for c in configs if "train_energy_j" in c.stats]) > 1:
            notes.append("Pareto front (training energy ↓, accuracy ↑): " + "; ".join(
                f"{c.label}: {c.stats['sst2_accuracy'].text(100)} %, {c.stats['train_energy_j'].mean:,.0f} J"
                for c in pareto_front(configs, "energy")))
        notes += [f"trial {i['sweep'].get('trial')} {'failed' if i.get('status') == 'failed' else i.get('status')}: "
                  f"{i.get('reason', '')}" for i in infos if i.get("status", "ok") != "ok"]
        cost = pruning_cost(infos)
        if cost:
            notes.append(cost)
        tables.append(Table(f"study {study}: trials", headers, rows, ["right"] * (1 + len(names)) + ["right", "left"]
                            + ["right"] * 5, notes))
    return tables


def pruning_cost(infos: list[dict[str, Any]]) -> str:
    """What a pruned search trained against a plain grid of the same configurations at the full
    budget (the examples of a run that finished it), or "" when no trial was pruned."""
    if not any(i.get("status") == "pruned" for i in infos):
        return ""
    full = max((i["train_examples"] for i in infos if i.get("status") in ("ok", "collapsed") and "train_examples" in i),
               default=None)
    spent = sum(int(i.get("train_examples", 0)) for i in infos)
    configs = len({json.dumps(i["sweep"].get("params"), sort_keys=True, default=str) for i in infos})
    if not full:
        return f"pruned search: {spent:,} training examples over {configs} configurations (none reached the full budget)"
    grid = full * configs
    return (f"pruned search: {spent:,} training examples over {configs} configurations; a plain grid of them at the "
            f"full budget: {configs} x {full:,} = {grid:,} ({spent / grid * 100:.0f}% of it)")
