"""A study name is not an identity: ``spbench sweep --study NAME`` with another method, budget or
fixed setting than the study was made with is refused, naming the difference, and trains nothing;
the same command resumes it. A study made before studies recorded what they are is accepted and
recorded on its first resume; the committed studies resume with their own commands."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from spbench.cli import main
from test_sweep import tiny  # noqa: F401  (the fixture: a 2-layer BERT and a tiny SST-2 folder)

REPO = Path(__file__).resolve().parent.parent


def sweep(capsys: pytest.CaptureFixture[str], tiny: dict[str, str], out: Path, *extra: str) -> tuple[int, str, str]:
    from test_sweep import command

    code = main(command(tiny, out, "--grid", "lr=1e-3", "--budget", "steps=2", *extra)[3:])
    stdout, stderr = capsys.readouterr()
    return code, stdout, stderr


def trials(out: Path, study: str = "t") -> list[Any]:
    from test_sweep import load

    return load(str(out / "sweep.journal"), study).trials


@pytest.mark.parametrize(("other", "difference"), [
    (("--method", "full_ft"), "method: lora, not full_ft"),
    (("--budget", "steps=3"), "budget: steps=2, not steps=3"),
    (("--set", "r=4"), "set: {}, not {'r': '4'}"),
    (("--grad-checkpointing",), "grad_checkpointing: False, not True"),
    (("--no-group-by-length",), "group_by_length: True, not False"),
])
def test_another_setup_under_a_used_study_name_is_refused_naming_the_difference(
        tiny: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str], other: tuple[str, ...],
        difference: str) -> None:
    code, _, stderr = sweep(capsys, tiny, tmp_path)
    assert code == 0, stderr
    assert len(trials(tmp_path)) == 1
    code, stdout, stderr = sweep(capsys, tiny, tmp_path, *other)
    assert code == 2 and "Traceback" not in stderr, (stdout, stderr)
    assert len(stderr.strip().splitlines()) == 1 and "study 't'" in stderr and difference in stderr, stderr
    assert "accuracy" not in stdout  # the other setup's result is not printed as this one's
    assert len(trials(tmp_path)) == 1  # nothing trained
    code, stdout, stderr = sweep(capsys, tiny, tmp_path)  # the same command resumes it
    assert code == 0, stderr
    assert len(trials(tmp_path)) == 1 and "1 finished" in stdout


def test_a_study_without_its_record_is_accepted_and_recorded(
        tiny: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import optuna
    from optuna.storages.journal import JournalFileBackend

    storage = optuna.storages.JournalStorage(JournalFileBackend(str(tmp_path / "sweep.journal")))
    optuna.create_study(study_name="t", storage=storage, direction="maximize")  # as older spbench left it
    code, _, stderr = sweep(capsys, tiny, tmp_path, "--status")
    assert code == 0, stderr
    code, _, stderr = sweep(capsys, tiny, tmp_path, "--method", "full_ft", "--status")
    assert code == 2 and "method: lora, not full_ft" in stderr, stderr


# The committed studies and the commands that made them (reports/README.md, benchmarks/reference_sweep.sh).
COMMITTED = [
    ("reports/accuracy/protocol-demo", "lst-demo-pruned", ["--method", "lst", "--grid", "lr", "--pruner", "halving",
                                                           "--budget", "examples=6000"]),
    ("reports/accuracy/protocol-demo", "klst-k1-demo-3seeds", ["--method", "klst", "--set", "k=1", "--grid",
                                                               "lr=0.002", "--seeds", "0,1,2",
                                                               "--budget", "examples=6000"]),
    ("reports/accuracy/reference", "lst-lr-pruned", ["--method", "lst", "--grid", "lr", "--pruner", "halving",
                                                     "--budget", "epochs=1"]),
]


@pytest.mark.parametrize(("folder", "study", "args"), COMMITTED, ids=[c[1] for c in COMMITTED])
def test_committed_studies_resume_with_their_command(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                     folder: str, study: str, args: list[str]) -> None:
    shutil.copy(REPO / folder / "sweep.journal", tmp_path / "sweep.journal")
    common = ["sweep", "--backbone", "minilm-l6", "--batch-size", "32", "--seq-len", "64", "--out", str(tmp_path),
              "--study", study, "--status"]
    code = main([*common, *args])
    stdout, stderr = capsys.readouterr()
    assert code == 0 and "finished" in stdout, stderr
    code = main([*common, *[a.replace("examples=6000", "examples=5000").replace("epochs=1", "epochs=2")
                            for a in args]])
    stderr = capsys.readouterr().err
    assert code == 2 and "budget: " in stderr, stderr
