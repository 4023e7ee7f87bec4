"""Wall time of a step: synchronised on CUDA so asynchronous kernels are inside the timing."""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable

import torch


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def synced(step: Callable[[], Any], device: str) -> Callable[[], Any]:
    """``step`` followed by a device synchronisation (what pytest-benchmark times)."""

    def run() -> Any:
        out = step()
        synchronize(device)
        return out

    return run


def median_step_time(step: Callable[[], Any], device: str, rounds: int = 3, warmup: int = 1) -> float:
    """Median seconds of ``rounds`` synchronised calls after ``warmup`` untimed ones."""
    run = synced(step, device)
    for _ in range(warmup):
        run()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
