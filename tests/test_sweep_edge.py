"""The reference script's grid extension (spbench.sweep.edge): one rate half a decade beyond the
grid's edge when the best full-budget rate by validation accuracy sits on it, nothing otherwise;
and the script's ``beyond_edge`` is that function."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from spbench.sweep.edge import beyond_edge, main

GRID = (1e-4, 3e-4, 1e-3)
SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "reference_sweep.sh"


def run(lr: float, val: float, status: str = "ok", dev: float = 0.5) -> dict[str, Any]:
    return {"method_config": {"lr": lr, "r": 8}, "status": status, "val_accuracy": val, "sst2_accuracy": dev}


def grid(*vals: float, statuses: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    statuses = statuses or ("ok",) * len(vals)
    return [run(lr, v, s) for lr, v, s in zip(GRID, vals, statuses)]


def test_best_at_the_top_adds_a_rate_half_a_decade_above() -> None:
    assert beyond_edge(grid(0.80, 0.82, 0.85)) == [1e-4, 3e-4, 1e-3, 3.2e-3]


def test_best_at_the_bottom_adds_a_rate_half_a_decade_below() -> None:
    assert beyond_edge(grid(0.85, 0.82, 0.80)) == [3.2e-5, 1e-4, 3e-4, 1e-3]


def test_best_inside_or_a_single_rate_or_no_full_budget_run_adds_nothing() -> None:
    assert beyond_edge(grid(0.80, 0.85, 0.82)) is None
    assert beyond_edge([run(1e-3, 0.9)]) is None
    assert beyond_edge(grid(0.80, 0.85, 0.82, statuses=("pruned",) * 3)) is None


def test_only_full_budget_runs_by_validation_count() -> None:
    """A pruned run (stopped early) or a failed / collapsed one never makes an edge the best, and
    dev's accuracy is never read: here the best full-budget rate by validation is the middle one."""
    runs = grid(0.90, 0.85, 0.95, statuses=("pruned", "ok", "collapsed"))
    runs.append(run(1e-4, 0.10, dev=0.99))  # another seed's run: dev high, validation low
    runs[1]["sst2_accuracy"] = 0.10
    assert beyond_edge(runs) is None
    assert beyond_edge(grid(0.80, 0.85, 0.90, statuses=("ok", "ok", "failed"))) is None


def _study(path: Path, runs: list[dict[str, Any]]) -> Path:
    benchmarks = [{"param": f"trial{i}", "extra_info": r} for i, r in enumerate(runs)]
    benchmarks.append({"param": "predicted", "extra_info": {"method_config": {"lr": 1e-2}}})  # no run: not a rate
    path.write_text(json.dumps({"benchmarks": benchmarks}))
    return path


def test_the_command_prints_the_grid_and_the_script_calls_it(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    edge = _study(tmp_path / "edge.json", grid(0.80, 0.82, 0.85))
    inside = _study(tmp_path / "inside.json", grid(0.80, 0.85, 0.82))
    assert main([str(edge)]) == 0 and capsys.readouterr().out == "0.0001,0.0003,0.001,0.0032\n"
    assert main([str(inside)]) == 0 and capsys.readouterr().out == ""
    assert main([str(tmp_path / "missing.json")]) == 2 and "cannot read" in capsys.readouterr().err
    # the script's own function (its body, run as the script runs it)
    text = SCRIPT.read_text()
    body = text[text.index("beyond_edge() {"):]
    body = body[:body.index("\n}\n") + 3]
    for path, expected in ((edge, "0.0001,0.0003,0.001,0.0032\n"), (inside, "")):
        proc = subprocess.run(["bash", "-c", f'set -euo pipefail\n{body}\nbeyond_edge "$1"', "_", str(path)],
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == expected
