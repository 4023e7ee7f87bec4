"""What a method costs once trained: the deployed model's no-grad forward, and its stored size.

The deployed model is the method's ``deployable`` of the prepared model (LoRA and its
variants merged into the weights by peft's ``merge_and_unload``; side networks, prefixes and
prompt tokens kept; full fine-tuning and MeZO the whole model). Its overhead is against the
untouched backbone on the same batch, both measured in the same run:

- measured (:func:`measure_inference`): peak of one no-grad eval forward (CUDA:
  ``max_memory_allocated`` after a warm-up and a reset, one model on the device at a time;
  CPU: the tracker), and the median wall time of synchronised forwards, the two models
  timed in alternation so that a drift of the machine hits both alike;
- predicted (:func:`predict_deployed`): the same forward on fake tensors with CUDA emulated,
  as ``measure.predict`` predicts the backbone's (deterministic, any size).

Deployable size (:func:`deploy_bytes`): the bytes of the file safetensors writes for the
method's ``deploy_state`` (what must be stored on top of the shared backbone). Its size does
not depend on the values, so a model built on the meta device is saved as uninitialised
tensors of the same names, shapes and dtypes.

    pytest benchmarks/test_inference.py --methods lora,lst --backbones distilbert-base
"""

from __future__ import annotations

import contextlib
import gc
import os
import statistics
import tempfile
import time
from typing import TYPE_CHECKING, Any, Callable

import torch

from spbench.measure.memory import no_gc, tracked_peak
from spbench.measure.params import count_params
from spbench.measure.step import ChainHooks, autocast_for
from spbench.measure.timing import synchronize

if TYPE_CHECKING:
    from spbench.case import Built


def deploy_bytes(state: dict[str, torch.Tensor]) -> int:
    """Size in bytes of ``state`` saved by ``safetensors.torch.save_file`` (data + header)."""
    from safetensors.torch import save_file

    tensors = {name: (torch.empty(t.shape, dtype=t.dtype) if t.is_meta else t.detach().cpu().contiguous())
               for name, t in state.items()}
    with tempfile.TemporaryDirectory(prefix="spbench-deploy-") as folder:
        path = os.path.join(folder, "deploy.safetensors")
        save_file(tensors, path)
        return os.path.getsize(path)


def deploy_figures(built: "Built", plain: torch.nn.Module) -> tuple[torch.nn.Module, dict[str, int]]:
    """The deployed model of ``built`` (its model changed in place) and its device-free figures:
    ``deploy_bytes`` (saved ``deploy_state``, taken before the merge) and
    ``params_deploy_extra`` (parameters beyond the backbone's: 0 for a merged adapter)."""
    size = deploy_bytes(built.method.deploy_state(built.model))
    deployed = built.method.deployable(built.model)
    extra = count_params(deployed)["params_total"] - count_params(plain)["params_total"]
    return deployed, {"deploy_bytes": size, "params_deploy_extra": extra}


def _forward(built: "Built", model: torch.nn.Module, batch: dict[str, torch.Tensor],
             device_type: str) -> Callable[[], torch.Tensor]:
    hooks = ChainHooks(autocast=autocast_for(built.case, device_type))

    def run() -> torch.Tensor:
        with torch.no_grad(), hooks.phase("forward"):
            return built.objective.logits(model, batch)

    return run


def predict_deployed(built: "Built", plain: torch.nn.Module | None = None) -> dict[str, Any]:
    """Predicted figures of the deployed model of ``built`` (built on the meta device, with its
    backbone copy, or ``plain`` given): the deploy figures, its predicted no-grad forward peak
    and the ratio to the backbone's."""
    import dataclasses

    from spbench.measure.predict import _fake_batch, fake_mode, predict_inference

    plain = built.plain if plain is None else plain
    if plain is None:
        raise ValueError("predict_deployed needs the backbone's copy: build(case, keep_backbone_copy=True)")
    deployed, metrics = deploy_figures(built, plain)
    mode = fake_mode()
    built = dataclasses.replace(built, batch=_fake_batch(built.batch, mode))
    floor = predict_inference(built, plain, mode)
    peak = predict_inference(built, deployed, mode)
    metrics["predicted_deploy_inference_peak_bytes"] = peak
    metrics["predicted_inference_overhead"] = peak / floor
    return metrics


def forward_peak(forward: Callable[[], Any], model: torch.nn.Module, inputs: list[torch.Tensor],
                 device: str) -> int:
    """Peak bytes of one no-grad forward of ``model`` (already on ``device``, warmed up).

    CUDA: ``max_memory_allocated`` above what was allocated before the model was moved
    there (:func:`measure_inference` moves it); CPU: the tracker's peak over the model's
    weights, ``inputs`` and what the forward allocates.
    """
    if torch.device(device).type != "cuda":
        return int(tracked_peak(forward, model, inputs)["peak_bytes"])
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    with no_gc():
        forward()
        torch.cuda.synchronize()
    return int(torch.cuda.max_memory_allocated())


@contextlib.contextmanager
def _on(model: torch.nn.Module, device: str) -> Any:
    """``model`` on ``device`` within, back on the CPU after (one model on a GPU at a time)."""
    model.to(device)
    try:
        yield model
    finally:
        if torch.device(device).type == "cuda":
            model.to("cpu")
            gc.collect()
            torch.cuda.empty_cache()


def _peak_on(built: "Built", model: torch.nn.Module, device: str) -> int:
    dev_type = torch.device(device).type
    if dev_type == "cuda":
        gc.collect()
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        before = int(torch.cuda.memory_allocated())
    else:
        before = 0
    batch = {k: v.to(device) for k, v in built.batch.items()}
    with _on(model, device):
        forward = _forward(built, model, batch, dev_type)
        forward()  # warm-up: lazy initialisation and kernel choice are not the forward's peak
        synchronize(device)
        peak = forward_peak(forward, model, list(batch.values()), device) - before
    del batch
    return peak


def alternating_times(runs: list[Callable[[], Any]], device: str, rounds: int) -> list[float]:
    """Median seconds of each of ``runs`` (synchronised), one round of each in turn after one
    untimed round of each."""
    times: list[list[float]] = [[] for _ in runs]
    for round_ in range(rounds + 1):
        for i, run in enumerate(runs):
            start = time.perf_counter()
            run()
            synchronize(device)
            if round_:
                times[i].append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def measure_inference(built: "Built", plain: torch.nn.Module, deployed: torch.nn.Module,
                      rounds: int = 5) -> dict[str, Any]:
    """Measured figures of ``deployed`` against ``plain`` (the untouched backbone) on
    ``built.case.device``: peak and median time of a no-grad eval forward of the case's batch,
    and the overheads (deployed / backbone) of both."""
    device = built.case.device
    deployed.eval()
    plain.eval()
    floor_peak = _peak_on(built, plain, device)
    peak = _peak_on(built, deployed, device)
    dev_type = torch.device(device).type
    batch = {k: v.to(device) for k, v in built.batch.items()}
    with _on(plain, device), _on(deployed, device):
        floor_time, time_s = alternating_times(
            [_forward(built, plain, batch, dev_type), _forward(built, deployed, batch, dev_type)], device, rounds)
    return {"inference_peak_bytes": peak, "inference_time_s": time_s,
            "inference_peak_overhead": peak / floor_peak, "inference_time_overhead": time_s / floor_time}
