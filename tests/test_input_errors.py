"""Bad input never ends in a traceback: malformed fields inside valid JSON, a hub id that cannot
be reached offline, an --out / --output that cannot be written. One line naming the file or
option, exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest

from spbench.cli import main

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = Path(__file__).parent / "fixtures" / "tiny.json"


def _info(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda doc: doc["benchmarks"][0]["extra_info"].__setitem__(key, value)


def _doc(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda doc: doc.__setitem__(key, value)


MALFORMED = {
    "method_config is 'oops', not an object": _info("method_config", "oops"),
    "method_config is [1, 2], not an object": _info("method_config", [1, 2]),
    "machine_info is [1, 2], not an object": _doc("machine_info", [1, 2]),
    "commit_info is 'abc', not an object": _doc("commit_info", "abc"),
    "machine_info.cpu is 'x', not an object": _doc("machine_info", {"cpu": "x"}),
    "batch_size is 1.5, not an integer": _info("batch_size", 1.5),
    "batch_size is 'big', not an integer": _info("batch_size", "big"),
    "seq_len is True, not an integer": _info("seq_len", True),
    "device is 1, not a string": _info("device", 1),
    "backbone is None, not a string": _info("backbone", None),
    "status is 3, not a string": _info("status", 3),
    "stages is 'x', not a list or null": _info("stages", "x"),
    "train_config is 'x', not an object or null": _info("train_config", "x"),
    "predicted_cuda_peak_bytes is '12', not a number": _info("predicted_cuda_peak_bytes", "12"),
}


@pytest.mark.parametrize("message", list(MALFORMED))
def test_a_malformed_field_is_one_line_naming_file_and_field(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                            message: str) -> None:
    doc = json.loads(FIXTURE.read_text())
    MALFORMED[message](doc)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc))
    for argv in (["report", str(path)], ["check", str(path), "--baseline", str(FIXTURE)]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and str(path) in err and message in err, err


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT)


def test_a_hub_id_that_cannot_be_reached_offline() -> None:
    proc = _cli("-m", "spbench.cli", "estimate", "--method", "lora", "--backbone", "someorg/not-cached-anywhere")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "backbone 'someorg/not-cached-anywhere'" in proc.stderr


def test_outputs_that_cannot_be_written(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    for argv in (["report", str(FIXTURE), "--output", str(a_file / "r.md")],
                 ["report", str(FIXTURE), "--output", str(tmp_path)],
                 ["check", str(FIXTURE), "--baseline", str(a_file / "b.json"), "--update"]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "cannot write" in err
    assert a_file.read_text() == ""
    gpu = _cli("benchmarks/gpu/run.py", "--out", str(a_file), "--device", "cpu", "--tiny")
    assert gpu.returncode == 2 and f"--out {a_file}" in gpu.stderr and "Traceback" not in gpu.stderr
