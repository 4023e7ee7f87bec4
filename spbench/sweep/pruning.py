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

from typing import Any

import optuna

# Where a pruned trial reports its validation accuracy: eighths of the budget, as Optuna steps
# 1, 2, 4, 8 (successive halving with a reduction factor of 2 from one eighth).
RUNGS = (1, 2, 4, 8)
KEEP_PER_RUNG = 2  # the best configurations of every cheaper rung always reach the full budget


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
        if not self.inner.prune(study, trial):
            return False
        step = trial.last_step
        value = trial.intermediate_values[step]
        others = [t.intermediate_values[step] for t in study.get_trials(deepcopy=False)
                  if t.number != trial.number and step in t.intermediate_values]
        return sum(1 for v in others if v > value) >= self.keep


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
