"""Every file spbench writes is replaced whole or not at all, even when the write fails part-way.

The failures are made by the operating system, not by patching spbench: the command runs in a
child process whose files may not grow past a few KiB (``RLIMIT_FSIZE``; Python ignores the
SIGXFSZ signal, so the write raises "File too large" after some bytes). Whatever code does the
writing, a previous file must then be complete and unchanged, with no temporary left beside it.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

FIXTURE = Path(__file__).parent / "fixtures" / "tiny.json"
LIMIT = 2048  # bytes: below every output written here (each is over 5 KiB)


def cli(*args: str, limit: int | None = None) -> subprocess.CompletedProcess[str]:
    """``spbench ARGS`` in a child process; with ``limit``, no file it writes may exceed it."""

    def cap() -> None:
        if limit is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    code = "import sys; from spbench.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, preexec_fn=cap)


def assert_failed_cleanly(proc: subprocess.CompletedProcess[str], target: Path, before: bytes) -> None:
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "File too large" in proc.stderr and str(target.name) in proc.stderr
    assert target.read_bytes() == before  # the previous file, complete and unchanged
    assert [p.name for p in target.parent.iterdir()] == [target.name]  # no temporary left


@pytest.mark.parametrize("fmt", ["markdown", "latex"])
def test_report_output_survives_a_write_that_fails_part_way(tmp_path: Path, fmt: str) -> None:
    target = tmp_path / "report.txt"
    assert cli("report", str(FIXTURE), "--format", "csv", "--output", str(target)).returncode == 0
    before = target.read_bytes()
    assert len(before) > LIMIT  # the old file is whole, and larger than a write may now grow
    proc = cli("report", str(FIXTURE), "--format", fmt, "--output", str(target), limit=LIMIT)
    assert_failed_cleanly(proc, target, before)
    assert cli("report", str(FIXTURE), "--format", fmt, "--output", str(target)).returncode == 0
    assert target.read_bytes() != before  # without the limit the same command replaces it


def test_plot_survives_a_write_that_fails_part_way(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    png = tmp_path / "plot.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"previous plot" * 10)
    before = png.read_bytes()
    proc = cli("report", str(FIXTURE), "--plot", str(png), limit=LIMIT)
    assert_failed_cleanly(proc, png, before)


def test_baseline_update_survives_a_write_that_fails_part_way(tmp_path: Path) -> None:
    baseline = tmp_path / "baselines" / "ci.json"
    assert cli("check", str(FIXTURE), "--baseline", str(baseline), "--update").returncode == 0
    before = baseline.read_bytes()
    assert len(before) > LIMIT
    doc = json.loads(FIXTURE.read_text())
    for bench in doc["benchmarks"]:
        if "predicted_cuda_peak_bytes" in bench["extra_info"]:
            bench["extra_info"]["predicted_cuda_peak_bytes"] *= 2
    current = tmp_path / "current.json"
    current.write_text(json.dumps(doc))
    proc = cli("check", str(current), "--baseline", str(baseline), "--update", limit=LIMIT)
    assert_failed_cleanly(proc, baseline, before)
    assert cli("check", str(current), "--baseline", str(baseline)).returncode == 1  # still the old gate


def test_a_failed_rename_leaves_the_previous_file_and_no_temporary(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from spbench.cli import main

    target = tmp_path / "report.md"
    target.write_text("previous report\n")

    def refuse(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(os, "replace", refuse)
    code = main(["report", str(FIXTURE), "--output", str(target)])
    assert code == 2 and "cross-device" in capsys.readouterr().err
    assert target.read_text() == "previous report\n"
    assert [p.name for p in tmp_path.iterdir()] == ["report.md"]


def test_two_writers_of_one_file_never_share_a_temporary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A second writer that finishes while the first is between its write and its rename must
    not touch the first one's temporary: each call gets its own (two ``--output`` runs at once)."""
    from spbench.reporting.results import write_atomic

    target = tmp_path / "report.md"
    real_replace = os.replace
    temporaries: list[str] = []

    def interleave(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        temporaries.append(os.fspath(src))
        if len(temporaries) == 1:  # the first writer, about to rename: the second one runs now
            write_atomic(target, "second writer\n")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", interleave)
    write_atomic(target, "first writer\n")
    assert len(set(temporaries)) == 2  # one temporary per call
    assert target.read_text() == "first writer\n"  # the last rename wins, whole
    assert [p.name for p in tmp_path.iterdir()] == [target.name]


@pytest.mark.parametrize("umask", [0o022, 0o002], ids=["umask022", "umask002"])
def test_a_written_report_has_an_ordinary_mode_that_respects_the_umask(tmp_path: Path, umask: int) -> None:
    """The temporary file a write goes through is made 0600; the report must end as an ordinary
    file (0666 less the umask: others may read it), whether it is new or replaces one."""
    target = tmp_path / "report.md"
    for _ in range(2):  # new, then replacing the first
        proc = subprocess.run([sys.executable, "-c", "import sys; from spbench.cli import main; "
                               "sys.exit(main(sys.argv[1:]))", "report", str(FIXTURE), "-o", str(target)],
                              capture_output=True, text=True, preexec_fn=lambda: os.umask(umask))
        assert proc.returncode == 0, proc.stderr
        assert oct(target.stat().st_mode & 0o777) == oct(0o666 & ~umask)
