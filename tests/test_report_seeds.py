"""Reports of repeated runs: seeds folded into mean ± std (n), training setups kept apart, a failed
seed named and not averaged, a study's trial table with its best configuration, error bars."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from spbench.case import Case
from spbench.reporting.command import render, report_args
from spbench.result import PREDICTED, Result

TRAIN = {"budget": "epochs=1.0", "warmup": 0.06, "clip": 1.0, "eval_every": 0, "max_len": 64,
         "lr_schedule": "linear", "group_by_length": True}


def run(lr: str, seed: int, accuracy: float | None, budget: str = "epochs=1.0", trial: int = 0) -> dict[str, Any]:
    case = Case("lora", "minilm-l6", 32, 64, overrides=(("lr", lr),))
    sweep = {"study": f"lora-{budget}", "trial": trial, "params": {"lr": float(lr)}, "seed": seed, "config": lr}
    train = {**TRAIN, "budget": budget, "seed": seed}
    if accuracy is None:
        return Result.of(case, status="failed", reason="loss became nan at step 3", train_config=train,
                         notes={"sweep": sweep}).to_extra_info()
    metrics = {"sst2_accuracy": accuracy, "sst2_f1": accuracy - 0.01, "train_time_s": 100.0 + seed,
               "train_steps": 2105, "train_examples": 67360, "peak_bytes": 400 << 20}
    return Result.of(case, metrics=metrics, train_config=train, notes={"sweep": sweep}).to_extra_info()


def predicted(lr: str) -> dict[str, Any]:
    case = Case("lora", "minilm-l6", 32, 64, overrides=(("lr", lr),))
    return Result.of(case, PREDICTED, metrics={"predicted_cuda_peak_bytes": 300 << 20}).to_extra_info()


def write(path: Path, infos: list[dict[str, Any]]) -> str:
    path.write_text(json.dumps({"benchmarks": [{"name": f"b{i}", "extra_info": info} for i, info in enumerate(infos)]}))
    return str(path)


def test_seeds_fold_into_mean_std_and_count(tmp_path: Path) -> None:
    infos = [run("3e-4", 0, 0.84, trial=0), run("3e-4", 1, 0.85, trial=1), run("3e-4", 2, 0.86, trial=2),
             run("3e-4", 3, None, trial=3), run("1e-3", 0, 0.80, trial=4), predicted("3e-4"), predicted("1e-3")]
    text = render(report_args([write(tmp_path / "s.json", infos)]))
    row = next(line for line in text.splitlines() if line.startswith("| lora (lr=0.0003)"))
    assert "85.00 ± 1.00 (3)" in row and "84.00 ± 1.00 (3)" in row  # accuracy and F1, the failed seed left out
    assert "80.00 (1)" in text  # a single run: its count, no spread
    assert "seeds=[0, 1, 2]" in text and "seed 3: loss became nan at step 3" in text
    assert "## study lora-epochs=1.0: trials" in text
    trials = [line for line in text.splitlines() if line.startswith("|") and line.split("|")[1].strip().isdigit()]
    assert len(trials) == 5 and "failed" in trials[3]
    # these runs recorded no selection split (older results): the best is dev's, and the report says so
    assert "best on DEV (the reported split): lora (lr=0.0003): dev accuracy 85.00 ± 1.00 (3) %, seeds 0,1,2; " \
           "hyperparameters:" in text
    assert text.startswith("# spbench report (SELECTED ON DEV: 4 run(s)")
    assert "lr=0.0003, r=8" in text  # the best configuration's hyperparameters, all of them


def test_training_setups_stay_apart(tmp_path: Path) -> None:
    infos = [run("3e-4", 0, 0.80, budget="epochs=0.25"), run("3e-4", 0, 0.86), run("3e-4", 1, 0.88, trial=1)]
    text = render(report_args([write(tmp_path / "s.json", infos)]))
    assert "lora [epochs=0.25]" in text and "lora [epochs=1.0]" in text
    assert "80.00 (1)" in text and "87.00 ± 1.41 (2)" in text


def test_plot_draws_error_bars_over_seeds(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from spbench.reporting.plot import _scatter
    from spbench.reporting.results import load
    from spbench.reporting.seeds import merge_over_seeds

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    infos = [run("3e-4", 0, 0.84), run("3e-4", 1, 0.86, trial=1), predicted("3e-4")]
    rows = merge_over_seeds(load([write(tmp_path / "s.json", infos)])[1])
    fig, ax = plt.subplots()
    _scatter(ax, rows, "sst2_accuracy")
    bars = [c for c in ax.containers if type(c).__name__ == "ErrorbarContainer"]
    assert len(bars) == 1 and "std over seeds" in ax.get_title()
    (segment,) = bars[0].lines[2][0].get_segments()
    assert segment[1][1] - segment[0][1] == pytest.approx(2 * 1.4142, rel=1e-3)  # ±1 std in %
    plt.close(fig)


def test_configurations_are_keyed_by_every_case_field() -> None:
    """Runs that differ only in a lever (checkpointing) or in the device that trained them are
    different configurations; each still finds its own case's predicted peak."""
    from dataclasses import replace

    from spbench.reporting.sweep import configurations

    plain = run("3e-4", 0, 0.84)
    gc_case = replace(Case("lora", "minilm-l6", 32, 64, overrides=(("lr", "3e-4"),)), grad_checkpointing=True)
    gc_run = {**plain, **Result.of(gc_case, metrics={"sst2_accuracy": 0.80}, train_config={**TRAIN, "seed": 0}).to_extra_info()}
    on_cuda = {**plain, "device": "cuda"}
    confs = configurations([Result.from_extra_info(i) for i in (plain, gc_run, on_cuda, predicted("3e-4"))])
    assert len(confs) == 3 and all(len(c.seeds) == 1 for c in confs)
    assert sum(c.predicted_peak == 300 << 20 for c in confs) == 2  # the gc case has no predicted record


def predictions(labels: str, right: list[bool]) -> dict[str, Any]:
    predicted = "".join(y if ok else str(1 - int(y)) for y, ok in zip(labels, right))
    return {"split": "dev", "examples": len(labels), "sha256": "d" * 16, "labels": labels, "predicted": predicted}


def scored(method: str, seed: int, right: list[bool], labels: str, status: str = "ok", val: float = 0.9) -> dict[str, Any]:
    """A finished run that selected on validation, with its per-example dev predictions."""
    import dataclasses

    case = Case(method, "minilm-l6", 32, 64)
    acc = sum(right) / len(right)
    train = {**TRAIN, "seed": seed, "select_on": "validation", "validation": {"size": 872, "seed": 0, "sha256": "v"}}
    result = Result.of(case, status=status, reason="collapsed: predicts class 1 for all dev examples" if status != "ok" else "",
                       metrics={"sst2_accuracy": acc, "sst2_f1": acc, "val_accuracy": val}, train_config=train)
    return dataclasses.replace(result, predictions=predictions(labels, right)).to_extra_info()


def test_accuracy_carries_an_interval_over_dev_examples_and_compare_is_paired(tmp_path: Path) -> None:
    """A known difference: B gets right every sentence A gets right, plus 60 more of 400; the
    paired interval excludes 0 and p is tiny. Identical predictions: the interval is [0, 0], p = 1.
    Runs that selected on validation give a report without the dev warning."""
    import random

    rng = random.Random(0)
    labels = "".join(rng.choice("01") for _ in range(400))
    a = [rng.random() < 0.75 for _ in range(400)]
    wrong = [i for i, ok in enumerate(a) if not ok]
    b = list(a)
    for i in wrong[:60]:
        b[i] = True
    infos = [scored("lora", s, a, labels) for s in (0, 1)] + [scored("full_ft", s, b, labels) for s in (0, 1)]
    path = write(tmp_path / "r.json", infos)
    text = render(report_args([path]))
    assert "SELECTED ON DEV" not in text
    row = next(line for line in text.splitlines() if line.startswith("| lora "))
    acc = sum(a) / 400 * 100
    lo, hi = (float(v) for v in row.split(" (2) [")[1].split("]")[0].split(", "))
    assert lo < acc < hi and 5 < hi - lo < 10  # about ±2 sd of a proportion near 0.75 on 400 sentences
    compared = render(report_args([path], compare=["lora", "full_ft"]))
    line = next(line for line in compared.splitlines() if "paired dev accuracy" in line)
    assert "+15.00 pp [" in line and "full_ft better" in line and "400 sentences, 2 vs 2 seeds" in line
    low = float(line.split("pp [")[1].split(",")[0])
    assert low > 0
    same = [scored("lora", 0, a, labels), scored("full_ft", 0, a, labels)]
    text = render(report_args([write(tmp_path / "same.json", same)], compare=["lora", "full_ft"]))
    assert "+0.00 pp [+0.00, +0.00], p = 1: not distinguishable from noise at this size" in text


def test_a_collapsed_run_stands_out_and_is_not_averaged(tmp_path: Path) -> None:
    labels = "01" * 50
    infos = [scored("lora", 0, [True] * 80 + [False] * 20, labels),
             scored("lora", 1, [c == "1" for c in labels], labels, status="collapsed")]
    text = render(report_args([write(tmp_path / "c.json", infos)]))
    row = next(line for line in text.splitlines() if line.startswith("| lora "))
    assert "80.00 (1)" in row  # the collapsed seed is not in the mean
    assert "seed 1: collapsed: predicts class 1 for all dev examples" in text


def test_a_run_given_twice_counts_once_with_a_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from spbench.cli import main

    path = write(tmp_path / "s.json", [run("3e-4", 0, 0.84), run("3e-4", 1, 0.86, trial=1)])
    copy = tmp_path / "copy.json"
    copy.write_bytes(Path(path).read_bytes())
    for again in (path, str(tmp_path / "." / "s.json"), str(copy)):  # the file twice, or the same runs twice
        assert main(["report", path, again]) == 0
        out, err = capsys.readouterr()
        row = next(line for line in out.splitlines() if line.startswith("| lora"))
        assert "85.00 ± 1.41 (2)" in row, row  # two seeds, not four
        warning = [line for line in err.splitlines() if "warning" in line]
        assert len(warning) == 1 and "duplicate" in warning[0] and again in warning[0], err


def test_one_seed_with_two_different_results_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from spbench.cli import main

    first = write(tmp_path / "a.json", [run("3e-4", 0, 0.84)])
    second = write(tmp_path / "b.json", [run("3e-4", 0, 0.88)])
    assert main(["report", first, second]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "seed 0" in err and first in err and second in err, err


def test_two_seeds_give_the_sample_std_even_when_it_is_zero(tmp_path: Path) -> None:
    """n = 2: the sample standard deviation (|a - b| / sqrt 2), in the seed table and in the
    study's best line; two equal seeds show ± 0.00 (2), not a bare count that reads as one run."""
    infos = [run("3e-4", 0, 0.86, trial=0), run("3e-4", 1, 0.88, trial=1),
             run("1e-3", 0, 0.80, trial=2), run("1e-3", 1, 0.80, trial=3)]
    text = render(report_args([write(tmp_path / "s.json", infos)]))
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| lora (lr=")}
    assert "87.00 ± 1.41 (2)" in rows["lora (lr=0.0003)"]
    assert "80.00 ± 0.00 (2)" in rows["lora (lr=0.001)"]
    assert "lora (lr=0.0003): dev accuracy 87.00 ± 1.41 (2) %, seeds 0,1" in text
    from spbench.reporting.sweep import configuration_rows, configurations

    _, table = configuration_rows(configurations([Result.from_extra_info(i) for i in infos], select="sst2_accuracy"))
    cells = {row[0]: row[2] for row in table}  # configuration -> dev accuracy
    assert cells == {"lora (lr=0.0003)": "87.00 ± 1.41 (2)", "lora (lr=0.001)": "80.00 ± 0.00 (2)"}


def test_a_sweep_and_the_overview_group_the_same_runs_the_same_way(tmp_path: Path) -> None:
    """One identity and one aggregation over seeds: the overview's rows and a study's
    configurations are the same groups with the same means, spreads and seeds; runs with and
    without gradient checkpointing, or with another clipping, are apart in both."""
    from dataclasses import replace

    from spbench.reporting.results import load
    from spbench.reporting.seeds import merge_over_seeds
    from spbench.reporting.sweep import configurations

    def with_case(info: dict[str, Any], **changes: Any) -> dict[str, Any]:
        result = Result.from_extra_info(info)
        return replace(result, case=replace(result.case, **changes)).to_extra_info()

    plain = [run("3e-4", s, 0.80 + s / 100, trial=s) for s in (0, 1, 2)] + [run("3e-4", 3, None, trial=3)]
    gc = [with_case(run("3e-4", s, 0.70 + s / 50, trial=10 + s), grad_checkpointing=True) for s in (0, 1)]
    unclipped = [{**run("3e-4", s, 0.60, trial=20 + s), "train_config": {**TRAIN, "clip": None, "seed": s}}
                 for s in (0, 1)]
    records = load([write(tmp_path / "s.json", plain + gc + unclipped + [predicted("3e-4")])])[1]

    rows = [row for row in merge_over_seeds(records) if row.train_config]
    configs = configurations([rec.result for rec in records])

    def groups_of_rows() -> list[tuple[Any, ...]]:
        return sorted((tuple(r.train_config["seeds"]), str(r.train_config["clip"]),
                       round(r.metrics["sst2_accuracy"], 9), r.spread["sst2_accuracy"]) for r in rows)

    def groups_of_configs() -> list[tuple[Any, ...]]:
        return sorted((tuple(c.seeds), str(c.train_config["clip"]), round(c.stats["sst2_accuracy"].mean, 9),
                       (c.stats["sst2_accuracy"].std, c.stats["sst2_accuracy"].n)) for c in configs)

    assert len(rows) == len(configs) == 3
    assert groups_of_rows() == groups_of_configs()
    assert sorted(r.case.grad_checkpointing for r in rows) == [False, False, True]
    assert {tuple(r.train_config["seeds"]) for r in rows} == {(0, 1, 2), (0, 1)}
    assert next(c for c in configs if c.seeds == [0, 1, 2]).failed == ["seed 3: loss became nan at step 3"]


def test_pareto_front_by_training_energy(tmp_path: Path) -> None:
    """Energy as the front's cost: the cheaper run of equal accuracy wins; a configuration
    without an energy figure is left out of that front, never counted as free."""
    from spbench.reporting.sweep import configurations, pareto_front

    def with_energy(lr: str, accuracy: float, joules: float | None, trial: int) -> dict[str, Any]:
        info = run(lr, 0, accuracy, trial=trial)
        if joules is not None:
            info["train_energy_j"] = joules
        return info

    infos = [with_energy("1e-4", 0.90, 5000.0, 0), with_energy("3e-4", 0.90, 3000.0, 1),
             with_energy("1e-3", 0.80, 1000.0, 2), with_energy("3e-3", 0.95, None, 3)]
    front = pareto_front(configurations([Result.from_extra_info(i) for i in infos]), "energy")
    assert [c.params["lr"] for c in front] == [1e-3, 3e-4]
    text = render(report_args([write(tmp_path / "e.json", infos)]))
    assert "Pareto front (training energy ↓, accuracy ↑): lora (lr=0.001): 80.00 (1) %, 1,000 J; " \
           "lora (lr=0.0003): 90.00 (1) %, 3,000 J" in text
