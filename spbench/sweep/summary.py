"""What ``spbench sweep`` prints: the plan, progress over trials, and the results at the end
(configurations as mean ± std (n) over seeds, the best one with its hyperparameters, the
Pareto front with ``--pareto``), after writing the study's result document."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from spbench.sweep.setup import Setup
from spbench.sweep.trials import ATTR_PREDICTED, ATTR_RESULT, Plan, counted, plan, selection_key


def header(setup: Setup, storage: str, now: Plan) -> None:
    from spbench.sweep.setup import _redact

    space = "; ".join(f"{p.name}: {', '.join(f'{v:g}' if isinstance(v, float) else str(v) for v in p.grid)}"
                      if setup.sampler == "grid" else f"{p.name}: {p.describe()}" for p in setup.params)
    print(f"study {setup.study_name}  ({_redact(storage)})")
    print(f"  {setup.sampler} over {space}; seeds {','.join(map(str, setup.seeds))}; budget {setup.budget}"
          f"{'; objectives: accuracy, predicted peak' if setup.pareto else ''}")
    print(f"  {setup.configs} configurations x {len(setup.seeds)} seeds = {setup.units} runs; "
          f"{now.done + now.failed} finished, {now.running} running elsewhere", flush=True)


def footer(study: Any, setup: Setup, path: Path) -> None:
    """Write the result document, then print the configurations (best first) or the front."""
    from spbench.reporting.sweep import configurations, format_configurations, pruning_cost
    from spbench.result import Result
    from spbench.sweep.document import write

    trials = counted(study)
    infos = [t.user_attrs[ATTR_RESULT] for t in trials if ATTR_RESULT in t.user_attrs]
    if not infos:
        print("no finished trial yet: nothing written")
        return
    write(study, setup, path)
    predicted = [t.user_attrs[ATTR_PREDICTED] for t in trials if t.user_attrs.get(ATTR_PREDICTED)]
    configs = configurations([Result.from_extra_info(i) for i in infos + predicted], select=selection_key(setup))
    print()
    print(format_configurations(configs, pareto=setup.pareto))
    cost = pruning_cost(infos)
    if cost:
        print(cost)
    print(f"\nresults: {path}  (spbench report {path})")


class Progress:
    """A rich bar over the sweep's runs (polling the storage) that also prints each finished trial."""

    def __init__(self, study: Any, setup: Setup) -> None:
        self.study, self.setup = study, setup
        self.seen: set[int] = set()
        self._bar: Any = None

    def __enter__(self) -> "Progress":
        from rich.progress import BarColumn, MofNCompleteColumn, Progress as Bar, TextColumn, TimeElapsedColumn

        self._bar = Bar(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[state]}"), TimeElapsedColumn(), disable=not sys.stdout.isatty())
        self._bar.__enter__()
        self.task = self._bar.add_task("sweep", total=self.setup.units, state="")
        self.update()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._bar.__exit__(*exc)

    def log(self, text: str) -> None:
        if self._bar is not None and not self._bar.disable:
            self._bar.console.print(text, markup=False, highlight=False)
        else:
            print(text, flush=True)

    def update(self) -> None:
        now = plan(self.study, self.setup, enqueue=False)
        for t in counted(self.study):
            info = t.user_attrs.get(ATTR_RESULT)
            if info is None or t.number in self.seen:
                continue
            self.seen.add(t.number)
            note = info.get("sweep", {})
            params = ", ".join(f"{k}={v}" for k, v in note.get("params", {}).items())
            if "sst2_accuracy" in info:
                score = (f"validation {info.get('val_accuracy', float('nan')) * 100:.2f}%, "
                         f"dev {info['sst2_accuracy'] * 100:.2f}%" + (f" ({info['status']})" if info.get("status") != "ok" else ""))
            elif info.get("status") == "pruned":
                score = info.get("reason", "pruned")
            else:
                score = f"failed: {info.get('reason', '')}"
            self.log(f"trial {t.number}: {params}, seed {note.get('seed')}: {score}")
        self._bar.update(self.task, completed=now.done + now.failed,
                         state=f"{now.running} running, {now.waiting} queued, {now.failed} failed")


def studies(storage: Any) -> str:
    """Every study in a storage, a line each: its runs (finished of planned, pruned, failed,
    training, queued), the best configuration so far by the selection split with its dev
    accuracy, the hours its runs trained (a run taken over from another study counted there),
    and when a run last finished (``spbench sweep --studies``)."""
    import optuna
    from optuna.trial import TrialState
    from tabulate import tabulate

    from spbench.reporting.sweep import configurations
    from spbench.result import Result

    rows = []
    for summary in sorted(optuna.get_all_study_summaries(storage, include_best_trial=False),
                          key=lambda s: s.datetime_start or 0):
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        trials = counted(study)
        infos = [t.user_attrs[ATTR_RESULT] for t in trials if ATTR_RESULT in t.user_attrs]
        status = [i.get("status", "ok") for i in infos]
        planned = (study.user_attrs.get("spbench_setup") or {}).get("units")
        best = "—"
        scored = [c for c in configurations(map(Result.from_extra_info, infos)) if c.stats]
        if scored and scored[0].selection > float("-inf"):
            top = scored[0]
            val = top.stats.get(top.select)
            best = (f"{top.label}: validation {val.mean * 100:.2f}" if val else top.label) + (
                f", dev {top.accuracy * 100:.2f}" if top.accuracy > float("-inf") else "") + f" ({len(top.seeds)})"
        ended = [t.datetime_complete for t in trials if t.datetime_complete and ATTR_RESULT in t.user_attrs]
        spent = sum(float(i.get("train_time_s") or 0.0) for i in infos if "adopted_from" not in (i.get("sweep") or {}))
        rows.append([summary.study_name,
                     f"{sum(s in ('ok', 'collapsed') for s in status)}" + (f" of {planned}" if planned else ""),
                     sum(s == "pruned" for s in status), sum(s not in ("ok", "collapsed", "pruned") for s in status),
                     sum(t.state == TrialState.RUNNING for t in trials), sum(t.state == TrialState.WAITING for t in trials),
                     best, f"{spent / 3600:.2f}", max(ended).strftime("%Y-%m-%d %H:%M") if ended else "—"])
    if not rows:
        return "no study in this storage"
    return tabulate(rows, headers=["study", "finished", "pruned", "failed", "training", "queued",
                                   "best so far (selection split; seeds)", "training [h]", "last finished"],
                    tablefmt="simple", disable_numparse=True)
