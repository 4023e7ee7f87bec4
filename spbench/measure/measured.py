"""Measured figures of a case on its real device: peak memory of one steady-state step.

CUDA protocol (DESIGN.md): warm-up step; synchronize; reset_peak_memory_stats; step;
synchronize; max_memory_allocated / max_memory_reserved; NVML per-process used memory (which
includes the CUDA context the allocator cannot see). CPU: MemTracker on the real step.
:func:`step_peak` is that protocol after the warm-up, written once: the benchmark step
(:func:`measure_built`) and the training loop (``spbench.train``) both measure through it.
"""

from __future__ import annotations

import gc
import os
from typing import Any, Callable, Sequence

import torch

from spbench.case import Built
from spbench.measure.memory import no_gc, tracked_peak
from spbench.measure.step import ChainHooks, autocast_for, step_fn


def nvml_used_bytes(device_index: int) -> int | None:
    """This process's used GPU memory per NVML, or None where NVML cannot tell."""
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            handle = pynvml.nvmlDeviceGetHandleByIndex(device_index)
            for proc in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
                if proc.pid == os.getpid() and proc.usedGpuMemory is not None:
                    return int(proc.usedGpuMemory)
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # NVML missing or not permitted: not measured, so absent
        return None
    return None


def cuda_baseline(device: str) -> tuple[int, int]:
    """Allocated and reserved bytes before a case is built, after freeing what earlier cases
    left (reference cycles, cached blocks): the case's figures are counted above these.
    Without this, a model an earlier case left in a cycle was counted in the next case's peak
    (seen on an H100: mezo-distilbert-base measured 605 MiB, 283 MiB of it not its own)."""
    if torch.device(device).type != "cuda":
        return 0, 0
    gc.collect()
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    return int(torch.cuda.memory_allocated()), int(torch.cuda.memory_reserved())


def measure_built(built: Built, baseline: tuple[int, int] = (0, 0)) -> tuple[dict[str, Any], Callable[[], torch.Tensor]]:
    """Move the case to its device, run a warm-up step, measure the next one's peak.

    Args:
        baseline: ``cuda_baseline()`` taken before the case was built; subtracted on CUDA.

    Returns the metrics and the (synchronisation-free) step function for timing.
    """
    device = built.case.device
    built.model.to(device)
    built.batch.update({k: v.to(device) for k, v in built.batch.items()})
    dev_type = torch.device(device).type
    hooks = ChainHooks(autocast=autocast_for(built.case, dev_type))
    optimizer = built.method.make_optimizer(built.model)
    step = step_fn(built, optimizer, hooks)
    step()  # warm-up: optimizer state exists from here on
    return step_peak(step, built.model, optimizer, list(built.batch.values()), device, baseline), step


def step_peak(step: Callable[[], Any], model: torch.nn.Module, optimizer: Any, inputs: Sequence[torch.Tensor],
              device: str, baseline: tuple[int, int] = (0, 0)) -> dict[str, Any]:
    """Peak of one steady-state step (run a warm-up step first, so the optimizer state exists).

    CUDA: ``peak_bytes`` (max_memory_allocated) and ``reserved_peak_bytes`` above ``baseline``
    (:func:`cuda_baseline`), and ``nvml_used_bytes`` where NVML can tell. CPU: ``peak_bytes``
    of the tracker (live bytes of parameters, gradients, optimizer state, ``inputs`` and
    everything the step allocates).
    """
    if torch.device(device).type != "cuda":
        return {"peak_bytes": int(tracked_peak(step, model, optimizer, list(inputs))["peak_bytes"])}
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    with no_gc():  # as on the CPU and in the prediction: cycles freed at one point
        step()
        torch.cuda.synchronize()
    metrics = {"peak_bytes": int(torch.cuda.max_memory_allocated()) - baseline[0],
               "reserved_peak_bytes": int(torch.cuda.max_memory_reserved()) - baseline[1]}
    used = nvml_used_bytes(torch.device(device).index or torch.cuda.current_device())
    if used is not None:
        metrics["nvml_used_bytes"] = used
    return metrics
