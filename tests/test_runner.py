"""spbench run: signals reach pytest and leave nothing behind; a run never replaces a result
file with one holding fewer successful cases without saying so, nor with an empty one.

These run ``spbench run --benchmarks FAKE`` on a stand-in benchmarks/ folder whose one case is
told by environment variables what to record, so each test takes seconds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

FIXTURE = Path(__file__).parent / "fixtures" / "tiny.json"

FAKE_CASES = '''
import json, os, pathlib, time

import pytest

INFOS = json.loads(os.environ.get("FAKE_INFOS", "[]"))


@pytest.mark.parametrize("info", INFOS or [{}], ids=lambda i: i.get("case_id", "case"))
def test_memory(benchmark, info, request):
    marker = os.environ.get("FAKE_MARKER")
    if marker:  # the interrupted case: say who we are, leave a partial file, then run long
        request.config.getoption("benchmark_json").write_text("{half")
        pathlib.Path(marker).write_text(str(os.getpid()))
        time.sleep(120)
    benchmark.extra_info.update(info)
    if os.environ.get("FAKE_FAIL"):
        benchmark.pedantic(lambda: 1 / 0, rounds=1)  # pytest-benchmark drops this entry
    benchmark.pedantic(lambda: None, rounds=1)
'''


@pytest.fixture()
def bench(tmp_path: Path) -> Path:
    folder = tmp_path / "benchmarks"
    folder.mkdir()
    (folder / "conftest.py").write_text("")
    (folder / "test_memory.py").write_text(FAKE_CASES)
    # --memory-only also runs the deployed model's predicted case: here, nothing to record
    (folder / "test_inference.py").write_text("def test_inference_predicted():\n    pass\n")
    return folder


def predicted_infos(n: int) -> list[dict[str, Any]]:
    doc = json.loads(FIXTURE.read_text())
    return [b["extra_info"] for b in doc["benchmarks"] if b["extra_info"]["device"] == "predicted-cuda"][:n]


def run_cmd(bench: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "spbench.cli", "run", "--memory-only", "--benchmarks", str(bench), "--out", str(out)]


def spbench_run(bench: Path, out: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(run_cmd(bench, out), capture_output=True, text=True, env={**os.environ, **env})


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
@pytest.mark.slow
def test_a_signal_reaches_pytest_and_leaves_no_temporary_file(bench: Path, tmp_path: Path, signum: int) -> None:
    out, marker = tmp_path / "out", tmp_path / "pytest.pid"
    out.mkdir()
    (out / "cpu.json").write_text("GOOD")
    proc = subprocess.Popen(run_cmd(bench, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "FAKE_MARKER": str(marker)})
    child = 0
    try:
        deadline = time.monotonic() + 120
        while not marker.exists() or not marker.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.1)
        child = int(marker.read_text())
        assert (out / ".cpu.json.partial").exists()
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 128 + signum, err
        assert not alive(child), "pytest was left running"
        assert sorted(p.name for p in out.iterdir()) == ["cpu.json"]  # no .partial, nothing else
        assert (out / "cpu.json").read_text() == "GOOD"
        assert f"interrupted by {signal.Signals(signum).name}" in err and "Traceback" not in err
    finally:
        if proc.poll() is None:
            proc.kill()
        if child and alive(child):
            os.kill(child, signal.SIGKILL)


@pytest.mark.slow
def test_a_run_where_every_case_failed_replaces_nothing(bench: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = spbench_run(bench, out, FAKE_INFOS=json.dumps(predicted_infos(2)))
    assert first.returncode == 0, first.stderr
    good = (out / "cpu.json").read_text()
    proc = spbench_run(bench, out, FAKE_INFOS=json.dumps(predicted_infos(2)), FAKE_FAIL="1")
    assert proc.returncode != 0
    assert (out / "cpu.json").read_text() == good
    line = proc.stderr.strip().splitlines()[-1]
    assert "recorded no case" in line and "left as it was" in line
    assert "deselected" not in proc.stderr and "Traceback" not in proc.stderr
    assert not list(out.glob(".*partial"))


@pytest.mark.slow
def test_fewer_successful_cases_go_beside_the_old_file(bench: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert spbench_run(bench, out, FAKE_INFOS=json.dumps(predicted_infos(3))).returncode == 0
    good = (out / "cpu.json").read_text()
    proc = spbench_run(bench, out, FAKE_INFOS=json.dumps(predicted_infos(1)))
    assert proc.returncode == 0, proc.stderr
    assert (out / "cpu.json").read_text() == good  # kept, and said so
    beside = [p for p in out.glob("cpu.*.json")]
    assert len(beside) == 1 and len(json.loads(beside[0].read_text())["benchmarks"]) == 1
    assert f"holds 3 successful case(s), 2 of them not in this run's 1 of 1: kept {out / 'cpu.json'}" in proc.stderr
    assert (out / f"{beside[0].stem}-report.md").is_file()
    # Every successful case of the file again (and more) replaces it.
    again = spbench_run(bench, out, FAKE_INFOS=json.dumps(predicted_infos(4)))
    assert again.returncode == 0 and len(json.loads((out / "cpu.json").read_text())["benchmarks"]) == 4


@pytest.mark.slow
def test_as_many_other_cases_go_beside_the_old_file(bench: Path, tmp_path: Path) -> None:
    """A run of other cases, as many as the file holds, never replaces it: nothing is lost."""
    out = tmp_path / "out"
    infos = predicted_infos(4)
    assert spbench_run(bench, out, FAKE_INFOS=json.dumps(infos[:2])).returncode == 0
    good = (out / "cpu.json").read_text()
    proc = spbench_run(bench, out, FAKE_INFOS=json.dumps(infos[2:]))
    assert proc.returncode == 0, proc.stderr
    assert (out / "cpu.json").read_text() == good
    beside = list(out.glob("cpu.*.json"))
    assert len(beside) == 1, beside
    assert {b["extra_info"]["case_id"] for b in json.loads(beside[0].read_text())["benchmarks"]} == {
        i["case_id"] for i in infos[2:]}
    assert "2 of them not in this run's 2 of 2" in proc.stderr
