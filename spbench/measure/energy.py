"""Energy from the hardware's cumulative counters: NVML on CUDA, RAPL (powercap) on the CPU.

- CUDA: NVML's total energy counter of the GPU (``nvmlDeviceGetTotalEnergyConsumption``, mJ
  since the driver loaded; Volta and newer), read with nvidia-ml-py (``pynvml``) directly.
  The counter is refreshed periodically, not at every kernel, so a figure per step is the
  energy over a window of whole steps lasting at least :data:`MIN_WINDOW_S` (1 s), divided
  by their number.
- CPU: the package domains of the kernel's powercap tree (``intel-rapl:N/energy_uj``, AMD's
  included under that name), summed over sockets.

Both count the whole device (every process on the GPU, every core of the package), so a
figure is only as clean as the machine was idle. A counter that wraps (RAPL at
``max_energy_range_uj``, NVML at 2**64 mJ) is read often enough (:class:`EnergyMeter` polls)
that it wraps at most once between two reads. Where no counter can be read the figure is
absent and :class:`EnergyUnavailable` says why; nothing is estimated.

Zeus (ml.energy) offers the same two counters; it is not a dependency here (nvidia-ml-py
already is), and the counters need no more than the few reads below.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

POWERCAP = Path("/sys/class/powercap")
MIN_WINDOW_S = 1.0
NVML_RANGE_MJ = 2**64  # an unsigned long long


class EnergyUnavailable(Exception):
    """No energy counter can be read here; the message says why."""


@dataclass
class Counter:
    """Cumulative counters of one device's domains, in ``unit_j`` joules per tick; each wraps
    to 0 after ``ranges[i] - 1``."""

    source: str  # "nvml" | "rapl", with what it covers
    read: Callable[[], list[int]]
    ranges: list[int]
    unit_j: float
    close: Callable[[], None] = lambda: None


def delta(start: int, end: int, span: int) -> int:
    """Ticks from ``start`` to ``end`` of a counter that wraps at ``span`` (at most once)."""
    return end - start if end >= start else end + span - start


def nvml_counter(index: int = 0) -> Counter:
    """The energy counter of GPU ``index``; EnergyUnavailable without NVML or its counter."""
    try:
        import pynvml
    except ImportError:
        raise EnergyUnavailable("nvidia-ml-py (pynvml) is not installed") from None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        raise EnergyUnavailable(f"NVML cannot start: {exc}") from None
    try:
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
    except pynvml.NVMLError as exc:
        pynvml.nvmlShutdown()
        raise EnergyUnavailable(f"NVML has no energy counter for GPU {index}: {exc}") from None
    return Counter(f"nvml (GPU {index}, whole device)",
                   lambda: [int(pynvml.nvmlDeviceGetTotalEnergyConsumption(handle))],
                   [NVML_RANGE_MJ], 1e-3, pynvml.nvmlShutdown)


def rapl_counter(root: Path | str = POWERCAP) -> Counter:
    """The package domains of the powercap tree at ``root``; EnergyUnavailable where the
    kernel exposes none or they cannot be read (recent kernels: root only)."""
    root = Path(root)
    if not root.is_dir():
        raise EnergyUnavailable(f"no RAPL: {root} does not exist (no powercap driver, or not exposed here)")
    zones = sorted(p for p in root.glob("intel-rapl:*") if p.name.count(":") == 1 and (p / "energy_uj").exists())
    if not zones:
        raise EnergyUnavailable(f"no RAPL: no package domain (intel-rapl:N/energy_uj) under {root}")
    try:
        ranges = [int((z / "max_energy_range_uj").read_text()) + 1 for z in zones]
        for z in zones:
            int((z / "energy_uj").read_text())
    except PermissionError:
        raise EnergyUnavailable(f"no RAPL: {zones[0] / 'energy_uj'} is not readable by this user") from None
    except (OSError, ValueError) as exc:
        raise EnergyUnavailable(f"no RAPL: cannot read {zones[0]}: {exc}") from None
    names = ", ".join(z.name for z in zones)
    return Counter(f"rapl ({names}, whole package)",
                   lambda: [int((z / "energy_uj").read_text()) for z in zones], ranges, 1e-6)


def counter_for(device: str, powercap: Path | str = POWERCAP) -> Counter:
    """NVML for a CUDA device, RAPL for the CPU; EnergyUnavailable with the reason otherwise."""
    import torch

    dev = torch.device(device)
    if dev.type == "cuda":
        return nvml_counter(dev.index if dev.index is not None else torch.cuda.current_device())
    return rapl_counter(powercap)


@dataclass
class EnergyMeter:
    """Joules since :meth:`start`, from ``counter``; a thread reads it every ``poll_s`` seconds
    so that a long run sees every wrap (RAPL's range lasts minutes at full power)."""

    counter: Counter
    poll_s: float = 5.0
    _last: list[int] = field(default_factory=list)
    _ticks: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _sample(self) -> None:
        with self._lock:
            now = self.counter.read()
            self._ticks += sum(delta(a, b, r) for a, b, r in zip(self._last, now, self.counter.ranges))
            self._last = now

    def joules(self) -> float:
        """Energy since the start, read now (while running) or up to the stop."""
        if self._thread is not None:
            self._sample()
        return self._ticks * self.counter.unit_j

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_s):
            self._sample()

    def __enter__(self) -> "EnergyMeter":
        self._last, self._ticks = self.counter.read(), 0
        self._stop.clear()
        self._thread = threading.Thread(target=self._poll, name="spbench-energy", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._sample()


def meter_for(device: str) -> tuple[EnergyMeter | None, str]:
    """(a meter, what it counts) for ``device``, or (None, why not)."""
    try:
        counter = counter_for(device)
    except EnergyUnavailable as exc:
        return None, f"not measured: {exc}"
    return EnergyMeter(counter), counter.source


def energy_per_step(step: Callable[[], Any], device: str, min_window_s: float = MIN_WINDOW_S,
                    ) -> tuple[dict[str, float], dict[str, str]]:
    """Joules per call of ``step`` (synchronised) over whole calls lasting >= ``min_window_s``:
    ``({"energy_step_j": J}, {"energy": what counted it})``, or ``({}, {"energy": why not})``."""
    from spbench.measure.timing import synchronize

    meter, source = meter_for(device)
    if meter is None:
        return {}, {"energy": source}
    try:
        synchronize(device)
        with meter:
            start, steps = time.perf_counter(), 0
            while steps == 0 or time.perf_counter() - start < min_window_s:
                step()
                synchronize(device)
                steps += 1
            window = time.perf_counter() - start
        joules = meter.joules()
    finally:
        meter.counter.close()
    return ({"energy_step_j": joules / steps},
            {"energy": f"{source}: {steps} steps over {window:.2f} s"})
