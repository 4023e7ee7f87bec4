"""The prepared GPU run (benchmarks/gpu/run.sh) as a CPU dry run on tiny models, so it cannot rot."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_script_dry_run_on_cpu(tmp_path: Path) -> None:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    proc = subprocess.run(
        ["bash", str(ROOT / "benchmarks/gpu/run.sh"), str(tmp_path), "--device", "cpu", "--tiny",
         "--methods", "lora", "--shards", "1", "--rounds", "1"],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = (tmp_path / "gpu-report.md").read_text()
    assert "| lora-tiny-bert-b4-s32 " in report and "| lora-tiny-roberta-b4-s32-bf16 " in report
    assert "median absolute error" in report
    measured = json.loads((tmp_path / "measured-cpu.json").read_text())
    infos = [b["extra_info"] for b in measured["benchmarks"]]
    assert all(i["status"] == "ok" and i["peak_bytes"] > 0 and i["step_time_s"] > 0 for i in infos)
    predicted = json.loads((tmp_path / "predicted-tiny-bert-4x32-float32.json").read_text())
    assert predicted["benchmarks"][0]["extra_info"]["predicted_cuda_peak_bytes"] > 0
    assert not list(tmp_path.glob("*.partial"))
