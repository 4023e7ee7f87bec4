"""One more learning rate beyond the grid, when a finished study's best rate is on its edge.

    python -m spbench.sweep.edge OUT/lora-lr-pruned.json     # e.g. 0.0001,0.00032,0.001,0.0032

``benchmarks/reference_sweep.sh`` searches each method's declared learning-rate grid (two rates
per decade). When the best rate at the full budget (by validation accuracy; runs the pruner
stopped early, failed and collapsed runs do not count) is the grid's highest or lowest, the
optimum may lie beyond it: the script sweeps again on the grid this prints, which has one rate
half a decade further out. It prints nothing when the best is inside the grid, when the grid has
a single rate, or when no run reached the full budget.
"""

from __future__ import annotations

import json
import math
import sys
from typing import Any

from spbench.errors import InputError

HALF_DECADE = math.sqrt(10)


def beyond_edge(runs: list[dict[str, Any]]) -> list[float] | None:
    """The grid of ``runs`` (a study's results, ``extra_info`` dicts) with one rate half a decade
    beyond its edge, where the best full-budget rate sits on that edge; else None."""
    rates = sorted({r["method_config"]["lr"] for r in runs})
    full = {r["method_config"]["lr"]: r["val_accuracy"] for r in runs
            if r.get("status") == "ok" and "val_accuracy" in r}
    if not full or len(rates) < 2:
        return None
    best = max(full, key=lambda lr: full[lr])
    if best not in (rates[0], rates[-1]):
        return None
    step = HALF_DECADE if best == rates[-1] else 1 / HALF_DECADE
    return sorted([*rates, float(f"{best * step:.2g}")])


def study_runs(path: str) -> list[dict[str, Any]]:
    """The trained runs of a sweep's result file (its predicted figures left out)."""
    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
        return [b["extra_info"] for b in doc["benchmarks"] if b.get("param") != "predicted"]
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{path}: not a sweep's result file ({type(exc).__name__}: {exc})") from None


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m spbench.sweep.edge STUDY.json", file=sys.stderr)
        return 2
    try:
        grid = beyond_edge(study_runs(args[0]))
    except InputError as exc:
        print(f"spbench.sweep.edge: {exc}", file=sys.stderr)
        return 2
    if grid is not None:
        print(",".join(f"{v:.2g}" for v in grid))
    return 0


if __name__ == "__main__":
    sys.exit(main())
