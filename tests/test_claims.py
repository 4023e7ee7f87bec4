"""The team's claims table: verdicts from paired comparisons and measured ratios, rows that are
missing said so, and the committed table reproduced by its one command."""

from __future__ import annotations

import dataclasses
import json
import random
import re
from pathlib import Path
from typing import Any

from spbench.case import Case
from spbench.reporting.command import render, report_args
from spbench.result import PREDICTED, Result

ROOT = Path(__file__).resolve().parents[1]


def run(row: str, method: str, seed: int, right: list[bool], labels: str, overrides: tuple = ()) -> dict[str, Any]:
    case = Case(method, "minilm-l6", 32, 64, overrides=overrides)
    train = {"budget": "epochs=1.0", "seed": seed, "select_on": "validation"}
    acc = sum(right) / len(right)
    result = Result.of(case, metrics={"sst2_accuracy": acc, "val_accuracy": acc}, train_config=train,
                       notes={"sweep": {"study": f"{row}-best-3seeds", "seed": seed, "params": {}}})
    predicted = "".join(y if ok else str(1 - int(y)) for y, ok in zip(labels, right))
    return dataclasses.replace(result, predictions={"split": "dev", "examples": len(labels), "sha256": "x",
                                                    "labels": labels, "predicted": predicted}).to_extra_info()


def cost(method: str, device: str, backbone: str, **metrics: float) -> dict[str, Any]:
    case = Case(method, backbone, 16, 128)
    return Result.of(case, device, metrics=metrics).to_extra_info()


def write(path: Path, infos: list[dict[str, Any]]) -> str:
    path.write_text(json.dumps({"benchmarks": [{"name": f"b{i}", "extra_info": x} for i, x in enumerate(infos)]}))
    return str(path)


def line(text: str, start: str) -> str:
    return next(row for row in text.splitlines() if row.startswith(f"| {start}"))


def test_verdicts_follow_the_paired_difference_and_the_measured_ratio(tmp_path: Path) -> None:
    rng = random.Random(0)
    labels = "".join(rng.choice("01") for _ in range(600))
    base = [rng.random() < 0.8 for _ in range(600)]
    better = [True if not ok and i % 2 else ok for i, ok in enumerate(base)]  # ~60 more right
    infos = [run("klst-k1", "klst", s, base, labels, (("k", "1"),)) for s in (0, 1, 2)]
    infos += [run("klst-k3", "klst", s, better, labels, (("k", "3"),)) for s in (0, 1, 2)]
    infos += [run("lora_blocks", "lora_blocks", s, base, labels) for s in (0, 1, 2)]
    infos += [run("side_lora", "side_lora", s, base, labels) for s in (0, 1, 2)]
    infos += [cost("lst", "cpu", "distilbert-base", step_time_s=1.0), cost("klst", "cpu", "distilbert-base", step_time_s=1.5),
              cost("lora_blocks", PREDICTED, "roberta-large", params_backward_read=300e6),
              cost("side_lora", PREDICTED, "roberta-large", params_backward_read=5e6)]
    text = render(report_args([write(tmp_path / "r.json", infos)], claims=True))
    window = line(text, "k-LST beats LST")
    assert "klst-k3: " in window and "(3 seeds)" in window and re.search(r"\| \+\d+\.\d+ pp \[\+", window)
    assert window.rstrip(" |").endswith("agrees")
    same = line(text, "Side-LoRA loses virtually nothing against LoRA (the slides'")
    assert "+0.00 pp [+0.00, +0.00], p = 1" in same and "agrees (not distinguishable from noise at this size)" in same
    team = line(text, "Side-LoRA loses virtually nothing against LoRA (the team's")
    assert "side_lora_team: the runs of lora_blocks (the same training: tests/test_train.py::" in team
    assert "| lora_blocks: " in team and "| 0 (the same runs)" in team and "agrees (it trains as lora_blocks" in team
    own = render(report_args([write(tmp_path / "o.json", infos + [run("side_lora_team", "side_lora_team", s, better, labels)
                                                                  for s in (0, 1, 2)])], claims=True))
    measured = line(own, "Side-LoRA loses virtually nothing against LoRA (the team's")  # its own runs, when it has them
    assert "side_lora_team: " in measured and "the runs of" not in measured and re.search(r"\| \+\d+\.\d+ pp \[", measured)
    klst_only = render(report_args([write(tmp_path / "k.json", infos[:6])], claims=True))
    assert "no result yet for lora_blocks |" in re.sub(r" +", " ", line(klst_only, "Side-LoRA loses virtually nothing against LoRA (the team's"))
    assert "1.50x" in line(text, "9-LST is about 10% slower") and "disagrees" in line(text, "9-LST is about 10% slower")
    assert "agrees" in line(text, "Side-LoRA: 64% fewer parameters in the gradient computation (detached")
    assert "no predicted_cuda_peak_bytes" in line(text, "k-LST costs little memory")


def test_the_committed_claims_table_is_what_its_command_writes(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """reports/accuracy/claims.md names its sources; rendering them again gives the same file
    (its command: ``spbench report SOURCES... --claims -o reports/accuracy/claims.md``)."""
    committed = ROOT / "reports" / "accuracy" / "claims.md"
    text = committed.read_text()
    sources = re.findall(r"^- (\S+\.json):", text, flags=re.M)
    assert sources
    monkeypatch.chdir(ROOT)
    assert render(report_args(sources, claims=True)) == text


def test_the_readme_summary_is_the_committed_claims_table() -> None:
    """README's claims summary lists each claim of reports/accuracy/claims.md with its figure and
    verdict, as the table has them (README is not where a verdict is decided)."""
    def cells(line: str) -> list[str]:
        return [c.strip() for c in line.strip().strip("|").split("|")]

    table = [cells(row) for row in (ROOT / "reports" / "accuracy" / "claims.md").read_text().splitlines()
             if row.startswith("| ") and not row.startswith("| claim")]
    readme = (ROOT / "README.md").read_text()
    block = readme.split("<!-- claims summary", 1)[1].split("<!-- /claims summary -->", 1)[0]
    summary = [cells(row) for row in block.splitlines()[1:] if row.startswith("| ") and not row.startswith("| claim")]
    assert summary == [[c[0], c[4], c[5]] for c in table]
