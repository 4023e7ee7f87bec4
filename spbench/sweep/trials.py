"""Trials: one ordinary spbench accuracy run each, run once, recovered when a worker dies.

A trial is one configuration (the sampler's parameters over ``--set``) with one seed. The
objective builds the Case, trains it through ``spbench.train.run_accuracy`` (the path the
accuracy benchmarks take), stores the result in the trial (user attribute ``spbench_result``)
and returns the dev accuracy (and, with ``--pareto``, the predicted CUDA peak).

"Runs once": every trial carries the key of its configuration and seed. Before training, a
trial that finds the same key finished, or running in a trial with a lower number, is pruned as
a duplicate (Optuna's grid sampler can hand two workers the same point). A finished run that
failed (NaN loss, a bad configuration) is a data point, not retried.

Recovery, before each trial:
- a database storage has Optuna's heartbeat: ``fail_stale_trials`` fails the trials of workers
  that stopped beating and ``RetryHeartbeatStaleTrialCallback`` queues each again;
- a journal file has no heartbeat in Optuna, so each trial records its worker (host, pid and
  process start time): a running trial whose process on this host is gone is failed and queued
  again through the same callback;
- a trial stopped by Ctrl-C (SIGINT) is marked interrupted and queued again on the next start.
Seeds after the first are queued (``study.enqueue_trial``) for each configuration once it has
started, so parallel workers train them side by side.
"""

from __future__ import annotations

import math
import os
import socket
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable

from spbench.errors import InputError
from spbench.sweep.interrupt import check, interruptible
from spbench.sweep.setup import Setup, config_key, unit_key

ATTR_SEED = "seed"
ATTR_CONFIG = "spbench_config"
ATTR_UNIT = "spbench_unit"
ATTR_OWNER = "spbench_owner"
ATTR_CLAIM = "spbench_claim"
ATTR_INTERRUPTED = "spbench_interrupted"
ATTR_RESULT = "spbench_result"
ATTR_PREDICTED = "spbench_predicted"
ATTR_RULE = "spbench_prune_rule"  # the pruning rule that stopped a trial (absent: an older one)
PRUNE_RULE = 2  # 2: each configuration and seed counts once at a rung (spbench.sweep.pruning.keeps)
OWNERLESS_AFTER_S = 120  # a running trial that never named its worker is dead after this


def worker_id(pid: int | None = None) -> str:
    """``host:pid:start`` (the process start time tells a reused pid apart)."""
    pid = os.getpid() if pid is None else pid
    return f"{socket.gethostname()}:{pid}:{_start_time(pid)}"


def _start_time(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rpartition(")")[2].split()[19]
    except (OSError, IndexError):
        return ""


def worker_alive(worker: str) -> bool | None:
    """True / False for a worker on this host; None when it ran elsewhere (cannot tell)."""
    host, _, rest = worker.partition(":")
    pid_text, _, start = rest.partition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return None
    pid = int(pid_text)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return not start or _start_time(pid) == start


class Objective:
    """Optuna's objective: train one configuration with one seed and return its scores."""

    def __init__(self, setup: Setup, progress: bool | None = None, log: Callable[[str], None] = print) -> None:
        self.setup = setup
        self.progress = progress
        self.log = log
        self._predicted: dict[str, dict[str, Any]] = {}
        import datasets
        import transformers

        transformers.utils.logging.disable_progress_bar()  # one line per trial, not loading bars
        datasets.disable_progress_bars()

    def __call__(self, trial: Any) -> float | tuple[float, float]:
        trial.set_user_attr(ATTR_OWNER, {"trial": trial.number, "worker": worker_id()})
        try:
            return self._run(trial)
        except KeyboardInterrupt:
            trial.set_user_attr(ATTR_INTERRUPTED, trial.number)
            raise

    def _run(self, trial: Any) -> float | tuple[float, float]:
        import optuna

        setup = self.setup
        params = {p.name: p.suggest(trial) for p in setup.params}
        seed = int(trial.user_attrs.get(ATTR_SEED, setup.seeds[0]))
        trial.set_user_attr(ATTR_SEED, seed)
        case = setup.trial_case(params)
        try:
            method_config = case.method_config()
        except ValueError as exc:  # a grid value the method refuses: a failed data point
            method_config, error = {k: v for k, v in case.overrides}, exc
        else:
            error = None
        config = config_key(case, method_config, setup)
        unit = unit_key(config, seed)
        trial.set_user_attr(ATTR_CONFIG, config)
        trial.set_user_attr(ATTR_UNIT, unit)
        holder = finished_holder(trial.study, unit, trial.number) or rival(trial.study, unit, trial.number)
        if holder is None:  # claim, then look again: of two trials racing for a unit, at most one
            trial.set_user_attr(ATTR_CLAIM, trial.number)  # sees no rival after its own claim
            holder = rival(trial.study, unit, trial.number)
        if holder is not None:
            raise optuna.TrialPruned(f"duplicate: trial {holder} runs or ran the same configuration and seed")
        note = {"study": setup.study_name, "trial": trial.number, "params": params, "seed": seed, "config": config}
        label = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())
        self.log(f"trial {trial.number}: {label}, seed {seed} ...")
        if error is None:
            with interruptible():
                predicted = self.predicted(case, config)
            trial.set_user_attr(ATTR_PREDICTED, predicted)
            with interruptible():
                info = self._train(case, seed, note, trial)
        else:
            predicted, info = {}, failure_info(case, error, note, setup)
        trial.set_user_attr(ATTR_RESULT, info)
        status = info.get("status", "ok")
        if status == "pruned":  # a data point: where it stopped, and its validation accuracy there
            self.log(f"trial {trial.number}: {label}, seed {seed}: {info.get('reason')}")
            raise optuna.TrialPruned(info.get("reason", ""))
        score = info.get(selection_key(setup))
        peak = predicted.get("predicted_cuda_peak_bytes")
        if status not in ("ok", "collapsed") or score is None or (setup.pareto and peak is None):
            self.log(f"trial {trial.number}: failed: {info.get('reason', 'no accuracy')}")
            return (math.nan, math.nan) if setup.pareto else math.nan  # Optuna marks the trial failed
        flag = f" ({info.get('reason')})" if status != "ok" else ""
        self.log(f"trial {trial.number}: {label}, seed {seed}: {setup.select_on} accuracy {score * 100:.2f}%, "
                 f"dev {info.get('sst2_accuracy', math.nan) * 100:.2f}%{flag} (train {info.get('train_time_s', 0):.0f} s)")
        return (score, float(peak)) if setup.pareto else score

    def predicted(self, case: Any, config: str) -> dict[str, Any]:
        """The deterministic predicted figures of a configuration (one record, computed once)."""
        if config not in self._predicted:
            try:
                self._predicted[config] = predicted_info(case)
            except (RuntimeError, ValueError, NotImplementedError) as exc:  # recorded, never fatal
                self.log(f"no predicted figures for {case.id}: {type(exc).__name__}: {exc}")
                self._predicted[config] = {}
        return self._predicted[config]

    def _train(self, case: Any, seed: int, note: dict[str, Any], trial: Any) -> dict[str, Any]:
        from spbench.sweep.pruning import RUNGS
        from spbench.train import Budget, run_accuracy

        setup = self.setup
        rungs = {k / RUNGS[-1]: k for k in RUNGS} if setup.pruner != "none" else {}

        def report(fraction: float, scores: dict[str, float]) -> str:
            """Tell Optuna the validation accuracy at this rung; its pruner answers."""
            trial.report(scores["accuracy"], rungs[fraction])
            if trial.should_prune():
                trial.set_user_attr(ATTR_RULE, PRUNE_RULE)  # decided by this rule: never reopened
                return (f"pruned at {fraction:g} of the budget ({setup.select_on} accuracy "
                        f"{scores['accuracy'] * 100:.2f}%)")
            return ""

        try:
            result, _ = run_accuracy(case, Budget.parse(setup.budget), setup.sst2_dir, seed=seed,
                                     warmup=setup.warmup, clip=setup.clip, eval_every=setup.eval_every,
                                     progress=self.progress, group_by_length=setup.group_by_length,
                                     select_on=setup.select_on, report_at=tuple(rungs), on_report=report)
        except Exception as exc:  # a failed run is a data point (STYLE: never a crash of the sweep)
            return failure_info(case, exc, note, setup)
        result.notes["sweep"] = note
        return result.to_extra_info()


def predicted_info(case: Any) -> dict[str, Any]:
    """The predicted figures of ``case`` as a result record (``extra_info``), by this code."""
    from spbench.measure.predict import predict
    from spbench.result import PREDICTED, Result

    metrics, built = predict(case)
    return Result.of(case, PREDICTED, metrics=metrics, notes=built.notes).to_extra_info()


def selection_key(setup: Setup) -> str:
    """The metric a sweep selects on: validation accuracy, or dev's with ``--select-on dev``."""
    return "val_accuracy" if setup.select_on == "validation" else "sst2_accuracy"


def failure_info(case: Any, exc: BaseException, note: dict[str, Any], setup: Setup) -> dict[str, Any]:
    from spbench.result import Result

    reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
    from spbench import methods

    train = {**setup.train_config(), "seed": note["seed"], "max_len": case.seq_len}
    try:  # as run_accuracy records it: a method without a backward has no gradient to clip
        if not methods.get(case.method).from_overrides(dict(case.overrides)).uses_backward:
            train["clip"] = None
    except ValueError:  # the configuration itself is what failed
        pass
    return Result.of(case, status="failed", reason=reason, notes={"sweep": note}, train_config=train).to_extra_info()


def params_of(trial: Any) -> dict[str, Any]:
    """A trial's parameters, also while it waits in the queue (``enqueue_trial`` keeps them aside)."""
    return dict(trial.params or trial.system_attrs.get("fixed_params") or {})


def own_result(trial: Any) -> dict[str, Any] | None:
    return trial.user_attrs.get(ATTR_RESULT)


def counted(study: Any, states: Any = None) -> list[Any]:
    """The study's trials less the pruned ones trained again (:func:`reopen`): what units,
    results and reports count."""
    from spbench.sweep.pruning import reopened

    skip = reopened(study)
    return [t for t in study.get_trials(deepcopy=False, states=states) if t.number not in skip]


def finished_holder(study: Any, unit: str, number: int) -> int | None:
    """A trial that finished ``unit`` (completed, or failed as a data point)."""
    from optuna.trial import TrialState

    for t in counted(study, states=(TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)):
        if t.number != number and t.user_attrs.get(ATTR_UNIT) == unit and (
                t.state == TrialState.COMPLETE or own_result(t) is not None):
            return t.number
    return None


def rival(study: Any, unit: str, number: int) -> int | None:
    """Another running trial that claimed ``unit``. Each trial claims before its last look, so
    when two race, the later claimant sees the earlier one's claim and yields (both may yield:
    the unit is then queued again, never run twice)."""
    from optuna.trial import TrialState

    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if t.number != number and t.user_attrs.get(ATTR_UNIT) == unit and t.user_attrs.get(ATTR_CLAIM) == t.number:
            return t.number
    return None


def _dead(trial: Any, now: datetime) -> bool:
    owner = trial.user_attrs.get(ATTR_OWNER) or {}
    if owner.get("trial") == trial.number and owner.get("worker"):
        return worker_alive(owner["worker"]) is False
    started = trial.datetime_start
    return started is not None and (now - started).total_seconds() > OWNERLESS_AFTER_S


def recover(study: Any, setup: Setup, heartbeat: bool, log: Callable[[str], None] = print) -> int:
    """Fail and re-queue trials whose worker is gone; re-queue interrupted trials. Returns how many."""
    import warnings

    import optuna
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.storages import RetryHeartbeatStaleTrialCallback
    from optuna.trial import TrialState

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ExperimentalWarning of Optuna's retry API
        retry = RetryHeartbeatStaleTrialCallback(setup.max_retry)
        requeue = RetryHeartbeatStaleTrialCallback(None)  # Ctrl-C is no fault of the configuration
        if heartbeat:
            optuna.storages.fail_stale_trials(study)  # the database path: Optuna's heartbeat
        trials = study.get_trials(deepcopy=False)
        retried = {n for t in trials for n in RetryHeartbeatStaleTrialCallback.retry_history(t)}
        count = 0
        now = datetime.now()
        for t in trials:
            if t.state == TrialState.RUNNING and not heartbeat and _dead(t, now):
                try:  # exactly one process gets past this for a given trial
                    study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
                except UpdateFinishedTrialError:
                    continue
                log(f"trial {t.number}: its worker is gone; queued again")
                retry(study, study._storage.get_trial(t._trial_id))
                count += 1
            elif (t.state == TrialState.FAIL and t.user_attrs.get(ATTR_INTERRUPTED) == t.number
                  and own_result(t) is None and t.number not in retried):
                log(f"trial {t.number}: was interrupted; queued again")
                requeue(study, t)
                count += 1
    return count


@dataclass
class Plan:
    """Where a study stands, in units (a configuration with one seed)."""

    done: int = 0
    failed: int = 0
    running: int = 0
    waiting: int = 0
    new_configs: int = 0  # configurations the sampler has yet to propose

    @property
    def pending(self) -> bool:
        return bool(self.waiting or self.new_configs)


def plan(study: Any, setup: Setup, enqueue: bool = True) -> Plan:
    """Count finished, running and waiting units; queue the seeds each started configuration lacks."""
    from optuna.trial import TrialState

    trials = counted(study)
    state: dict[str, str] = {}  # unit -> done | failed | running | waiting
    configs: dict[str, dict[str, Any]] = {}
    kills: dict[str, int] = {}
    rank = {"waiting": 0, "running": 1, "failed": 2, "done": 3}
    for t in trials:
        unit, config = t.user_attrs.get(ATTR_UNIT), t.user_attrs.get(ATTR_CONFIG)
        if unit is None or (t.state == TrialState.PRUNED and own_result(t) is None):  # a duplicate
            continue
        configs.setdefault(config, params_of(t))
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED):  # pruned after training: a data point
            now = "done"
        elif t.state == TrialState.FAIL:
            if t.user_attrs.get(ATTR_INTERRUPTED) == t.number:
                now = ""  # queued again by recover()
            elif own_result(t) is None:  # its worker died: given up after max_retry retries
                kills[unit] = kills.get(unit, 0) + 1
                now = "failed" if kills[unit] > setup.max_retry else ""
            else:
                now = "failed"
        else:
            now = "running" if t.state == TrialState.RUNNING else "waiting"
        if now and rank[now] >= rank.get(state.get(unit, ""), -1):
            state[unit] = now
    if enqueue:
        for config, params in configs.items():
            for seed in setup.seeds:
                unit = unit_key(config, seed)
                if unit not in state:
                    study.enqueue_trial(params, user_attrs={ATTR_SEED: seed, ATTR_UNIT: unit, ATTR_CONFIG: config})
                    state[unit] = "waiting"
    counts = Plan()
    for value in state.values():
        setattr(counts, value, getattr(counts, value) + 1)
    counts.new_configs = max(0, setup.configs - len(_in_space(configs.values(), setup)))
    return counts


def _in_space(configs: Any, setup: Setup) -> set[tuple[Any, ...]]:
    names = [p.name for p in setup.params]
    seen = {tuple(c.get(n) for n in names) for c in configs if all(n in c for n in names)}
    if setup.sampler != "grid":
        return seen
    import itertools

    grid = set(itertools.product(*(p.grid for p in setup.params)))
    return seen & grid


def missing_grid(study: Any, setup: Setup) -> list[dict[str, Any]]:
    """Grid points no trial has taken (the grid sampler's own bookkeeping can count a failed point)."""
    import itertools

    from optuna.trial import TrialState

    taken = {tuple(params_of(t).get(p.name) for p in setup.params) for t in study.get_trials(deepcopy=False)
             if (t.state != TrialState.PRUNED or own_result(t) is not None) and ATTR_UNIT in t.user_attrs}
    return [dict(zip([p.name for p in setup.params], point))
            for point in itertools.product(*(p.grid for p in setup.params)) if point not in taken]


def work(study: Any, setup: Setup, objective: Objective, heartbeat: bool, poll_s: float = 2.0,
         log: Callable[[str], None] = print) -> None:
    """One worker: run trials until every unit of the sweep is finished (waiting for others' runs)."""
    while True:
        check()  # a Ctrl-C that came during a storage write stops the loop here
        recover(study, setup, heartbeat, log)
        now = plan(study, setup)
        if now.new_configs and not now.waiting and setup.sampler == "grid" and study.sampler.is_exhausted(study):
            for params in missing_grid(study, setup):  # the sampler sees none left: queue them by hand
                study.enqueue_trial(params, user_attrs={ATTR_SEED: setup.seeds[0]})
            now = plan(study, setup, enqueue=False)
        if now.pending:
            states: list[Any] = []
            try:
                study.optimize(objective, n_trials=1, gc_after_trial=True,
                               callbacks=[lambda _study, trial: states.append(trial.state.name)])
            except ValueError as exc:  # Optuna's tell() on a trial another worker already failed
                if not str(exc).startswith("Cannot tell a "):
                    raise
                log("this worker's trial was failed by another worker (its heartbeat came late); "
                    "it runs again from the queue")
            if states == ["PRUNED"]:
                with interruptible():
                    time.sleep(poll_s)  # the sampler proposed a point another worker holds
            continue
        if now.running:
            with interruptible():
                time.sleep(poll_s)  # other workers' trials: wait, to re-run them if their worker dies
            continue
        return


def stale(study: Any) -> list[Any]:
    """Pruned trials whose decision no longer holds: stopped by an older rule (they carry no
    ``ATTR_RULE``) though among the best at their rung, each configuration and seed counted once,
    against the trials numbered before them (a killed run and its retry had counted twice). Trial
    numbers are the order trials started, not always the order they reported (parallel workers),
    so with several workers an older decision may be taken again needlessly: it costs a run,
    never a wrong choice."""
    from optuna.trial import TrialState

    from spbench.sweep.pruning import keeps, reopened

    trials = study.get_trials(deepcopy=False)
    done = reopened(study)
    return [t for t in trials if t.state == TrialState.PRUNED and t.number not in done
            and ATTR_RULE not in t.user_attrs and (t.user_attrs.get(ATTR_RESULT) or {}).get("status") == "pruned"
            and keeps(trials, t, before=t.number)]


def reopen(study: Any, setup: Any, log: Any = print) -> list[int]:
    """Train again, from the start, each :func:`stale` pruned trial.

    Its configuration and seed are queued again; the stopped trial stays in the storage, listed
    under the study's ``spbench_reopened`` attribute, and is left out of the rungs, the units,
    the results and the search's cost (what it trained was the older rule's waste, not this
    search's). Returns the trials reopened."""
    from spbench.sweep.pruning import KEEP_PER_RUNG, REOPENED, RUNGS, reopened

    if setup.pruner == "none":
        return []
    found = stale(study)
    if not found:
        return []
    study.set_user_attr(REOPENED, sorted(reopened(study) | {t.number for t in found}))
    for t in found:
        study.enqueue_trial(params_of(t), user_attrs={k: t.user_attrs[k] for k in (ATTR_SEED, ATTR_UNIT, ATTR_CONFIG)})
        log(f"trial {t.number}: pruned at step {t.last_step} of {RUNGS[-1]} though among the best {KEEP_PER_RUNG} "
            "runs there (an older rule counted a killed run beside its retry): trained again from the start")
    return [t.number for t in found]


def units_of(setup: Setup) -> dict[str, tuple[dict[str, Any], int, str]]:
    """A grid sweep's units: unit key -> (the configuration's parameters, the seed, its config key)."""
    import itertools

    names = [p.name for p in setup.params]
    out = {}
    for point in itertools.product(*(p.grid for p in setup.params)):
        params = dict(zip(names, point))
        case = setup.trial_case(params)
        try:
            config = config_key(case, case.method_config(), setup)
        except ValueError:  # a configuration the method refuses: nothing to take over
            continue
        for seed in setup.seeds:
            out[unit_key(config, seed)] = (params, seed, config)
    return out


def adopted(study: Any) -> list[int]:
    """The trials :func:`adopt` took over from another study."""
    return [t.number for t in counted(study) if "adopted_from" in ((own_result(t) or {}).get("sweep") or {})]


def adopt(study: Any, setup: Setup, source: Any, log: Callable[[str], None] = print) -> int:
    """Take over the finished runs of ``source`` (another study) that are units of this grid sweep.

    A unit key holds everything that decides a run but the study (the case, every resolved
    hyperparameter, the training setup, the device, the seed), training is seeded and
    deterministic, and a pruned search's validation scoring at its rungs leaves the weights alone
    (tests/test_train.py). So a run of the pruned search that reached the full budget *is* the run
    the follow-up study would train: ``--best-from STUDY --seeds 0,1,2`` trains seeds 1 and 2 and
    adds seed 0 from STUDY, marked ``adopted_from`` in its notes. Returns how many were added."""
    from optuna.trial import TrialState, create_trial

    if setup.sampler != "grid":
        return 0
    wanted = units_of(setup)
    have = {t.user_attrs.get(ATTR_UNIT) for t in counted(study)  # finished, or training now
            if own_result(t) is not None or t.state == TrialState.RUNNING}
    dists = {p.name: p.distribution() for p in setup.params}
    count = 0
    for t in counted(source, states=(TrialState.COMPLETE,)):
        unit, info = t.user_attrs.get(ATTR_UNIT), own_result(t)
        if unit not in wanted or unit in have or info is None or info.get("status", "ok") not in ("ok", "collapsed"):
            continue
        values = [info.get(selection_key(setup))]
        if setup.pareto:  # the study's objectives, whatever the source's were
            values.append((t.user_attrs.get(ATTR_PREDICTED) or {}).get("predicted_cuda_peak_bytes"))
        if any(v is None for v in values):
            continue
        params, seed, config = wanted[unit]
        number = len(study.get_trials(deepcopy=False))
        sweep = info.get("sweep") or {}
        note = {**sweep, "study": setup.study_name, "trial": number,
                "adopted_from": {"study": source.study_name, "trial": t.number}}
        attrs = {ATTR_SEED: seed, ATTR_UNIT: unit, ATTR_CONFIG: config, ATTR_RESULT: {**info, "sweep": note}}
        if t.user_attrs.get(ATTR_PREDICTED):
            attrs[ATTR_PREDICTED] = t.user_attrs[ATTR_PREDICTED]
        study.add_trial(create_trial(state=TrialState.COMPLETE, params=params, distributions=dists,
                                     values=[float(v) for v in values], user_attrs=attrs))
        have.add(unit)
        count += 1
        log(f"trial {number}: seed {seed} taken from {source.study_name}'s trial {t.number} (the same run, "
            f"finished at the full budget): {setup.select_on} accuracy "
            f"{info.get(selection_key(setup), math.nan) * 100:.2f}%, dev {info.get('sst2_accuracy', math.nan) * 100:.2f}%")
    return count


def best_params(study: Any, select_on: str = "validation") -> dict[str, Any]:
    """The searched parameters of a finished study's best configuration (highest mean
    validation accuracy over its seeds, at the full budget; dev's only with ``select_on="dev"``):
    what ``--best-from`` fixes for a follow-up sweep."""
    from optuna.trial import TrialState

    from spbench.reporting.sweep import configurations
    from spbench.result import Result

    trials = counted(study)
    busy = [t.number for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    finished = {t.user_attrs.get(ATTR_UNIT) for t in trials if own_result(t) is not None}
    planned = (study.user_attrs.get("spbench_setup") or {}).get("units") or 0
    if stale(study):
        raise InputError(f"study {study.study_name!r} has pruned trials to train again under the current pruning "
                         "rule: run its search command again first")
    if busy or len(finished) < planned:
        raise InputError(f"study {study.study_name!r} has not finished ({len(finished)} of {planned} runs; "
                         f"trials {busy or 'none'} running or queued): finish it first (run its command again)")
    key = "val_accuracy" if select_on == "validation" else "sst2_accuracy"
    results = [own_result(t) for t in trials if own_result(t) is not None]
    scored = [c for c in configurations(map(Result.from_extra_info, results), select=key) if key in c.stats]
    if not scored and key == "val_accuracy" and not any("val_accuracy" in r for r in results) \
            and any("sst2_accuracy" in r for r in results):
        raise InputError(f"study {study.study_name!r} has no validation accuracy (its runs selected on dev); "
                         "re-run it, or pass --select-on dev to take its best by the reported split")
    if not scored:
        raise InputError(f"study {study.study_name!r} has no configuration that finished ok (every run failed, "
                         "collapsed to one class or was pruned): no best to take")
    return dict(scored[0].params)
