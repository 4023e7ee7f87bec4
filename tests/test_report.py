"""spbench report: merging, grouping, marks, formats and errors, on a real tiny benchmark JSON.

tests/fixtures/tiny.json is a real run:
    pytest benchmarks/ --backbones tiny-bert,tiny-roberta --methods full_ft,lora,side_lora \
        --benchmark-json=tests/fixtures/tiny.json
Regenerate the snapshots after an intended change of the output with
    SPBENCH_UPDATE_SNAPSHOTS=1 pytest tests/test_report.py
"""

from __future__ import annotations

import copy
import csv
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest

from spbench.cli import main
from spbench.reporting.plot import pareto
from spbench.reporting.results import load, merge_rows
from spbench.reporting.tables import best_of, fmt, scale_for
from spbench.result import METRICS

HERE = Path(__file__).parent
FIXTURE = HERE / "fixtures" / "tiny.json"
SNAPSHOTS = HERE / "snapshots"


def fixture_doc() -> dict[str, Any]:
    return json.loads(FIXTURE.read_text())


def derived(tmp_path: Path, name: str, edit: Callable[[dict[str, Any]], None]) -> Path:
    """A copy of the fixture (same file name, so rendered sources match) with ``edit`` applied."""
    doc = fixture_doc()
    edit(doc)
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return path


def infos(doc: dict[str, Any], case_id: str, device: str | None = None) -> list[dict[str, Any]]:
    return [b["extra_info"] for b in doc["benchmarks"]
            if b["extra_info"]["case_id"] == case_id and device in (None, b["extra_info"]["device"])]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["report", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def snapshot(name: str, text: str) -> None:
    path = SNAPSHOTS / name
    if os.environ.get("SPBENCH_UPDATE_SNAPSHOTS"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"no snapshot {path}; create it with SPBENCH_UPDATE_SNAPSHOTS=1"
    assert text == path.read_text(), f"{name} changed; if intended, regenerate with SPBENCH_UPDATE_SNAPSHOTS=1"


@pytest.mark.parametrize("name, argv", [
    ("overview.md", []),
    ("compare_lora_side_lora.md", ["--compare", "lora", "side_lora"]),
    ("baseline_full_ft.md", ["--baseline", "full_ft"]),
    ("overview.tex", ["--format", "latex"]),
    ("compare_lora_side_lora.tex", ["--format", "latex", "--compare", "lora", "side_lora"]),
])
def test_snapshot(capsys: pytest.CaptureFixture[str], name: str, argv: list[str]) -> None:
    code, out, _ = run(capsys, str(FIXTURE), *argv)
    assert code == 0
    snapshot(name, out)


@pytest.mark.parametrize("fmt_name", ["markdown", "latex", "terminal", "csv"])
@pytest.mark.parametrize("compare", [False, True])
def test_untrained_parameters_warn_in_every_format(capsys: pytest.CaptureFixture[str], fmt_name: str,
                                                   compare: bool) -> None:
    # The fixture's side_lora (q/v adapters, every frozen input detached) reaches 66 of 2,114
    # trainable parameters on tiny-bert; lora reaches all of them.
    argv = [str(FIXTURE), "--format", fmt_name] + (["--compare", "lora", "side_lora"] if compare else [])
    code, out, _ = run(capsys, *argv)
    assert code == 0
    text = " ".join(out.replace("\\_", "_").split())  # LaTeX escapes, terminal line wrapping
    assert "WARNING side_lora: only 66 of 2,114 trainable parameters receive a gradient" in text.replace(
        "\\textbf{WARNING}", "WARNING").replace("**WARNING**", "WARNING")
    assert "lora: only" not in text.replace("side_lora: only", "")
    if fmt_name == "csv":
        lines = list(csv.DictReader(io.StringIO(out)))
        flagged = {line["a" if compare else "label"] for line in lines if "side_lora" in line["warning"]}
        assert flagged == ({"lora"} if compare else {"side_lora"})  # compare: on every line of the pair


def test_compare_title_says_whether_the_adapters_are_the_same(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, str(FIXTURE), "--compare", "lora", "side_lora")
    assert code == 0 and out.startswith("# spbench report: lora vs side_lora, same adapters")

    def other_targets(doc: dict[str, Any]) -> None:
        for bench in doc["benchmarks"]:
            if bench["extra_info"]["method"] == "side_lora":
                bench["extra_info"]["method_config"]["targets"] = ["blocks"]

    code, out, _ = run(capsys, str(derived(tmp_path, "tiny.json", other_targets)), "--compare", "lora", "side_lora")
    assert code == 0 and out.startswith("# spbench report: lora vs side_lora\n") and "same adapters" not in out


def test_step_and_predicted_records_merge_into_one_row_per_case() -> None:
    _, records = load([FIXTURE])
    rows = merge_rows(records)
    assert len(records) == 12 and len(rows) == 6
    for row in rows:
        assert row.device == "cpu"
        assert {"peak_bytes", "step_time_s", "predicted_cuda_peak_bytes"} <= row.metrics.keys()
    lora = next(r for r in rows if r.case_id == "lora-tiny-bert-b16-s128")
    raw = infos(fixture_doc(), "lora-tiny-bert-b16-s128")
    assert lora.metrics["peak_bytes"] == next(i["peak_bytes"] for i in raw if i["device"] == "cpu")
    assert lora.metrics["predicted_cuda_peak_bytes"] == next(
        i["predicted_cuda_peak_bytes"] for i in raw if i["device"] == "predicted-cuda")


def test_overview_has_one_table_per_backbone_with_units_and_arrows(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, str(FIXTURE))
    assert code == 0
    assert out.count("\n## ") == 2
    assert "## tiny-bert, batch 16 x seq 128, float32, measured on cpu" in out
    assert "peak memory (predicted CUDA) [MiB] ↓" in out
    assert "step time [ms] ↓" in out
    assert "sst2" not in out  # columns with no data are left out


def test_scaling_happens_in_the_reporter() -> None:
    assert scale_for(METRICS["peak_bytes"], [3 * 2**30]).unit == "GiB"
    assert scale_for(METRICS["peak_bytes"], [5 * 2**20, 100]).unit == "MiB"
    assert scale_for(METRICS["step_time_s"], [0.02]).unit == "ms"
    assert scale_for(METRICS["flops_forward"], [2e12]).unit == "TFLOP"
    assert scale_for(METRICS["sst2_accuracy"], [0.9]).unit == "%"
    assert scale_for(METRICS["params_backward_read"], [300_000_000]).divisor == 1  # counts stay exact
    mib = scale_for(METRICS["peak_bytes"], [5 * 2**20])
    assert fmt(3 * 2**20, mib) == "3.00" and fmt(0, mib) == "0.00"
    assert fmt(4096, mib) == "<0.01"  # small is not zero


def test_direction_drives_the_best_mark(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert best_of(METRICS["sst2_accuracy"], [0.90, 0.95, None]) == {1}  # higher is better
    assert best_of(METRICS["peak_bytes"], [100, 50, None]) == {1}  # lower is better
    assert best_of(METRICS["peak_bytes"], [7, 7]) == set()  # nothing to single out

    accuracy = {"full_ft": 0.9312, "lora": 0.9450, "side_lora": 0.8125}

    def add_accuracy(doc: dict[str, Any]) -> None:
        for b in doc["benchmarks"]:
            info = b["extra_info"]
            if info["device"] == "cpu":
                info["sst2_accuracy"] = accuracy[info["method"]]

    path = derived(tmp_path, "tiny.json", add_accuracy)
    code, out, _ = run(capsys, str(path))
    assert code == 0
    assert "SST-2 dev accuracy [%] ↑" in out
    lines = {line.split("|")[1].strip(): line for line in out.splitlines() if line.startswith("| ")}
    assert "**94.50**" in lines["lora"] and "81.25" in lines["side_lora"]
    assert "**81.25**" not in out
    side = [c.strip() for c in lines["side_lora"].split("|")]
    header = [c.strip() for c in next(line for line in out.splitlines() if line.startswith("| method")).split("|")]
    peak = header.index("peak memory (predicted CUDA) [MiB] ↓")
    assert side[peak].startswith("**")  # side_lora has the smallest predicted peak


def test_compare_gives_ratios_and_accuracy_deltas(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def add_accuracy(doc: dict[str, Any]) -> None:
        for info in (b["extra_info"] for b in doc["benchmarks"]):
            if info["device"] == "cpu":
                info["sst2_accuracy"] = {"lora": 0.90, "side_lora": 0.88}.get(info["method"], 0.5)

    code, out, _ = run(capsys, str(derived(tmp_path, "tiny.json", add_accuracy)), "--compare", "lora", "side_lora")
    assert code == 0
    doc = fixture_doc()
    a = infos(doc, "lora-tiny-bert-b16-s128", "predicted-cuda")[0]["predicted_cuda_peak_bytes"]
    b = infos(doc, "side_lora-tiny-bert-b16-s128", "predicted-cuda")[0]["predicted_cuda_peak_bytes"]
    peak_line = next(line for line in out.splitlines() if line.startswith("| peak memory (predicted CUDA)"))
    assert f"{b / a:.2f}×" in peak_line
    assert "-2.00 pp" in out
    assert out.index("parameters read by backward") < out.index("at peak: params")  # the headline rows first


def test_baseline_percentages(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, str(FIXTURE), "--baseline", "full_ft")
    assert code == 0
    doc = fixture_doc()
    full = infos(doc, "full_ft-tiny-bert-b16-s128", "predicted-cuda")[0]["params_trainable"]
    lora = infos(doc, "lora-tiny-bert-b16-s128", "predicted-cuda")[0]["params_trainable"]
    assert f"({lora / full * 100:.1f}%)" in out


def test_devices_are_never_merged_into_one_column(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def to_cuda(doc: dict[str, Any]) -> None:
        for info in (b["extra_info"] for b in doc["benchmarks"]):
            if info["device"] == "cpu":
                info["device"] = "cuda"

    cuda = derived(tmp_path / "gpu", "tiny.json", to_cuda)
    _, records = load([FIXTURE, cuda])
    rows = merge_rows(records)
    assert sorted({r.device for r in rows}) == ["cpu", "cuda"] and len(rows) == 12
    code, out, _ = run(capsys, str(FIXTURE), str(cuda))
    assert code == 0
    assert out.count("\n## ") == 5 and "measured on cuda" in out
    assert out.rstrip().split("\n## ")[-1].startswith("Measured vs predicted CUDA memory")  # the CUDA runs' own table


def test_failed_cases_are_shown_with_their_reason(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def oom(doc: dict[str, Any]) -> None:
        info = infos(doc, "lora-tiny-roberta-b16-s128", "cpu")[0]
        for key in ("peak_bytes", "step_time_s"):
            del info[key]
        info.update(status="oom", reason="OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB")

    code, out, _ = run(capsys, str(derived(tmp_path, "tiny.json", oom)))
    assert code == 0
    assert "| lora      | measured (cpu) oom" in out
    assert "- lora: oom (measured on cpu): OutOfMemoryError: CUDA out of memory" in out


def test_csv_has_raw_values(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, str(FIXTURE), "--format", "csv", "--baseline", "full_ft")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 6
    row = next(r for r in rows if r["case_id"] == "side_lora-tiny-bert-b16-s128")
    raw = infos(fixture_doc(), "side_lora-tiny-bert-b16-s128", "predicted-cuda")[0]
    assert int(row["predicted_cuda_peak_bytes"]) == raw["predicted_cuda_peak_bytes"]
    full = infos(fixture_doc(), "full_ft-tiny-bert-b16-s128", "predicted-cuda")[0]  # the input, not the output
    assert float(row["predicted_cuda_peak_bytes_of_baseline"]) == pytest.approx(
        raw["predicted_cuda_peak_bytes"] / full["predicted_cuda_peak_bytes"])


def test_terminal_and_output_file_are_atomic(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "out" / "report.txt"
    code, _, _ = run(capsys, str(FIXTURE), "--format", "terminal", "--output", str(target))
    assert code == 0
    text = target.read_text()
    assert "tiny-roberta, batch 16 x seq 128" in text and "side_lora" in text and "\x1b[" not in text
    assert [p.name for p in target.parent.iterdir()] == ["report.txt"]  # no temporary left behind
    code, _, err = run(capsys, str(FIXTURE), "--compare", "lora", "lroa", "--output", str(target))
    assert code == 2 and "Did you mean: lora" in err
    assert target.read_text() == text  # a failed render leaves the old file alone


def test_plot_writes_a_png(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    png = tmp_path / "plot.png"
    code, _, _ = run(capsys, str(FIXTURE), "--plot", str(png), "--output", str(tmp_path / "r.md"))
    assert code == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_pareto_front() -> None:
    points = [(1.0, 0.80), (2.0, 0.90), (3.0, 0.85), (2.5, 0.95), (1.0, 0.70)]
    assert pareto(points, higher_is_better=True) == [0, 1, 3]
    assert pareto([(1.0, 5.0), (2.0, 1.0), (3.0, 2.0)], higher_is_better=False) == [0, 1]


def _write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "bad.json"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("text, message", [
    ('{"benchmarks": [', "not valid JSON"),
    ('{"machine_info": {}, "results": []}', "not a pytest-benchmark JSON"),
    ("[1, 2]", "not a pytest-benchmark JSON"),
    ('{"benchmarks": []}', "benchmark list is empty"),
    ('{"benchmarks": [{"name": "test_x", "extra_info": {}}]}', "carries no spbench result"),
])
def test_bad_files_are_clear_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str,
                                    message: str) -> None:
    code, out, err = run(capsys, _write(tmp_path, text))
    assert code == 2 and message in err and not out


def test_missing_file_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, str(tmp_path / "nope.json"))
    assert code == 2 and "no such file" in err


def test_mixed_schema_versions_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def bump(doc: dict[str, Any]) -> None:
        doc["benchmarks"][0]["extra_info"]["schema_version"] = 99

    code, _, err = run(capsys, str(derived(tmp_path, "tiny.json", bump)))
    assert code == 2 and "schema_version 1" in err and "schema_version 99" in err


def test_two_different_runs_of_one_case_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def slower(doc: dict[str, Any]) -> None:
        infos(doc, "lora-tiny-bert-b16-s128", "cpu")[0]["step_time_s"] *= 2

    code, _, err = run(capsys, str(FIXTURE), str(derived(tmp_path / "b", "tiny.json", slower)))
    assert code == 2 and "two values of step_time_s" in err


def test_method_configurations_get_their_own_labelled_rows(tmp_path: Path) -> None:
    def r16(doc: dict[str, Any]) -> None:
        extra = [copy.deepcopy(b) for b in doc["benchmarks"] if b["extra_info"]["method"] == "lora"]
        for b in extra:
            b["extra_info"]["method_config"]["r"] = 16
            b["extra_info"]["case_id"] += "-r=16"
        doc["benchmarks"] += extra

    _, records = load([derived(tmp_path, "tiny.json", r16)])
    labels = sorted({r.label for r in merge_rows(records)})
    assert labels == ["full_ft", "lora (r=16)", "lora (r=8)", "side_lora"]


@pytest.mark.skipif(not shutil.which("pdflatex"), reason="pdflatex not installed (texlive-latex-base)")
def test_latex_compiles_in_a_booktabs_document(tmp_path: Path) -> None:
    body = "\n".join(rf"\input{{{SNAPSHOTS / name}}}" for name in ("overview.tex", "compare_lora_side_lora.tex"))
    (tmp_path / "doc.tex").write_text("\\documentclass{article}\n\\usepackage{booktabs}\n"
                                      f"\\begin{{document}}\n{body}\n\\end{{document}}\n")
    proc = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert (tmp_path / "doc.pdf").stat().st_size > 0


def test_unwritable_output_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, _, err = run(capsys, str(FIXTURE), "--output", str(blocker / "report.md"))
    assert code == 2 and "cannot write" in err


def test_accuracy_run_joins_the_step_row_and_keeps_its_own_peak_as_a_note(tmp_path: Path) -> None:
    def add_run(doc: dict[str, Any]) -> None:
        run_info = copy.deepcopy(infos(doc, "lora-tiny-bert-b16-s128", "cpu")[0])
        del run_info["step_time_s"]
        run_info.update(peak_bytes=run_info["peak_bytes"] + 4096, sst2_accuracy=0.875, sst2_f1=0.88,
                        train_steps=50, train_config={"steps": 50})
        doc["benchmarks"].append({"name": "test_accuracy[lora-tiny-bert-b16-s128]", "extra_info": run_info})

    _, records = load([derived(tmp_path, "tiny.json", add_run)])
    rows = merge_rows(records)
    lora = next(r for r in rows if r.case_id == "lora-tiny-bert-b16-s128")
    step_peak = infos(fixture_doc(), "lora-tiny-bert-b16-s128", "cpu")[0]["peak_bytes"]
    assert len(rows) == 6
    assert lora.metrics["peak_bytes"] == step_peak and lora.metrics["sst2_accuracy"] == 0.875
    assert lora.notes["peak_bytes in the SST-2 training run"] == step_peak + 4096


def test_output_to_a_special_file_writes_through_it(tmp_path: Path) -> None:
    """`-o /dev/null` or a pipe must be written to, never replaced by a regular file."""
    import os
    import stat
    import threading

    from spbench.reporting.results import write_atomic

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    write_atomic(fifo, "table\n")
    reader.join(timeout=10)
    assert got == [b"table\n"]
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


def test_terminal_format_off_a_terminal_prints_markdown(capsys: pytest.CaptureFixture[str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Piped or logged, the terminal view is the Markdown table, never rich squeezed to 80 columns."""
    code, out, _ = run(capsys, str(FIXTURE), "--format", "terminal")
    assert code == 0
    assert out.startswith("# spbench report") and "| side_lora " in out
    assert "peak memory (predicted CUDA) [MiB] ↓" in out  # a header in one piece
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    code, out, _ = run(capsys, str(FIXTURE), "--format", "terminal")
    assert code == 0 and "| side_lora " not in out and "side_lora" in out  # rich, at the terminal


def test_terminal_output_file_is_never_squeezed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "report.txt"
    assert run(capsys, str(FIXTURE), "--format", "terminal", "--output", str(target))[0] == 0
    lines = target.read_text().splitlines()
    assert any("peak memory (predicted CUDA) [MiB] ↓" in line for line in lines)
    assert all(line == line.rstrip() for line in lines)


def _fail_without_config(case_id: str, device: str) -> Callable[[dict[str, Any]], None]:
    """The record of a case that failed before its configuration was recorded (older files, or
    a configuration that could not be built): no method_config, no figures."""
    def edit(doc: dict[str, Any]) -> None:
        for info in infos(doc, case_id, device):
            for key in [k for k in info if k in METRICS or k == "method_config"]:
                del info[key]
            info.update(status="failed", reason="RuntimeError: boom")

    return edit


def test_a_failed_record_joins_its_cases_row(tmp_path: Path) -> None:
    path = derived(tmp_path, "tiny.json", _fail_without_config("lora-tiny-bert-b16-s128", "cpu"))
    _, records = load([path])
    rows = merge_rows(records)
    _, good = load([FIXTURE])
    assert len(rows) == len(merge_rows(good))  # no row of its own
    assert {row.label for row in rows} == {"full_ft", "lora", "side_lora"}  # nobody relabelled
    failed = next(r for r in rows if r.case_id == "lora-tiny-bert-b16-s128")
    assert failed.status_text == "measured (cpu) failed" and failed.reasons["cpu"] == "RuntimeError: boom"
    assert failed.method_config["r"] == 8  # the configuration the predicted record holds
    assert "predicted_cuda_peak_bytes" in failed.metrics and "peak_bytes" not in failed.metrics


def test_an_unplaceable_record_without_configuration_is_said_so(tmp_path: Path) -> None:
    def two_configs_and_a_stray(doc: dict[str, Any]) -> None:
        extra = copy.deepcopy([b for b in doc["benchmarks"] if b["extra_info"]["case_id"] == "lora-tiny-bert-b16-s128"])
        for b in extra:
            b["extra_info"]["method_config"]["r"] = 16
            b["extra_info"]["case_id"] = b["name"] = "lora-tiny-bert-b16-s128-r=16"
        stray = copy.deepcopy(extra[-1])
        stray["extra_info"].update(case_id="lora-tiny-bert-b16-s128-r=4", status="failed", reason="boom")
        del stray["extra_info"]["method_config"]
        doc["benchmarks"] += extra + [stray]

    _, records = load([derived(tmp_path, "tiny.json", two_configs_and_a_stray)])
    labels = {row.case_id: row.label for row in merge_rows(records)}
    assert labels["lora-tiny-bert-b16-s128"] == "lora (r=8)" and labels["lora-tiny-bert-b16-s128-r=16"] == "lora (r=16)"
    assert labels["lora-tiny-bert-b16-s128-r=4"] == "lora (configuration not recorded)"
