"""What ``spbench report`` and ``spbench check`` are made of.

    command.py   the ``spbench report`` command: arguments, views, output
    results.py   pytest-benchmark JSON -> validated records -> one row per case, grouped
    tables.py    overview / --compare / --baseline tables as format-neutral cells
    render.py    Markdown (GitHub), LaTeX (booktabs), terminal (rich), CSV
    plot.py      peak memory vs accuracy (Pareto front) and the memory breakdown (matplotlib)

Units are scaled and best values marked here only; ``spbench.result.METRICS`` declares each
metric's unit and direction once.
"""
