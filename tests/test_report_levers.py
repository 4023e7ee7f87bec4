"""Levers in reports: full_ft+gc beside full_ft, mezo+bf16-weights beside mezo, one table and
one chart per backbone and shape.

tests/fixtures/levers.json is a real run:
    pytest benchmarks/test_memory.py benchmarks/test_step.py --backbones tiny-bert \\
        --methods full_ft,lora,lst,side_lora,mezo --grad-checkpointing off,on \\
        --dtypes float32,bf16-weights --benchmark-json=tests/fixtures/levers.json
"""

from __future__ import annotations

from pathlib import Path

import pytest

from spbench.cli import main
from spbench.reporting.results import groups, load, merge_rows

FIXTURE = Path(__file__).parent / "fixtures" / "levers.json"
LABELS = {"full_ft", "full_ft+gc", "lora", "lora+gc", "lst", "lst+bf16-weights", "mezo", "mezo+bf16-weights",
          "side_lora", "side_lora+gc"}


def test_levers_share_the_table_of_their_method() -> None:
    rows = merge_rows(load([str(FIXTURE)])[1])
    tables = groups(rows)
    assert len(tables) == 1  # one measured device, one backbone and shape: one table
    title, rs = tables[0]
    assert {r.label for r in rs} == LABELS
    assert "float32" in title and "gc" not in title
    order = [r.label for r in rs]
    assert order.index("full_ft") + 1 == order.index("full_ft+gc")  # each lever right after its method


def test_levers_move_the_figures_they_should() -> None:
    rows = {r.label: r.metrics for r in merge_rows(load([str(FIXTURE)])[1])}
    for name in ("full_ft", "lora", "side_lora"):
        plain, gc = rows[name], rows[f"{name}+gc"]
        assert gc["mem_activations_bytes"] < plain["mem_activations_bytes"]
        assert gc["peak_bytes"] < plain["peak_bytes"]
    for name in ("mezo", "lst"):
        plain, half = rows[name], rows[f"{name}+bf16-weights"]
        assert half["mem_params_bytes"] < plain["mem_params_bytes"]
        assert half["predicted_inference_peak_bytes"] < plain["predicted_inference_peak_bytes"]


def test_baseline_report_shows_levers_as_percentages(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(FIXTURE), "--baseline", "full_ft"]) == 0
    out = capsys.readouterr().out
    lines = {line.split("|")[1].strip(): line for line in out.splitlines() if line.startswith("| ")}
    assert LABELS <= set(lines)
    assert "%" in lines["full_ft+gc"] and "%" in lines["mezo+bf16-weights"]


def test_compare_a_method_with_its_lever(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(FIXTURE), "--compare", "full_ft", "full_ft+gc"]) == 0
    out = capsys.readouterr().out
    assert "full_ft vs full_ft+gc" in out and "full_ft+gc / full_ft" in out


def test_plot_shows_levers_beside_methods() -> None:
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from spbench.reporting.plot import _breakdown, _scatter

    rows = merge_rows(load([str(FIXTURE)])[1])
    fig, (ax1, ax2) = plt.subplots(1, 2)
    _scatter(ax1, rows, "step_time_s")
    _breakdown(ax2, rows)
    assert LABELS <= {t.get_text() for t in ax1.texts}
    assert LABELS <= {t.get_text() for t in ax2.get_xticklabels()}
    plt.close(fig)
