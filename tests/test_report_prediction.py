"""spbench report: a case measured on CUDA stands beside its prediction, with each figure's error."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from spbench.cli import main

FIXTURE = Path(__file__).parent / "fixtures" / "tiny.json"


def with_cuda_measurements(tmp_path: Path, scale: dict[str, float], drop_prediction: str = "") -> Path:
    """The tiny fixture plus a CUDA measurement of two predicted cases, each measured figure the
    predicted one times ``scale``; ``drop_prediction`` removes that case's prediction."""
    doc = json.loads(FIXTURE.read_text())
    predicted = [b for b in doc["benchmarks"] if b["extra_info"]["device"] == "predicted-cuda"][:2]
    for bench in predicted:
        info = bench["extra_info"]
        measured = copy.deepcopy(bench)
        m: dict[str, Any] = measured["extra_info"]
        for key in [k for k in m if k.startswith(("predicted_", "mem_", "flops_"))]:
            del m[key]
        m.update(device="cuda", step_time_s=0.01,
                 peak_bytes=round(info["predicted_cuda_peak_bytes"] * scale["allocated"]),
                 reserved_peak_bytes=round(info["predicted_cuda_peak_bytes"] * scale["reserved"]))
        info["predicted_cuda_reserved_bytes"] = info["predicted_cuda_peak_bytes"]
        measured["name"] = measured["fullname"] = measured["fullname"].replace("test_memory", "test_step")
        doc["benchmarks"].append(measured)
    doc["benchmarks"] = [b for b in doc["benchmarks"] if not (
        b["extra_info"]["case_id"] == drop_prediction and b["extra_info"]["device"] == "predicted-cuda")]
    path = tmp_path / "run.json"
    path.write_text(json.dumps(doc))
    return path


def test_each_figure_is_compared_with_its_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # measured 25% above the prediction: the prediction is 20% low
    path = with_cuda_measurements(tmp_path, {"allocated": 1.25, "reserved": 0.8})
    assert main(["report", str(path)]) == 0
    text = capsys.readouterr().out
    section = text[text.index("## Measured vs predicted CUDA memory"):]
    assert section.count("(-20.0%)") == 2 and section.count("(+25.0%)") == 2
    assert "allocated: 2 case(s), median absolute error 20.0%, worst -20.0%" in section
    assert "reserved: 2 case(s), median absolute error 25.0%, worst +25.0%" in section
    assert "device total:" not in section.split("\n- ", 1)[1]  # no NVML figure measured: no summary line


def test_a_measured_case_without_prediction_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = json.loads(FIXTURE.read_text())
    first = next(b for b in doc["benchmarks"] if b["extra_info"]["device"] == "predicted-cuda")
    path = with_cuda_measurements(tmp_path, {"allocated": 1.0, "reserved": 1.0},
                                  drop_prediction=first["extra_info"]["case_id"])
    assert main(["report", str(path)]) == 0
    text = capsys.readouterr().out
    assert f"not compared: `{first['extra_info']['case_id']}`: no prediction in these files" in text
    assert "allocated: 1 case(s), median absolute error 0.0%, worst +0.0%" in text


def test_no_cuda_measurement_no_section(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(FIXTURE)]) == 0
    assert "Measured vs predicted" not in capsys.readouterr().out
