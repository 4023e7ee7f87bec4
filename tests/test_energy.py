"""The energy counters against a fake NVML and a fake powercap tree: wrap, absence, per step."""

from __future__ import annotations

import os
import sys
import types
from pathlib import Path

import pytest

from spbench.measure import energy
from spbench.measure.energy import EnergyMeter, EnergyUnavailable, delta, rapl_counter


def _zone(root: Path, name: str, uj: int, max_uj: int) -> Path:
    zone = root / name
    zone.mkdir(parents=True)
    (zone / "energy_uj").write_text(f"{uj}\n")
    (zone / "max_energy_range_uj").write_text(f"{max_uj}\n")
    (zone / "name").write_text("package-0\n")
    return zone


def test_delta_handles_one_wrap() -> None:
    assert delta(10, 25, 100) == 15
    assert delta(90, 5, 100) == 15  # 90 -> 99, 0 -> 5


def test_rapl_sums_packages_and_survives_a_wrap(tmp_path: Path) -> None:
    a = _zone(tmp_path, "intel-rapl:0", 999_000, 999_999)  # wraps after 999,999 uJ
    b = _zone(tmp_path, "intel-rapl:1", 0, 999_999)
    _zone(tmp_path, "intel-rapl:0:0", 5, 999_999)  # a sub-domain (core): inside package 0, not added
    counter = rapl_counter(tmp_path)
    assert "intel-rapl:0, intel-rapl:1" in counter.source
    with EnergyMeter(counter, poll_s=3600) as meter:
        (a / "energy_uj").write_text("500000\n")  # wrapped: 1,000 uJ to the end, then 500,000
        (b / "energy_uj").write_text("250000\n")
    assert meter.joules() == pytest.approx((1_000 + 500_000 + 250_000) * 1e-6)


def test_rapl_absent_or_unreadable_says_why(tmp_path: Path) -> None:
    with pytest.raises(EnergyUnavailable, match="does not exist"):
        rapl_counter(tmp_path / "missing")
    with pytest.raises(EnergyUnavailable, match="no package domain"):
        rapl_counter(tmp_path)
    zone = _zone(tmp_path, "intel-rapl:0", 1, 10)
    (zone / "energy_uj").chmod(0)
    if os.access(zone / "energy_uj", os.R_OK):
        pytest.skip("running as root: every file is readable")
    with pytest.raises(EnergyUnavailable, match="not readable"):
        rapl_counter(tmp_path)


class _FakeNVML(types.ModuleType):
    """pynvml's calls that the counter makes, over a scripted list of mJ readings."""

    class NVMLError(Exception):
        pass

    def __init__(self, readings: list[int], start_error: bool = False, no_counter: bool = False) -> None:
        super().__init__("pynvml")
        self.readings, self.start_error, self.no_counter = list(readings), start_error, no_counter
        self.shutdowns = 0

    def nvmlInit(self) -> None:
        if self.start_error:
            raise self.NVMLError("Driver Not Loaded")

    def nvmlShutdown(self) -> None:
        self.shutdowns += 1

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: int) -> int:
        if self.no_counter:
            raise self.NVMLError("Not Supported")
        return self.readings.pop(0) if len(self.readings) > 1 else self.readings[0]


def test_nvml_counter_wraps_at_64_bits(monkeypatch: pytest.MonkeyPatch) -> None:
    top = 2**64
    fake = _FakeNVML([0, top - 2_000, 3_000])  # probe, start, stop
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    counter = energy.nvml_counter(0)
    with EnergyMeter(counter, poll_s=3600) as meter:
        pass
    assert meter.joules() == pytest.approx(5.0)  # 2,000 mJ to the wrap + 3,000 mJ
    counter.close()
    assert fake.shutdowns == 1


@pytest.mark.parametrize("fake, why", [(_FakeNVML([0], start_error=True), "cannot start"),
                                       (_FakeNVML([0], no_counter=True), "no energy counter")])
def test_nvml_missing_or_without_counter_says_why(monkeypatch: pytest.MonkeyPatch, fake: _FakeNVML, why: str) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    with pytest.raises(EnergyUnavailable, match=why):
        energy.nvml_counter(0)


def test_nvml_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import raises ImportError
    with pytest.raises(EnergyUnavailable, match="not installed"):
        energy.nvml_counter(0)


def test_energy_per_step_spans_the_window(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    zone = _zone(tmp_path, "intel-rapl:0", 0, 10**12)
    monkeypatch.setattr(energy, "POWERCAP", tmp_path)
    monkeypatch.setattr(energy, "counter_for", lambda device: rapl_counter(tmp_path))
    calls = []

    def step() -> None:  # each step costs 2 J on the fake counter
        calls.append(1)
        (zone / "energy_uj").write_text(f"{len(calls) * 2_000_000}\n")

    metrics, notes = energy.energy_per_step(step, "cpu", min_window_s=0.05)
    assert metrics["energy_step_j"] == pytest.approx(2.0)
    assert f"{len(calls)} steps" in notes["energy"]


def test_energy_per_step_absent_with_reason(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(energy, "counter_for",
                        lambda device: rapl_counter(tmp_path / "none"))
    metrics, notes = energy.energy_per_step(lambda: None, "cpu")
    assert metrics == {}
    assert notes["energy"].startswith("not measured: no RAPL")
