"""The sweep's journal file survives a crash mid-append: a last line cut short is dropped with a
warning (else the next append lands on it and every later command dies on the merged line); a
damaged line in the middle is one clear error naming the file and line; a file that is no Optuna
journal is refused untouched. Through ``spbench sweep --status``, which trains nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spbench.cli import main


def status(capsys: pytest.CaptureFixture[str], out: Path, *extra: str) -> tuple[int, str, str]:
    code = main(["sweep", "--method", "lora", "--grid", "lr=1e-4,3e-4", "--out", str(out), "--status", *extra])
    stdout, stderr = capsys.readouterr()
    return code, stdout, stderr


def journal_lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


@pytest.fixture
def journal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """A study's journal as a sweep starts it (its creation and its setup, two whole lines), made
    without training; ``--status`` then reads it."""
    from spbench.cli import build_parser
    from spbench.sweep.command import setup_from
    from spbench.sweep.setup import open_storage, open_study

    args = build_parser().parse_args(["sweep", "--method", "lora", "--grid", "lr=1e-4,3e-4", "--out", str(tmp_path)])
    open_study(setup_from(args), open_storage(None, tmp_path))
    assert status(capsys, tmp_path)[0] == 0
    path = tmp_path / "sweep.journal"
    assert len(journal_lines(path)) >= 2
    return path


def test_a_cut_last_line_is_dropped_with_a_warning(journal: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = journal_lines(journal)
    cut = len(lines[-1]) // 2
    journal.write_bytes(b"".join(lines[:-1]) + lines[-1][:cut])
    code, stdout, stderr = status(capsys, journal.parent)
    assert code == 0, stderr
    assert "0 finished" in stdout
    warning = [line for line in stderr.splitlines() if "warning" in line]
    assert len(warning) == 1 and str(journal) in warning[0] and f"{cut} bytes" in warning[0], stderr
    again = journal_lines(journal)
    assert again[:len(lines) - 1] == lines[:-1]  # the whole lines kept as they were
    assert all(line.endswith(b"\n") and isinstance(json.loads(line), dict) for line in again)
    code, _, stderr = status(capsys, journal.parent)  # repaired once: no warning, the study reads
    assert code == 0 and "warning" not in stderr


def test_a_damaged_line_in_the_middle_is_one_error_naming_file_and_line(
        journal: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = journal_lines(journal)
    journal.write_bytes(lines[0] + b'{"op_code":5,"worker_id":"x{"op_code":5}\n' + b"".join(lines[1:]))
    before = journal.read_bytes()
    code, _, stderr = status(capsys, journal.parent)
    assert code == 2 and "Traceback" not in stderr
    assert len(stderr.strip().splitlines()) == 1 and str(journal) in stderr and "line 2" in stderr, stderr
    assert journal.read_bytes() == before  # nothing appended, nothing cut


@pytest.mark.parametrize("text", ['{\n  "benchmarks": []\n}\n', '{"a": 1}\n', "hello", "sentence\tlabel\n"])
def test_a_storage_file_that_is_not_a_journal_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                         text: str) -> None:
    other = tmp_path / "results.json"
    other.write_text(text)
    code, _, stderr = status(capsys, tmp_path / "out", "--storage", str(other))
    assert code == 2 and "Traceback" not in stderr
    assert len(stderr.strip().splitlines()) == 1 and str(other) in stderr and "not an Optuna journal" in stderr
    assert other.read_text() == text
