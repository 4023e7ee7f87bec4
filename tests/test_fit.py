"""spbench estimate --fit: the largest batch / longest sequence that fits, found exactly, with
no hidden cap, saying what bounds it, and --json that stays pure JSON in every outcome."""

from __future__ import annotations

import json
import subprocess
import sys
from types import SimpleNamespace
from typing import Any

import pytest

from spbench import fit as fit_module
from spbench.case import Case
from spbench.fit import fit


def spbench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "spbench.cli", *args], capture_output=True, text=True)


def fake_peaks(monkeypatch: pytest.MonkeyPatch, peak: Any, config: Any = None) -> list[Case]:
    """Replace the prediction by ``peak(case)`` (an exact, monotone stand-in); returns the cases probed."""
    probed: list[Case] = []

    def predict_peak(case: Case, **_: Any) -> tuple[int, Any]:
        probed.append(case)
        return peak(case), config or SimpleNamespace(max_position_embeddings=512, model_type="bert")

    monkeypatch.setattr(fit_module, "predict_peak", predict_peak)
    return probed


def test_no_hidden_cap_and_the_boundary_is_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    probed = fake_peaks(monkeypatch, lambda c: 1_000 + 150_007 * c.batch_size + (c.batch_size % 7) * 512)
    budget = 2**40
    answer = fit(Case("lora", "tiny-bert", seq_len=32), budget)
    expected = max(b for b in range(7_300_000, 7_400_000) if 1_000 + 150_007 * b + (b % 7) * 512 <= budget)
    assert answer.size == expected > 131_071  # the old search stopped at 2**17 - 1
    assert answer.peak <= budget < answer.next.peak and answer.next.size == expected + 1
    assert answer.bound == "memory"
    assert len(probed) == len({c.batch_size for c in probed}) <= 2 * 24  # each size predicted once, O(log)


def test_the_backbone_positions_bound_the_sequence_not_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    config = SimpleNamespace(max_position_embeddings=514, model_type="roberta")
    fake_peaks(monkeypatch, lambda c: 10 * c.seq_len * c.batch_size, config)
    answer = fit(Case("lora", "tiny-roberta", batch_size=4), 10**9, over="seq_len")
    assert answer.size == 512 and answer.next.size == 513 and answer.next.peak is None
    assert "512 positions" in answer.bound and "512 positions" in answer.to_json()["bounded_by"]
    assert any("not by memory" in line for line in answer.lines())
    tight = fit(Case("lora", "tiny-roberta", batch_size=4), 10 * 4 * 300, over="seq_len")
    assert (tight.size, tight.bound, tight.next.peak) == (300, "memory", 10 * 4 * 301)


def test_a_size_the_prediction_cannot_run_bounds_the_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    def peak(case: Case) -> int:
        if case.batch_size > 1_000:
            raise RuntimeError("Storage size calculation overflowed")
        return case.batch_size

    fake_peaks(monkeypatch, peak)
    answer = fit(Case("lora", "tiny-bert"), 10**12)
    assert answer.size == 1_000 and answer.next.size == 1_001 and "overflowed" in answer.next.error
    assert "overflowed" in answer.bound and answer.to_json()["next"]["error"].startswith("RuntimeError")


def test_nothing_fits(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_peaks(monkeypatch, lambda c: 10**6)
    answer = fit(Case("lora", "tiny-bert"), 10**5)
    assert answer.size is None and answer.next.size == 1 and answer.next.peak == 10**6
    assert answer.to_json()["fits"] is False


@pytest.mark.slow
def test_the_answer_is_the_real_prediction() -> None:
    from spbench.measure.predict import predict

    case = Case("lora", "tiny-bert", batch_size=3, seq_len=8)
    budget = predict(case)[0]["predicted_cuda_peak_bytes"] + 1
    for over in ("batch_size", "seq_len"):
        answer = fit(case, budget, over=over, on="allocated")
        assert answer.size is not None and answer.size >= getattr(case, over)
        at_answer = predict(answer.answer_case())[0]["predicted_cuda_peak_bytes"]
        assert answer.peak == at_answer <= budget < answer.next.peak


@pytest.mark.slow
def test_the_device_total_is_fitted_by_default() -> None:
    """By default the budget holds the device total (reserved + the card's context), and the
    answer says so; fitting the allocated peak to the same budget answers a larger batch."""
    from spbench.measure.predict import predict

    case = Case("lora", "tiny-bert", batch_size=3, seq_len=8)
    budget = predict(case)[0]["predicted_cuda_device_bytes"]
    answer = fit(case, budget)
    assert answer.on == "device" and answer.size is not None and answer.size >= 3
    at_answer = predict(answer.answer_case())[0]
    assert answer.peak == at_answer["predicted_cuda_device_bytes"] <= budget < answer.next.peak
    assert "device total" in answer.lines()[0] and answer.to_json()["fit_on"] == "device"
    reserved = fit(case, at_answer["predicted_cuda_reserved_bytes"], on="reserved")
    assert reserved.size == answer.size and reserved.peak == at_answer["predicted_cuda_reserved_bytes"]


@pytest.mark.parametrize("extra, code, key", [
    (["--fit", "600KiB", "--fit-on", "allocated"], 0, "batch_size"),
    (["--fit", "600KiB", "--fit-on", "allocated", "--fit-over", "seq-len"], 0, "seq_len"),
    (["--fit", "1GiB"], 0, "predicted_cuda_device_bytes"),  # the device total, by default
    (["--fit", "1KiB"], 1, "fits"),  # not even batch 1 fits
    (["--fit", "1GiB", "--fit-on", "width"], 2, "error"),
    (["--fit", "lots"], 2, "error"),
    (["--fit", "1GiB", "--fit-over", "width"], 2, "error"),
    (["--fit-over", "seq-len"], 2, "error"),
    (["--fit", "1GiB", "--batch-size", "x"], 2, "error"),  # an argparse error too
])
@pytest.mark.slow
def test_json_output_is_pure_json_in_every_outcome(extra: list[str], code: int, key: str,
                                                   capfd: pytest.CaptureFixture[str]) -> None:
    """In this process (capfd reads the file descriptors, so a print from any library counts)."""
    from spbench.cli import main

    try:
        returned = main(["estimate", "--method", "lora", "--backbone", "tiny-bert", "--batch-size", "2",
                         "--seq-len", "16", "--json", *extra])
    except SystemExit as exc:  # argparse's own exit
        returned = exc.code
    out, err = capfd.readouterr()
    assert returned == code, err
    doc = json.loads(out)  # the whole of stdout, nothing before or after
    assert key in doc
    assert "Traceback" not in err
    if code == 0:
        figure = {"allocated": "predicted_cuda_peak_bytes", "device": "predicted_cuda_device_bytes"}[doc["fit_on"]]
        assert doc[figure] <= doc["fit_bytes"] < doc["next"][figure]


def test_the_answer_names_every_case_field(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_peaks(monkeypatch, lambda c: c.batch_size)
    case = Case("full_ft", "tiny-bert", seq_len=64, dtype="bfloat16", grad_checkpointing=True, overrides=(("lr", "1e-4"),))
    answer = fit(case, 100)
    doc = answer.to_json()
    assert doc["grad_checkpointing"] is True and doc["dtype"] == "bfloat16" and doc["seq_len"] == 64
    assert doc["batch_size"] == 100 and doc["overrides"] == {"lr": "1e-4"}
    assert answer.lines()[0].startswith("full_ft on tiny-bert, bfloat16, gc, lr=1e-4, seq 64: largest batch size")
