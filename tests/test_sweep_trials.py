"""The sweep's bookkeeping on an in-memory Optuna study (no training): what counts as done, which
seeds get queued, who yields when two trials race for one unit, what --best-from takes, and
which running trials recovery treats as dead."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime, timedelta
from typing import Any

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from spbench import methods
from spbench.errors import InputError
from spbench.sweep.setup import Setup
from spbench.sweep.space import build_space
from spbench.sweep.trials import (ATTR_CLAIM, ATTR_CONFIG, ATTR_OWNER, ATTR_RESULT, ATTR_SEED, ATTR_UNIT, _dead,
                                  best_params, finished_holder, params_of, plan, rival, worker_alive,
                                  worker_id)

LR = FloatDistribution(1e-5, 1e-2, log=True)


def setup(**kw: Any) -> Setup:
    params = tuple(build_space(methods.get("lora"), grid=["lr=1e-3,3e-3"]))
    return Setup("lora", "minilm-l6", 32, 64, params, **kw)


def add(study: Any, state: TrialState, lr: float, seed: int, accuracy: float | None = None, **attrs: Any) -> int:
    user = {ATTR_SEED: seed, ATTR_CONFIG: f"c{lr}", ATTR_UNIT: f"c{lr}/seed={seed}", **attrs}
    if accuracy is not None:
        user[ATTR_RESULT] = {"method": "lora", "method_config": {"lr": lr}, "backbone": "minilm-l6",
                             "batch_size": 32, "seq_len": 64, "objective": "classification", "dtype": "float32",
                             "device": "cpu", "sst2_accuracy": accuracy, "sst2_f1": accuracy,
                             "train_config": {"budget": "steps=1", "seed": seed},
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
