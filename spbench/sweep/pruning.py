"""Multi-fidelity search: Optuna's pruners stop weak trials early, so the configuration is
chosen at the full budget without paying the full budget for every configuration.

A trial scores its validation split at 1/8, 1/4, 1/2 and all of its budget (Optuna steps 1,
2, 4, 8: ``setup.RUNGS``) and reports each; the pruner decides after each report:
``halving`` is successive halving (asynchronous, reduction factor 2, from one eighth),
``hyperband`` runs several such brackets. Both are wrapped in :class:`KeepBest`, so the best
``KEEP_PER_RUNG`` configurations of every cheaper rung reach the full budget. (``RUNGS``)

A pruned trial is a data point: its result (status "pruned", where it stopped and its
validation accuracy there) is stored like any other trial's.
"""

from __future__ import annotations

import math
from typing import Any

import optuna

# Where a pruned trial reports its validation accuracy: eighths of the budget, as Optuna steps
# 1, 2, 4, 8 (successive halving with a reduction factor of 2 from one eighth).
RUNGS = (1, 2, 4, 8)
KEEP_PER_RUNG = 2  # the best configurations of every cheaper rung always reach the full budget


UNIT_ATTR = "spbench_unit"  # spbench.sweep.trials.ATTR_UNIT: a trial's configuration and seed
REOPENED = "spbench_reopened"  # study user attribute: pruned trials whose decision did not hold


def reopened(study: Any) -> set[int]:
    """Pruned trials trained again from the start (``spbench.sweep.trials.reopen``): no longer in any competition."""
    return set(study.user_attrs.get(REOPENED, ()))


class Competitors:
    """The study as a pruner must see it: each run that competes at a rung, once.

    Left out: a failed trial (a worker killed mid-run whose retry reports the same values again,
    or a run whose loss became NaN) and a pruned trial trained again (``trials.reopen``). Counting
    a killed run beside its retry would count one configuration twice at every rung it reached,
    and push the next one out of the best two."""

    def __init__(self, study: Any) -> None:
        self._study, self._skip = study, reopened(study)

    def get_trials(self, deepcopy: bool = True, states: Any = None) -> list[Any]:
        return [t for t in self._study.get_trials(deepcopy=deepcopy, states=states)
                if t.state != optuna.trial.TrialState.FAIL and t.number not in self._skip]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)


class KeepBest(optuna.pruners.BasePruner):
    """``inner``'s decision, except that a trial among the ``keep`` best values reported at
    its current step (by any trial of the study) goes on.

    With asynchronous successive halving alone, a trial after the first must beat every
    earlier one at a rung to be promoted, so a study whose first configuration is its best
    would finish one configuration at the full budget. With this rule the best ``keep`` of
    every rung reach the next one: the best two of a rung are among the best two of any subset
    of it, whenever they arrive.
    """

    def __init__(self, inner: optuna.pruners.BasePruner, keep: int) -> None:
        self.inner, self.keep = inner, keep

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        live = Competitors(study)
        # Optuna's successive halving reads the study's trials (its hyperband builds per-bracket
        # studies from the storage, so there a killed run may still count once more: the rule
        # below is what keeps the best two either way).
        inner_study = live if isinstance(self.inner, optuna.pruners.SuccessiveHalvingPruner) else study
        if not self.inner.prune(inner_study, trial):  # type: ignore[arg-type]
            return False
        return not keeps(study.get_trials(deepcopy=False), trial, self.keep)


def keeps(trials: list[optuna.trial.FrozenTrial], trial: optuna.trial.FrozenTrial, keep: int = KEEP_PER_RUNG,
          before: int | None = None) -> bool:
    """True when ``trial`` is among the ``keep`` best values reported at its last step, each
    configuration-and-seed counted once (a run and its retry, or a run trained again, report the
    same values), by the trials numbered below ``before`` only, when given (those that started
    before it)."""
    step = trial.last_step
    if step is None:
        return False
    value = trial.intermediate_values[step]
    mine = trial.user_attrs.get(UNIT_ATTR, trial.number)
    others: dict[Any, float] = {}
    for t in trials:
        unit = t.user_attrs.get(UNIT_ATTR, t.number)
        if unit != mine and step in t.intermediate_values and (before is None or t.number < before):
            others[unit] = max(others.get(unit, -math.inf), t.intermediate_values[step])
    return sum(1 for v in others.values() if v > value) < keep


def make_pruner(setup: Any) -> Any:
    """The pruner for ``setup.pruner`` (a ``spbench.sweep.setup.Setup``; "none": Optuna's no-op pruner)."""
    if setup.pruner == "none":
        return optuna.pruners.NopPruner()
    if setup.pruner == "halving":
        inner: optuna.pruners.BasePruner = optuna.pruners.SuccessiveHalvingPruner(
            min_resource=1, reduction_factor=2, min_early_stopping_rate=0)
    else:
        inner = optuna.pruners.HyperbandPruner(min_resource=1, max_resource=RUNGS[-1], reduction_factor=2)
    return KeepBest(inner, KEEP_PER_RUNG)
