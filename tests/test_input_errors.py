"""Bad input never ends in a traceback: malformed fields inside valid JSON, a hub id that cannot
be reached offline, an --out / --output that cannot be written. One line naming the file or
option, exit code 2."""

from __future__ import annotations

import json
import os
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
    "predicted_cuda_peak_bytes is -1024, below 0": _info("predicted_cuda_peak_bytes", -1024),
    "mem_params_bytes is -1, below 0": _info("mem_params_bytes", -1),
    "sst2_accuracy is 1.7, outside [0, 1]": _info("sst2_accuracy", 1.7),
    "val_accuracy is -0.1, outside [0, 1]": _info("val_accuracy", -0.1),
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


@pytest.mark.slow
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


SWEEP_OUT_OF_RANGE = {
    "--clip=-1": (["--clip=-1"], "--clip must be"),
    "--clip nan": (["--clip", "nan"], "--clip must be"),
    "--trials 0": (["--trials", "0"], "--trials must be at least 1, not 0"),
    "--trials -2 (tpe)": (["--sampler", "tpe", "--trials", "-2"], "--trials must be at least 1, not -2"),
    "--warmup 1": (["--warmup", "1"], "--warmup must be"),
    "--warmup -0.1": (["--warmup=-0.1"], "--warmup must be"),
    "--grid lr=-1": (["--grid", "lr=-1"], "--grid lr=-1: lr must be > 0, not -1.0"),
    "--grid r=0": (["--grid", "r=4,0"], "--grid r=0: r must be >= 1, not 0"),
    "--set r=0": (["--set", "r=0"], "--set r=0 (lora): r must be >= 1, not 0"),
    "--budget epochs=nan": (["--budget", "epochs=nan"], "budget 'epochs=nan'"),
    "--budget epochs=inf": (["--budget", "epochs=inf"], "budget 'epochs=inf'"),
    "--workers above the cores": (["--workers", str((os.cpu_count() or 1) + 1)], "--workers"),
}


@pytest.mark.parametrize("name", list(SWEEP_OUT_OF_RANGE))
def test_sweep_values_out_of_range_are_refused_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                              name: str) -> None:
    extra, message = SWEEP_OUT_OF_RANGE[name]
    code = main(["sweep", "--method", "lora", "--grid", "lr=1e-4", "--out", str(tmp_path), "--status", *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "sweep.journal").exists()  # refused before the storage was opened


def test_outputs_that_are_inputs_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data.json"
    data.write_bytes(FIXTURE.read_bytes())
    (tmp_path / "link.json").symlink_to(data)
    for argv in (["report", str(data), "--output", str(data)],
                 ["report", str(data), "--plot", str(data)],
                 ["report", str(FIXTURE), str(data), "--output", str(tmp_path / "sub" / ".." / "data.json")],
                 ["report", str(tmp_path / "link.json"), "--output", str(data)],
                 ["report", str(FIXTURE), "--output", str(tmp_path / "r.png"), "--plot", str(tmp_path / "r.png")],
                 ["check", str(data), "--baseline", str(data), "--update"],
                 ["check", str(tmp_path / "link.json"), "--baseline", str(data), "--update"]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and ("data.json" in err or "r.png" in err), err
        assert data.read_bytes() == FIXTURE.read_bytes(), argv
    assert not (tmp_path / "r.png").exists()
