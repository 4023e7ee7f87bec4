"""spbench check: the CI gate fails on a regression or a missing case, passes on identical figures."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest

from spbench.check import parse_tolerance
from spbench.cli import main

FIXTURE = Path(__file__).parent / "fixtures" / "tiny.json"
CASE = "lora-tiny-bert-b16-s128"


def derived(tmp_path: Path, name: str, edit: Callable[[dict[str, Any]], None]) -> Path:
    doc = json.loads(FIXTURE.read_text())
    edit(doc)
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return path


def predicted(doc: dict[str, Any], case_id: str) -> dict[str, Any]:
    return next(b["extra_info"] for b in doc["benchmarks"]
                if b["extra_info"]["case_id"] == case_id and b["extra_info"]["device"] == "predicted-cuda")


def scale(case_id: str, key: str, factor: float) -> Callable[[dict[str, Any]], None]:
    def edit(doc: dict[str, Any]) -> None:
        info = predicted(doc, case_id)
        info[key] = int(info[key] * factor)

    return edit


def check(capsys: pytest.CaptureFixture[str], current: Path, baseline: Path, *extra: str) -> tuple[int, str, str]:
    code = main(["check", str(current), "--baseline", str(baseline), *extra])
    out, err = capsys.readouterr()
    return code, out, err


def test_identical_files_pass(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = check(capsys, FIXTURE, FIXTURE)
    assert code == 0
    assert "ok: 78 figures compared" in out  # 6 cases x 13 deterministic figures


def test_injected_regression_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    current = derived(tmp_path, "current.json", scale(CASE, "predicted_cuda_peak_bytes", 1.05))
    code, out, _ = check(capsys, current, FIXTURE)
    assert code == 1
    line = next(line for line in out.splitlines() if line.startswith(CASE))
    assert "predicted_cuda_peak_bytes" in line and "+5.00%" in line


def test_exit_code_through_the_real_command(tmp_path: Path) -> None:
    current = derived(tmp_path, "current.json", scale(CASE, "mem_activations_bytes", 1.05))
    cmd = [sys.executable, "-m", "spbench.cli", "check", str(current), "--baseline", str(FIXTURE)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 1 and "mem_activations_bytes" in proc.stdout and "Traceback" not in proc.stderr
    proc = subprocess.run(cmd[:4] + [str(FIXTURE), "--baseline", str(FIXTURE)], capture_output=True, text=True)
    assert proc.returncode == 0


def test_tolerance(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    current = derived(tmp_path, "current.json", scale(CASE, "predicted_cuda_peak_bytes", 1.005))
    assert check(capsys, current, FIXTURE)[0] == 0
    assert check(capsys, current, FIXTURE, "--tolerance", "0.1%")[0] == 1
    assert check(capsys, current, FIXTURE, "--tolerance", "0.001")[0] == 1
    assert parse_tolerance("2.5%") == pytest.approx(0.025)
    code, _, err = check(capsys, current, FIXTURE, "--tolerance", "lots")
    assert code == 2 and "--tolerance" in err


def test_improvement_is_a_note_not_a_failure(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    current = derived(tmp_path, "current.json", scale(CASE, "predicted_cuda_peak_bytes", 0.9))
    code, out, _ = check(capsys, current, FIXTURE)
    assert code == 0 and "improved" in out and "-10.00%" in out


def test_direction_comes_from_the_metric(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # params_with_grad is declared higher-is-better: fewer is the regression, more the improvement.
    fewer = derived(tmp_path, "fewer.json", scale(CASE, "params_with_grad", 0.5))
    code, out, _ = check(capsys, fewer, FIXTURE)
    assert code == 1 and "params_with_grad" in out
    more = derived(tmp_path, "more.json", scale(CASE, "params_with_grad", 2))
    code, out, _ = check(capsys, more, FIXTURE)
    assert code == 0 and "improved" in out


def test_missing_cases_fail_on_either_side(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def drop(doc: dict[str, Any]) -> None:
        doc["benchmarks"] = [b for b in doc["benchmarks"] if b["extra_info"]["case_id"] != CASE]

    fewer = derived(tmp_path, "fewer.json", drop)
    code, out, _ = check(capsys, fewer, FIXTURE)
    assert code == 1 and "missing in current" in out and CASE in out
    code, out, _ = check(capsys, FIXTURE, fewer)
    assert code == 1 and "missing in baseline" in out


def test_a_failed_case_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def fail(doc: dict[str, Any]) -> None:
        info = predicted(doc, CASE)
        for key in [k for k in info if k.endswith(("_bytes", "_flops")) or k.startswith(("params_", "flops_"))]:
            del info[key]
        info.update(status="failed", reason="RuntimeError: boom")

    code, out, _ = check(capsys, derived(tmp_path, "failed.json", fail), FIXTURE)
    assert code == 1 and "failed: RuntimeError: boom" in out


def test_schema_mismatch_and_bad_files_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def bump(doc: dict[str, Any]) -> None:
        for b in doc["benchmarks"]:
            b["extra_info"]["schema_version"] = 2

    code, _, err = check(capsys, derived(tmp_path, "v2.json", bump), FIXTURE)
    assert code == 2 and "schema_version" in err and "--update" in err
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert check(capsys, bad, FIXTURE)[0] == 2
    assert check(capsys, FIXTURE, tmp_path / "absent.json")[0] == 2


def test_update_writes_a_gated_only_baseline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    baseline = tmp_path / "baselines" / "tiny.json"
    code, out, _ = check(capsys, FIXTURE, baseline, "--update")
    assert code == 0 and baseline.exists()
    doc = json.loads(baseline.read_text())
    assert len(doc["benchmarks"]) == 6
    assert all(b["extra_info"]["device"] == "predicted-cuda" for b in doc["benchmarks"])
    assert not any("step_time_s" in b["extra_info"] or "stats" in b for b in doc["benchmarks"])
    assert check(capsys, FIXTURE, baseline)[0] == 0
    regressed = derived(tmp_path, "current.json", scale(CASE, "predicted_cuda_peak_bytes", 1.05))
    assert check(capsys, regressed, baseline)[0] == 1
    assert check(capsys, regressed, baseline, "--update")[0] == 0  # accepting the new figures
    assert check(capsys, regressed, baseline)[0] == 0
    assert [p.name for p in baseline.parent.iterdir()] == ["tiny.json"]


def test_gate_catches_a_method_that_keeps_an_extra_activation(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """A real prediction: full_ft, and a variant whose step keeps one more activation alive."""
    import torch

    from spbench.case import Case
    from spbench.measure.predict import predict
    from spbench.methods.base import METHODS, NO_HOOKS, register_method
    from spbench.methods.full_ft import FullFT
    from spbench.result import PREDICTED, Result

    name = "test_check_leaky_full_ft"

    @dataclass(frozen=True)
    class LeakyFullFT(FullFT):
        """full_ft after a bad change: an activation-sized tensor outlives the forward."""

        def train_step(self, model: Any, batch: Any, optimizer: Any, objective: Any, hooks: Any = NO_HOOKS) -> Any:
            with hooks.phase("forward"):
                loss = objective.loss(model, batch)
                ids = batch["input_ids"]
                kept = torch.ones(*ids.shape, 4 * model.config.hidden_size, device=ids.device)
            with hooks.phase("backward"):
                loss.backward()
            with hooks.phase("optimizer"):
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            del kept
            return loss.detach()

    register_method(name)(LeakyFullFT)
    try:
        docs = {}
        for label, method in (("baseline", "full_ft"), ("current", name)):
            case = Case(method, "tiny-bert", batch_size=4, seq_len=32)
            metrics, built = predict(case)
            # Recorded under full_ft's name: the gate must tell the two by their figures alone.
            info = {**Result.of(case, PREDICTED, metrics=metrics).to_extra_info(),
                    "method": "full_ft", "case_id": "full_ft-tiny-bert-b4-s32"}
            docs[label] = tmp_path / f"{label}.json"
            docs[label].write_text(json.dumps({"machine_info": {}, "benchmarks": [
                {"name": "test_memory[full_ft-tiny-bert-b4-s32]", "extra_info": info}]}))
    finally:
        METHODS._items.pop(name, None)
    assert name not in METHODS
    code, out, _ = check(capsys, docs["current"], docs["baseline"])
    assert code == 1
    assert "predicted_cuda_peak_bytes" in out
    assert check(capsys, docs["baseline"], docs["baseline"])[0] == 0


def _set(case_id: str, key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(doc: dict[str, Any]) -> None:
        predicted(doc, case_id)[key] = value

    return edit


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_a_figure_that_is_not_a_finite_number_fails_on_either_side(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], value: float) -> None:
    bad = derived(tmp_path, "bad.json", _set(CASE, "predicted_cuda_peak_bytes", value))
    for current, baseline, side in ((bad, FIXTURE, "current"), (FIXTURE, bad, "baseline")):
        code, out, err = check(capsys, current, baseline)
        assert code == 1, (side, out)
        line = next(line for line in out.splitlines() if line.startswith(CASE))
        assert "predicted_cuda_peak_bytes" in line and f"not a finite number ({side})" in line
        assert "ok:" not in out and "FAILED" in err


def test_a_figure_missing_from_the_baseline_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def drop(doc: dict[str, Any]) -> None:
        del predicted(doc, CASE)["mem_grads_bytes"]

    code, out, _ = check(capsys, FIXTURE, derived(tmp_path, "fewer.json", drop))
    assert code == 1 and "missing in baseline" in out and "mem_grads_bytes" in out


def test_a_case_failed_on_both_sides_still_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    failed = derived(tmp_path, "failed.json", _set(CASE, "status", "failed"))
    assert check(capsys, failed, failed)[0] == 1


def test_update_refuses_to_lock_in_a_failure(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    baseline = tmp_path / "baseline.json"
    baseline.write_text(FIXTURE.read_text())
    for name, edit in (("nan.json", _set(CASE, "mem_params_bytes", float("nan"))),
                       ("failed.json", _set(CASE, "status", "failed"))):
        code, out, err = check(capsys, derived(tmp_path, name, edit), baseline, "--update")
        assert code == 1 and "not updating" in out and "baseline unchanged" in err
        assert baseline.read_text() == FIXTURE.read_text()


def test_update_across_schema_versions_replaces_without_failing(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    def bump(doc: dict[str, Any]) -> None:
        for b in doc["benchmarks"]:
            b["extra_info"]["schema_version"] = 2
        predicted(doc, CASE)["predicted_cuda_peak_bytes"] *= 2

    baseline = tmp_path / "baseline.json"
    baseline.write_text(FIXTURE.read_text())
    current = derived(tmp_path, "v2.json", bump)
    code, out, err = check(capsys, current, baseline, "--update")
    assert code == 0 and "FAILED" not in out + err and "schema_version 1 -> 2" in out
    assert check(capsys, current, baseline)[0] == 0


def test_exactly_at_the_tolerance_passes_just_beyond_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """"Worse by more than the tolerance" fails: +1% exactly passes the default 1%, one byte more
    fails; likewise an improvement is noted only beyond the tolerance."""
    def peak(value: int) -> Callable[[dict[str, Any]], None]:
        def edit(doc: dict[str, Any]) -> None:
            predicted(doc, CASE)["predicted_cuda_peak_bytes"] = value

        return edit

    baseline = derived(tmp_path, "baseline.json", peak(100_000))
    for value, code, noted in ((101_000, 0, False), (101_001, 1, False), (99_000, 0, False), (98_999, 0, True)):
        got, out, _ = check(capsys, derived(tmp_path, f"{value}.json", peak(value)), baseline)
        assert (got, "improved by more than 1%" in out) == (code, noted), (value, out)
    got, _, _ = check(capsys, derived(tmp_path, "half.json", peak(100_500)), baseline, "--tolerance", "0.5%")
    assert got == 0
