"""The sweep's bookkeeping on an in-memory Optuna study (no training): what counts as done, which
seeds get queued, who yields when two trials race for one unit, what --best-from takes, and
which running trials recovery treats as dead."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import datetime, timedelta
from typing import Any

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from spbench import methods
from spbench.case import Case
from spbench.errors import InputError
from spbench.sweep.setup import Setup
from spbench.sweep.space import build_space
from spbench.sweep.trials import (ATTR_CLAIM, ATTR_CONFIG, ATTR_OWNER, ATTR_RESULT, ATTR_SEED, ATTR_UNIT, _dead,
                                  best_params, finished_holder, params_of, plan, rival, worker_alive,
                                  worker_id)

LR = FloatDistribution(1e-5, 1e-2, log=True)


def setup(**kw: Any) -> Setup:
    params = tuple(build_space(methods.get("lora"), grid=["lr=1e-3,3e-3"]))
    return Setup(Case("lora", "minilm-l6", 32, 64), params, **kw)


def add(study: Any, state: TrialState, lr: float, seed: int, accuracy: float | None = None,
        dev: float | None = None, status: str = "ok", **attrs: Any) -> int:
    """A trial of ``lr`` and ``seed``; with ``accuracy`` (validation) a result whose dev accuracy is
    ``dev`` (default: the same)."""
    user = {ATTR_SEED: seed, ATTR_CONFIG: f"c{lr}", ATTR_UNIT: f"c{lr}/seed={seed}", **attrs}
    if accuracy is not None:
        dev = accuracy if dev is None else dev
        user[ATTR_RESULT] = {"method": "lora", "method_config": {"lr": lr}, "backbone": "minilm-l6",
                             "batch_size": 32, "seq_len": 64, "objective": "classification", "dtype": "float32",
                             "device": "cpu", "status": status, "val_accuracy": accuracy, "sst2_accuracy": dev,
                             "sst2_f1": dev, "train_config": {"budget": "steps=1", "seed": seed},
                             "sweep": {"params": {"lr": lr}, "seed": seed, "trial": len(study.trials)}}
    values = [accuracy] if state == TrialState.COMPLETE else None
    study.add_trial(create_trial(state=state, params={"lr": lr}, distributions={"lr": LR}, values=values,
                                 user_attrs=user))
    return len(study.trials) - 1


def test_plan_counts_units_and_queues_the_seeds_a_started_configuration_lacks() -> None:
    study = optuna.create_study(direction="maximize")
    add(study, TrialState.COMPLETE, 1e-3, 0, 0.8)
    add(study, TrialState.PRUNED, 1e-3, 0)  # a duplicate that yielded: not counted
    add(study, TrialState.FAIL, 1e-3, 1, 0.0)  # a failed run with a result: a data point, done
    now = plan(study, setup(seeds=(0, 1, 2)))
    assert (now.done, now.failed, now.waiting, now.new_configs) == (1, 1, 1, 1)  # seed 2 queued; 3e-3 unstarted
    queued = study.get_trials(states=(TrialState.WAITING,))
    assert [(params_of(t), t.user_attrs[ATTR_SEED]) for t in queued] == [({"lr": 1e-3}, 2)]
    assert plan(study, setup(seeds=(0, 1, 2))).waiting == 1  # queued once, not again


def test_a_unit_is_held_by_a_finished_trial_or_the_claimant_that_looked_first() -> None:
    study = optuna.create_study(direction="maximize")
    done = add(study, TrialState.COMPLETE, 1e-3, 0, 0.8)
    assert finished_holder(study, "c0.001/seed=0", 99) == done
    assert finished_holder(study, "c0.001/seed=1", 99) is None
    unclaimed = add(study, TrialState.RUNNING, 3e-3, 0)
    assert rival(study, "c0.003/seed=0", 99) is None  # running, but has not claimed yet
    claimed = add(study, TrialState.RUNNING, 3e-3, 0, **{ATTR_CLAIM: len(study.trials)})
    assert rival(study, "c0.003/seed=0", unclaimed) == claimed and rival(study, "c0.003/seed=0", claimed) is None
    copied = add(study, TrialState.RUNNING, 1e-4, 0, **{ATTR_CLAIM: 0})  # a claim copied by a retry is no claim
    assert rival(study, "c0.0001/seed=0", 99) is None and copied


def test_best_from_takes_the_best_mean_over_seeds_of_a_finished_study() -> None:
    study = optuna.create_study(direction="maximize")
    study.set_user_attr("spbench_setup", {"units": 4})
    for lr, seed, acc in ((1e-3, 0, 0.90), (1e-3, 1, 0.70), (3e-3, 0, 0.85), (3e-3, 1, 0.84)):
        add(study, TrialState.COMPLETE, lr, seed, acc)
    assert best_params(study) == {"lr": 3e-3}  # 84.5 mean beats 80.0, despite the single 90
    study.set_user_attr("spbench_setup", {"units": 6})
    with pytest.raises(InputError, match="has not finished"):
        best_params(study)


def test_best_from_selects_on_validation_never_on_dev_without_the_flag() -> None:
    """Validation and dev pick different configurations: --best-from takes validation's; dev's
    only with select_on="dev". Results without a validation accuracy (older studies) are refused."""
    study = optuna.create_study(direction="maximize")
    study.set_user_attr("spbench_setup", {"units": 2})
    add(study, TrialState.COMPLETE, 1e-3, 0, 0.90, dev=0.80)
    add(study, TrialState.COMPLETE, 3e-3, 0, 0.85, dev=0.88)
    assert best_params(study) == {"lr": 1e-3}
    assert best_params(study, "dev") == {"lr": 3e-3}
    old = optuna.create_study(direction="maximize")
    old.set_user_attr("spbench_setup", {"units": 1})
    add(old, TrialState.COMPLETE, 1e-3, 0, 0.9)
    legacy = optuna.create_study(direction="maximize")
    legacy.set_user_attr("spbench_setup", {"units": 1})
    info = {**old.trials[0].user_attrs[ATTR_RESULT]}
    info.pop("val_accuracy")
    legacy.add_trial(create_trial(state=TrialState.COMPLETE, params={"lr": 1e-3}, distributions={"lr": LR},
                                  values=[0.9], user_attrs={**old.trials[0].user_attrs, ATTR_RESULT: info}))
    with pytest.raises(InputError, match="no validation accuracy"):
        best_params(legacy)
    assert best_params(legacy, "dev") == {"lr": 1e-3}


def test_a_pruned_trial_is_a_finished_data_point_never_the_best() -> None:
    """A trial pruned after training (it carries a result) finishes its unit, unlike a duplicate
    pruned before training; --best-from never takes a configuration that did not reach the end."""
    study = optuna.create_study(direction="maximize")
    study.set_user_attr("spbench_setup", {"units": 2})
    add(study, TrialState.PRUNED, 1e-3, 0, 0.95, status="pruned")  # best so far, but stopped early
    add(study, TrialState.COMPLETE, 3e-3, 0, 0.80)
    now = plan(study, setup())
    assert (now.done, now.waiting, now.new_configs) == (2, 0, 0)
    assert finished_holder(study, "c0.001/seed=0", 99) == 0
    assert best_params(study) == {"lr": 3e-3}


def test_dead_workers_are_told_from_live_ones() -> None:
    me = worker_id()
    assert worker_alive(me) is True and worker_alive("elsewhere:1:1") is None
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    gone = worker_id(child.pid)
    child.wait()
    assert worker_alive(gone) is False
    assert worker_alive(me.rsplit(":", 1)[0] + ":0") is False  # same pid, another start time: reused pid
    study = optuna.create_study(direction="maximize")
    now = datetime.now()
    add(study, TrialState.RUNNING, 1e-3, 0, **{ATTR_OWNER: {"trial": 0, "worker": gone}})
    add(study, TrialState.RUNNING, 1e-3, 1, **{ATTR_OWNER: {"trial": 1, "worker": me}})
    add(study, TrialState.RUNNING, 1e-3, 2, **{ATTR_OWNER: {"trial": 0, "worker": gone}})  # owner copied by a retry
    trials = study.get_trials()
    assert _dead(trials[0], now) and not _dead(trials[1], now)
    assert not _dead(trials[2], now)  # no owner of its own yet: alive until it is long silent
    assert _dead(trials[2], now + timedelta(hours=1))
    assert os.getpid() == int(me.split(":")[1])


def test_the_pruner_keeps_the_two_best_of_every_rung() -> None:
    """Successive halving alone stops a trial that does not beat every earlier one at a rung;
    wrapped, the second best of the rung goes on, the third is stopped."""
    from spbench.sweep.pruning import make_pruner

    def verdicts(pruner: Any, values: list[float]) -> list[bool]:
        study = optuna.create_study(direction="maximize", pruner=pruner)
        out = []
        for value in values:
            trial = study.ask()
            trial.report(value, 1)
            out.append(trial.should_prune())
            study.tell(trial, state=TrialState.PRUNED) if out[-1] else study.tell(trial, value)
        return out

    values = [0.90, 0.80, 0.85, 0.70]
    assert verdicts(optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=2), values) == \
        [False, True, True, True]  # after the first, only a new best goes on
    assert verdicts(make_pruner(setup(pruner="halving")), values) == [False, False, False, True]
    assert make_pruner(setup()).__class__.__name__ == "NopPruner"
    with pytest.raises(InputError, match="one seed"):
        setup(pruner="halving", seeds=(0, 1))


def test_recovery_requeues_a_dead_local_worker_but_never_another_hosts_running_trial() -> None:
    """On a journal (no heartbeat), a running trial whose worker on this host is gone is failed
    and queued again; one owned by a worker on another host cannot be checked from here and is
    left running, however long it has run (re-running it would train the unit twice)."""
    from spbench.sweep.trials import recover

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    gone = worker_id(child.pid)
    child.wait()
    study = optuna.create_study(direction="maximize")
    elsewhere = add(study, TrialState.RUNNING, 1e-3, 0, **{ATTR_OWNER: {"trial": 0, "worker": "otherhost:4242:99"}})
    dead = add(study, TrialState.RUNNING, 3e-3, 0, **{ATTR_OWNER: {"trial": 1, "worker": gone}})
    log: list[str] = []
    assert recover(study, setup(max_retry=2), heartbeat=False, log=log.append) == 1
    trials = study.get_trials()
    assert trials[elsewhere].state == TrialState.RUNNING
    assert trials[dead].state == TrialState.FAIL and log == [f"trial {dead}: its worker is gone; queued again"]
    queued = study.get_trials(states=(TrialState.WAITING,))
    assert [(params_of(t), t.system_attrs.get("retry_history")) for t in queued] == [({"lr": 3e-3}, [dead])]
    assert recover(study, setup(max_retry=2), heartbeat=False, log=log.append) == 0  # nothing twice


def test_a_unit_whose_worker_died_is_retried_up_to_max_retry_then_failed() -> None:
    """A failed trial without a result (its worker died) does not finish its unit until it has
    been re-run ``max_retry`` times; a failed trial with a result is a finished data point."""
    study = optuna.create_study(direction="maximize")
    add(study, TrialState.FAIL, 1e-3, 0)  # killed once
    assert plan(study, setup(max_retry=1), enqueue=False).failed == 0
    add(study, TrialState.FAIL, 1e-3, 0)  # its retry killed too: given up
    assert plan(study, setup(max_retry=1), enqueue=False).failed == 1
    assert plan(study, setup(max_retry=2), enqueue=False).failed == 0
    add(study, TrialState.FAIL, 3e-3, 0, 0.0, status="failed")  # failed as a data point: never retried
    now = plan(study, setup(max_retry=2), enqueue=False)
    assert (now.failed, now.done, now.waiting) == (1, 0, 0)


def test_a_failed_run_is_a_data_point_and_a_collapsed_one_is_scored(monkeypatch: pytest.MonkeyPatch) -> None:
    """The objective on an in-memory study, training replaced by given outcomes: a run that
    failed (NaN loss) fails its trial with its result kept, and is not queued again; a collapsed
    run (one class predicted) completes with its validation accuracy."""
    from spbench.sweep.trials import Objective, recover

    outcomes = {1e-3: {"status": "failed", "reason": "loss became nan at step 3"},
                3e-3: {"status": "collapsed", "reason": "predicts one class", "val_accuracy": 0.5,
                       "sst2_accuracy": 0.49}}
    s = setup()
    objective = Objective(s, progress=False, log=lambda line: None)
    monkeypatch.setattr(objective, "predicted", lambda case, config: {})
    monkeypatch.setattr(objective, "_train", lambda case, seed, note, trial: dict(outcomes[trial.params["lr"]]))
    study = optuna.create_study(direction="maximize")
    for lr in outcomes:
        study.enqueue_trial({"lr": lr}, user_attrs={ATTR_SEED: 0})
    study.optimize(objective, n_trials=2)
    failed, collapsed = study.get_trials()
    assert failed.state == TrialState.FAIL and failed.user_attrs[ATTR_RESULT]["status"] == "failed"
    assert collapsed.state == TrialState.COMPLETE and collapsed.value == 0.5
    assert recover(study, s, heartbeat=False, log=lambda line: None) == 0
    now = plan(study, s)
    assert (now.done, now.failed, now.waiting, now.new_configs) == (1, 1, 0, 0)


def test_local_workers_share_torchs_threads(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """--workers N starts N processes with 1/N of torch's threads each (at least one)."""
    import argparse

    import torch

    from spbench.sweep import command

    assert [command.worker_threads(t, n) for t, n in ((4, 1), (4, 2), (8, 3), (2, 4), (1, 1))] == [4, 2, 2, 1, 1]
    started: list[int] = []

    class Done:  # a worker that has finished by the first look
        pid, exitcode = 1, 0

        def __init__(self, target: Any, name: str, daemon: bool, args: tuple[Any, ...]) -> None:
            started.append(args[-1])

        def start(self) -> None: ...
        def is_alive(self) -> bool: return False
        def join(self, timeout: float | None = None) -> None: ...

    monkeypatch.setattr(command.multiprocessing, "get_context", lambda method: argparse.Namespace(Process=Done))
    monkeypatch.setattr(command.time, "sleep", lambda s: None)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(4)
        args = argparse.Namespace(storage=None, heartbeat=60, max_retry=2, workers=2)
        assert command.supervise(setup(), args, tmp_path, heartbeat=False) == 0
    finally:
        torch.set_num_threads(threads)
    assert started == [2, 2]


def test_a_trial_key_tells_grad_checkpointing_apart_and_keeps_older_keys() -> None:
    """The trial key is the one configuration identity: a Case field added later (gradient
    checkpointing) counts, and at its default leaves the keys older studies stored unchanged."""
    import dataclasses

    from spbench.sweep.setup import config_key

    plain = setup()
    gc = dataclasses.replace(plain, case=dataclasses.replace(plain.case, grad_checkpointing=True))
    config = {"lr": 1e-3}
    keys = {config_key(s.trial_case(config), config, s) for s in (plain, gc)}
    assert len(keys) == 2
    # the key a study stored for this configuration before the identity was shared
    assert config_key(plain.trial_case(config), config, plain) == "ca93a82fbdd7a26f"


def test_adopt_takes_over_the_finished_full_budget_runs_of_another_study_that_are_its_units() -> None:
    """A seed study over the search's best rate takes the search's own run of that rate and seed
    (same unit key: case, resolved hyperparameters, training setup, seed) and nothing else: not a
    pruned run, not another rate, not a run of another training setup; once, however often asked."""
    from spbench.sweep.trials import adopt, units_of

    seeds = Setup(Case("lora", "minilm-l6", 32, 64), tuple(build_space(methods.get("lora"), grid=["lr=1e-3"])),
                  seeds=(0, 1, 2))
    units = units_of(seeds)
    assert sorted(seed for _, seed, _ in units.values()) == [0, 1, 2]
    mine = {seed: unit for unit, (_, seed, _) in units.items()}
    other_budget = units_of(Setup(seeds.case, seeds.params, seeds=(0,), budget="epochs=1"))
    search = optuna.create_study(direction="maximize", study_name="search")
    taken = add(search, TrialState.COMPLETE, 1e-3, 0, 0.9, **{ATTR_UNIT: mine[0]})
    add(search, TrialState.PRUNED, 1e-3, 1, 0.95, status="pruned", **{ATTR_UNIT: mine[1]})  # stopped early
    add(search, TrialState.COMPLETE, 3e-3, 2, 0.8)  # another rate
    add(search, TrialState.COMPLETE, 1e-3, 2, 0.7, **{ATTR_UNIT: next(iter(other_budget))})  # another budget
    study = optuna.create_study(direction="maximize", study_name="seeds")
    lines: list[str] = []
    assert adopt(study, seeds, search, log=lines.append) == 1
    assert adopt(study, seeds, search, log=lines.append) == 0  # once
    [trial] = study.trials
    info = trial.user_attrs[ATTR_RESULT]
    assert trial.state == TrialState.COMPLETE and trial.values == [0.9] and trial.params == {"lr": 1e-3}
    assert trial.user_attrs[ATTR_UNIT] == mine[0] and trial.user_attrs[ATTR_SEED] == 0
    assert info["sweep"]["adopted_from"] == {"study": "search", "trial": taken}
    assert info["sweep"]["study"] == seeds.study_name and info["val_accuracy"] == 0.9
    assert lines == [f"trial 0: seed 0 taken from search's trial {taken} (the same run, finished at the full "
                     "budget): validation accuracy 90.00%, dev 90.00%"]
    now = plan(study, seeds)  # seeds 1 and 2 queued to train; seed 0 done
    assert (now.done, now.waiting, now.new_configs) == (1, 2, 0)
    assert finished_holder(study, mine[0], 99) == 0


def rung_trial(study: Any, state: TrialState, lr: float, values: dict[int, float], seed: int = 0) -> int:
    """A trial of a pruned search that reported ``values`` at its rungs (a pruned one carries a
    result saying so, as spbench's objective stores it)."""
    user: dict[str, Any] = {ATTR_SEED: seed, ATTR_CONFIG: f"c{lr}", ATTR_UNIT: f"c{lr}/seed={seed}"}
    if state == TrialState.PRUNED:
        user[ATTR_RESULT] = {"status": "pruned", "val_accuracy": values[max(values)]}
    elif state == TrialState.COMPLETE:
        user[ATTR_RESULT] = {"status": "ok", "val_accuracy": values[max(values)]}
    rungs = {f"completed_rung_{step.bit_length() - 1}": v for step, v in values.items()}  # successive halving's
    study.add_trial(create_trial(state=state, params={"lr": lr}, distributions={"lr": LR},
                                 values=[values[max(values)]] if state == TrialState.COMPLETE else None,
                                 intermediate_values=values, user_attrs=user, system_attrs=rungs))
    return len(study.trials) - 1


def killed_and_retried(study: Any) -> None:
    """The reference's lora_blocks search: lr 5e-4's first run was killed after three rungs and
    its retry reported the same values, then reached the full budget."""
    rung_trial(study, TrialState.FAIL, 5e-4, {1: 0.8578, 2: 0.8796, 4: 0.9094})
    rung_trial(study, TrialState.COMPLETE, 5e-4, {1: 0.8578, 2: 0.8796, 4: 0.9094, 8: 0.9106})


def test_a_killed_run_beside_its_retry_counts_once_at_a_rung() -> None:
    """The second best of a rung goes on, however often the best one's run was killed and retried;
    the third best (two other runs above it) is pruned."""
    from spbench.sweep.pruning import UNIT_ATTR, Competitors, keeps, make_pruner

    assert UNIT_ATTR == ATTR_UNIT

    study = optuna.create_study(direction="maximize", pruner=make_pruner(setup(pruner="halving")))
    killed_and_retried(study)
    assert [t.number for t in Competitors(study).get_trials()] == [1]
    second = study.ask({"lr": LR})
    second.report(0.844, 1)
    assert study.pruner.inner.prune(study, study.trials[second.number])  # halving alone stops it
    assert not second.should_prune()  # among the best two: goes on (counted twice, 5e-4 pushed it out)
    assert keeps(study.trials, study.trials[second.number])
    study.tell(second, state=TrialState.PRUNED)
    rung_trial(study, TrialState.COMPLETE, 3e-4, {1: 0.87, 8: 0.90})
    third = study.ask({"lr": LR})
    third.report(0.80, 1)
    assert third.should_prune()


def test_reopen_trains_again_the_pruned_trials_the_rule_now_keeps() -> None:
    """A search pruned while a killed run counted twice: the trials that are among the best two at
    their rung once it counts once are queued again from the start; the stopped trials leave the
    units and results; the others (pruned by runs that do count) stay pruned; once only."""
    from spbench.sweep.pruning import reopened
    from spbench.sweep.trials import counted, reopen

    study = optuna.create_study(direction="maximize")
    killed_and_retried(study)
    low = rung_trial(study, TrialState.PRUNED, 1.6e-4, {1: 0.8440})
    high = rung_trial(study, TrialState.PRUNED, 1.6e-3, {1: 0.8681, 2: 0.8440})
    rung_trial(study, TrialState.PRUNED, 5e-3, {1: 0.5573})
    rung_trial(study, TrialState.PRUNED, 5e-5, {1: 0.8280})  # 5e-4, 1.6e-3 and 1.6e-4 above it
    lines: list[str] = []
    grid = Setup(Case("lora", "minilm-l6", 32, 64), tuple(build_space(methods.get("lora"), grid=["lr=5e-5,1.6e-4,5e-4,1.6e-3,5e-3"])),
                 pruner="halving")
    assert reopen(study, grid, log=lines.append) == [low, high]
    assert reopened(study) == {low, high} and len(lines) == 2 and "trained again from the start" in lines[0]
    queued = study.get_trials(states=(TrialState.WAITING,))
    assert [(params_of(t), t.user_attrs[ATTR_UNIT]) for t in queued] == [
        ({"lr": 1.6e-4}, "c0.00016/seed=0"), ({"lr": 1.6e-3}, "c0.0016/seed=0")]
    assert finished_holder(study, "c0.00016/seed=0", 99) is None  # no longer done
    assert low not in [t.number for t in counted(study)]
    now = plan(study, grid, enqueue=False)
    assert (now.done, now.waiting) == (3, 2)
    assert reopen(study, grid, log=lines.append) == [] and len(lines) == 2
    assert reopen(study, Setup(grid.case, grid.params), log=lines.append) == []  # no pruner: nothing to re-decide


def test_reopen_leaves_alone_a_trial_the_current_rule_pruned() -> None:
    """A trial stopped by the current rule carries it; it is never taken again, whatever the
    numbering says (a parallel worker's later-numbered trial may have reported first)."""
    from spbench.sweep.trials import ATTR_RULE, PRUNE_RULE, stale

    study = optuna.create_study(direction="maximize")
    rung_trial(study, TrialState.COMPLETE, 5e-4, {1: 0.88, 8: 0.91})
    late = rung_trial(study, TrialState.PRUNED, 1.6e-4, {1: 0.85})
    rung_trial(study, TrialState.COMPLETE, 1.6e-3, {1: 0.90, 8: 0.92})  # numbered after it, reported before it
    assert [t.number for t in stale(study)] == [late]  # without the mark: taken again (a run's cost)
    marked = optuna.create_study(direction="maximize")
    rung_trial(marked, TrialState.COMPLETE, 5e-4, {1: 0.88, 8: 0.91})
    user = {**study.trials[late].user_attrs, ATTR_RULE: PRUNE_RULE}
    marked.add_trial(create_trial(state=TrialState.PRUNED, params={"lr": 1.6e-4}, distributions={"lr": LR},
                                  intermediate_values={1: 0.85}, user_attrs=user))
    assert stale(marked) == []


def test_best_from_says_when_no_configuration_finished_ok() -> None:
    study = optuna.create_study(direction="maximize")
    study.set_user_attr("spbench_setup", {"units": 2})
    add(study, TrialState.COMPLETE, 1e-3, 0, 0.5, status="collapsed")
    add(study, TrialState.PRUNED, 3e-3, 0, 0.6, status="pruned")
    with pytest.raises(InputError, match="no configuration that finished ok"):
        best_params(study)


def test_best_from_refuses_a_search_with_decisions_to_take_again() -> None:
    study = optuna.create_study(direction="maximize")
    study.set_user_attr("spbench_setup", {"units": 3})
    killed_and_retried(study)
    rung_trial(study, TrialState.PRUNED, 1.6e-4, {1: 0.8440})
    rung_trial(study, TrialState.COMPLETE, 1.6e-3, {1: 0.86, 8: 0.90})
    with pytest.raises(InputError, match="pruned trials to train again"):
        best_params(study)


def test_adopt_takes_the_study_s_own_objectives_and_leaves_a_unit_in_training_alone() -> None:
    """A --pareto seed study takes a plain search's run with its own two objectives (accuracy,
    predicted peak); a unit another worker is training is not taken over beside it."""
    from spbench.sweep.trials import ATTR_PREDICTED, adopt, units_of

    pareto = Setup(Case("lora", "minilm-l6", 32, 64), tuple(build_space(methods.get("lora"), grid=["lr=1e-3"])),
                   seeds=(0, 1), pareto=True)
    mine = {seed: unit for unit, (_, seed, _) in units_of(pareto).items()}
    search = optuna.create_study(direction="maximize", study_name="search")
    add(search, TrialState.COMPLETE, 1e-3, 0, 0.9, **{ATTR_UNIT: mine[0], ATTR_PREDICTED: {"predicted_cuda_peak_bytes": 5e8}})
    add(search, TrialState.COMPLETE, 1e-3, 1, 0.8, **{ATTR_UNIT: mine[1]})  # no prediction: no second objective
    study = optuna.create_study(directions=["maximize", "minimize"], study_name="seeds")
    assert adopt(study, pareto, search, log=lambda _: None) == 1
    assert study.trials[0].values == [0.9, 5e8]
    plain = Setup(pareto.case, pareto.params, seeds=(0, 1))
    busy = optuna.create_study(direction="maximize")
    training = next(u for u, (_, seed, _) in units_of(plain).items() if seed == 1)
    add(busy, TrialState.RUNNING, 1e-3, 1, **{ATTR_UNIT: training})
    assert adopt(busy, plain, search, log=lambda _: None) == 1  # seed 0 only: seed 1 is training


def test_studies_lists_each_study_of_a_storage_with_its_runs_and_best() -> None:
    from spbench.sweep.summary import studies

    storage = optuna.storages.InMemoryStorage()
    search = optuna.create_study(direction="maximize", study_name="lora-lr-pruned", storage=storage)
    search.set_user_attr("spbench_setup", {"units": 3})
    add(search, TrialState.COMPLETE, 1e-3, 0, 0.90, dev=0.88)
    add(search, TrialState.COMPLETE, 3e-3, 0, 0.85)
    add(search, TrialState.PRUNED, 1e-4, 0, 0.60, status="pruned")
    seeds = optuna.create_study(direction="maximize", study_name="lora-best-3seeds", storage=storage)
    add(seeds, TrialState.RUNNING, 1e-3, 1)
    add(seeds, TrialState.WAITING, 1e-3, 2)
    text = studies(storage)
    first = next(line for line in text.splitlines() if line.startswith("lora-lr-pruned"))
    assert re.split(r"\s{2,}", first)[1:5] == ["2 of 3", "1", "0", "0"]
    assert "lora (lr=0.001): validation 90.00, dev 88.00 (1)" in first
    second = next(line for line in text.splitlines() if line.startswith("lora-best-3seeds"))
    assert re.split(r"\s{2,}", second)[1:8] == ["0", "0", "0", "1", "1", "—", "0.00"]
    assert studies(optuna.storages.InMemoryStorage()) == "no study in this storage"


def test_a_document_predicts_again_what_an_older_schema_predicted() -> None:
    """A study's predicted figures are the case's and the code's, not a run's: one stored under a
    schema that gave them another meaning is predicted again (same case, same configuration),
    so the study's document reports beside newer ones; a current one is kept as stored."""
    from spbench.result import SCHEMA_VERSION
    from spbench.sweep.document import current_prediction
    from spbench.sweep.trials import predicted_info

    now = predicted_info(Case("lora", "tiny-bert", 2, 16, overrides=(("lr", "0.001"), ("targets", "blocks"))))
    assert current_prediction(now) is now
    old = {**now, "schema_version": 1, "predicted_cuda_peak_bytes": 1}
    again = current_prediction(old)
    assert again["schema_version"] == SCHEMA_VERSION and again["predicted_cuda_peak_bytes"] == now["predicted_cuda_peak_bytes"]
    assert again["case_id"] == now["case_id"] and again["method_config"] == now["method_config"]
    gone = {**old, "method": "no_such_method"}
    assert current_prediction(gone) is gone  # no longer predictable: kept as stored
