"""``spbench sweep``: hyperparameter sweeps and seeds on Optuna, resumable, on one machine or many.

    space.py     search spaces declared in each method's field metadata; --grid / --space
    setup.py     what a sweep fixes (case, training setup, seeds); storage, sampler, study
    trials.py    the objective (one ordinary accuracy run per trial), duplicates, recovery, a worker's loop
    document.py  the study as pytest-benchmark JSON for ``spbench report`` / ``spbench check``
    summary.py   what the command prints (plan, progress, results)
    command.py   the command line and local worker processes
    edge.py      one more learning rate where a finished grid's best is on its edge (reference script)

Importing this package imports neither optuna nor torch: ``spbench --help`` stays instant.
"""

from __future__ import annotations

from typing import Any


def add_parser(sub: Any) -> None:
    from spbench.sweep.command import add_parser as add

    add(sub)
