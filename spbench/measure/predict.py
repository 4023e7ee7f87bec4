"""Predicted CUDA figures of a case: its step on fake tensors with CUDA's choices emulated.

The case is built on the meta device (shapes, dtypes and ties, no data: nothing is drawn or
copied, whatever the backbone's or the batch's size) and its parameters and batch become fake
CPU tensors; a case built with real weights predicts the same figures (tested), only slower.

Deterministic to the byte and independent of the machine: this is what ``spbench check``
gates. Also counts FLOPs and the parameters backward reads on the same fake step, and
predicts the no-grad forward of the same batch on the untouched backbone (the floor).
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator
from typing import Any

import torch

from spbench.case import Built, Case, build
from spbench.measure.allocator import DEFAULT_CARD, reserved_metrics
from spbench.measure.flops import FlopHooks
from spbench.measure.cuda import cuda_emulation
from spbench.measure.memory import acyclic_grad_hooks, fake_mode, fakeify, frozen_gc, to_fake, tracked_peak
from spbench.measure.params import BackwardReadHooks, count_params
from spbench.measure.step import ChainHooks, autocast_for, step_fn
from spbench.measure.trace import AllocTrace, Trace


def _fake_batch(batch: dict[str, torch.Tensor], mode: Any) -> dict[str, torch.Tensor]:
    """Fake CPU copies of a batch; a batch on the meta device (what ``predict`` and a size
    search build: no real batch) becomes fake CPU tensors of the same shapes."""
    return {k: to_fake(v, mode) for k, v in batch.items()}


@contextlib.contextmanager
def fake_step(built: Built, emulate_cuda: bool = True,
              skip: tuple[str, ...] = ()) -> Iterator[tuple[torch.optim.Optimizer, Any]]:
    """Turn ``built``'s model and batch fake (in place); inside, CUDA's choices are emulated
    (unless ``emulate_cuda=False``; ``skip``: features of ``cuda.FEATURES`` left at CPU's)
    and the method's optimizer is made as it would be there.
    Yields ``(optimizer, mode)``: the prediction's step, and the diagnostic's labelled one."""
    mode = fake_mode()
    fakeify(built.model, mode)
    built.batch.update(_fake_batch(built.batch, mode))  # the same batch, its tensors fake
    with mode, (cuda_emulation(skip) if emulate_cuda else contextlib.nullcontext()):
        yield built.method.make_optimizer(built.model, foreach=True if emulate_cuda else None), mode


@frozen_gc()
def predict_built(built: Built, plain: torch.nn.Module | None = None,
                  emulate_cuda: bool = True, skip: tuple[str, ...] = (),
                  allocator: str = "default", card: str = DEFAULT_CARD,
                  traces: list[Trace] | None = None) -> dict[str, Any]:
    """Deterministic figures of a built case (the model is turned fake in place).

    ``allocator`` (``default`` | ``expandable``) and ``card`` (a name of
    ``allocator.CONTEXT_BYTES`` or a byte count) shape the reserved and device-total
    figures; ``traces``: a list the step's allocation trace is appended to.

    ``emulate_cuda=False`` keeps CPU's choices (the fake peak then equals the real CPU
    tracker's peak, which the tests check); ``skip`` leaves only the named features of
    ``cuda.FEATURES`` at CPU's (what one of them moves).
    """
    metrics: dict[str, Any] = dict(count_params(built.model))
    autocast = autocast_for(built.case, "cpu")
    with fake_step(built, emulate_cuda, skip) as (optimizer, mode):
        flops, reads = FlopHooks(), BackwardReadHooks(built.model)
        recorder = AllocTrace()
        recorder.resident(built.model, built.batch.values())  # moved to the device first
        with recorder:
            # Warm-up step: creates the optimizer state (steady state) and counts FLOPs / reads.
            with acyclic_grad_hooks():  # its graphs freed when dead, as on the device
                step_fn(built, optimizer, ChainHooks(flops, reads, autocast=autocast))()
            gc.collect()  # as the measured protocol does before its step (memory.no_gc)
            recorder.mark_step()
            peak = tracked_peak(step_fn(built, optimizer, ChainHooks(autocast=autocast)),
                                built.model, optimizer, list(built.batch.values()))
        trace = recorder.close()
    if traces is not None:
        traces.append(trace)
    metrics["predicted_cuda_peak_bytes"] = peak.pop("peak_bytes")
    metrics.update(reserved_metrics(trace, allocator, card))
    metrics.update(peak)
    metrics["flops_forward"] = flops.flops["forward"]
    metrics["flops_backward"] = flops.flops["backward"]
    metrics["params_backward_read"] = reads.reads.numel()  # 0 when no backward phase ran (MeZO)
    if reads.ran_backward:  # "reached by the gradient" means nothing without a backward
        metrics["params_with_grad"] = reads.with_grad
    if plain is not None:
        metrics["predicted_inference_peak_bytes"] = predict_inference(built, plain, mode, emulate_cuda, skip)
    return metrics


def predict_inference(built: Built, plain: torch.nn.Module, mode: Any, emulate_cuda: bool = True,
                      skip: tuple[str, ...] = ()) -> int:
    """Predicted peak of a no-grad eval forward of the same batch on the untouched backbone."""
    fakeify(plain, mode)
    plain.eval()
    autocast = autocast_for(built.case, "cpu")

    def forward() -> None:
        with torch.no_grad(), ChainHooks(autocast=autocast).phase("forward"):
            built.objective.logits(plain, built.batch)

    with mode, (cuda_emulation(skip) if emulate_cuda else contextlib.nullcontext()):
        return tracked_peak(forward, plain, list(built.batch.values()))["peak_bytes"]


def predict(case: Case, allocator: str = "default", card: str = DEFAULT_CARD,
            traces: list[Trace] | None = None) -> tuple[dict[str, Any], Built]:
    """Predicted figures of ``case``, built on the meta device (no weights drawn or copied)."""
    built = build(case, keep_backbone_copy=True, meta=True)
    plain = built.plain
    return predict_built(built, plain, allocator=allocator, card=card, traces=traces), built
