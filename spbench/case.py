"""One benchmark case, end to end: build, prepare, then measure or predict one training step.

    Case(method, backbone, batch, seq_len, objective, device, dtype, overrides)
      -> backbones.load -> methods.get(name).from_overrides(...).prepare(backbone)
      -> predict(): fake-tensor step with CUDA emulated (deterministic figures, any size)
      -> measure(): the real step on the device (measured peak; a step function to time)

Every figure is for a steady-state step: a warm-up step creates the optimizer state first.
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch

from spbench import backbones, methods, objectives
from spbench.errors import InputError
from spbench.methods.base import Method, StepHooks
from spbench.objectives import Objective

DTYPES = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class Case:
    method: str
    backbone: str
    batch_size: int = 16
    seq_len: int = 128
    objective: str = "classification"
    device: str = "cpu"
    dtype: str = "float32"  # "bfloat16": autocast of the forward, weights stay float32
    overrides: tuple[tuple[str, str], ...] = ()

    @property
    def id(self) -> str:
        parts = [self.method, self.backbone, f"b{self.batch_size}", f"s{self.seq_len}"]
        if self.objective != "classification":
            parts.append(self.objective)
        if self.dtype != "float32":
            parts.append({"bfloat16": "bf16", "float16": "fp16"}.get(self.dtype, self.dtype))
        parts += [f"{k}={v}" for k, v in self.overrides]
        return "-".join(parts)

    def validate(self) -> None:
        methods.get(self.method)  # raises with did-you-mean
        backbones.resolve(self.backbone)
        objectives.get(self.objective)
        if self.batch_size < 1 or self.seq_len < 2:
            raise InputError(f"impossible shape: batch size {self.batch_size}, sequence length {self.seq_len}")
        if self.dtype not in DTYPES:
            raise InputError(f"unknown dtype {self.dtype!r}; choose from {', '.join(DTYPES)}")
        methods.get(self.method).from_overrides(dict(self.overrides))


@dataclass
class Built:
    case: Case
    method: Method
    objective: Objective
    backbone: backbones.Backbone
    model: torch.nn.Module
    batch: dict[str, torch.Tensor]
    notes: dict[str, Any] = field(default_factory=dict)


class ChainHooks(StepHooks):
    """Several StepHooks in one, plus autocast around the forward phase when asked."""

    def __init__(self, *hooks: StepHooks, autocast: tuple[str, torch.dtype] | None = None) -> None:
        self.hooks = hooks
        self.autocast = autocast

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        with contextlib.ExitStack() as stack:
            if name == "forward" and self.autocast is not None:
                stack.enter_context(torch.autocast(self.autocast[0], dtype=self.autocast[1]))
            for hook in self.hooks:
                stack.enter_context(hook.phase(name))
            yield


def autocast_for(case: Case, device_type: str) -> tuple[str, torch.dtype] | None:
    dtype = DTYPES[case.dtype]
    return None if dtype is None else (device_type, dtype)


def build(case: Case, keep_backbone_copy: bool = False,
          on_device: bool = False) -> tuple[Built, torch.nn.Module | None]:
    """Load the backbone and prepare the method, on the CPU (or on ``case.device`` with
    ``on_device``); optionally keep an untouched copy of the backbone (the no-grad floor)."""
    case.validate()
    method = methods.get(case.method).from_overrides(dict(case.overrides))
    objective = objectives.get(case.objective)
    bb = backbones.load(case.backbone, head=objective.head, device=case.device if on_device else "cpu")
    plain = copy.deepcopy(bb.model) if keep_backbone_copy else None
    batch = objective.synthetic_batch(bb, case.batch_size, case.seq_len)
    if on_device:
        batch = {k: v.to(case.device) for k, v in batch.items()}
    # Modules and tensors a method creates (side networks, index tensors) land on the
    # backbone's device.
    with torch.device(case.device if on_device else "cpu"):
        model = method.prepare(bb)
    model.train()
    notes = dict(objective.notes(bb))
    return Built(case, method, objective, bb, model, batch, notes), plain


def identity(built: Built) -> dict[str, Any]:
    case = built.case
    return {
        "method": case.method,
        "method_config": built.method.config(),
        "backbone": case.backbone,
        "objective": case.objective,
        "batch_size": case.batch_size,
        "seq_len": case.seq_len,
        "dtype": case.dtype,
    }


def step_fn(built: Built, optimizer: torch.optim.Optimizer, hooks: StepHooks) -> Callable[[], torch.Tensor]:
    return lambda: built.method.train_step(built.model, built.batch, optimizer, built.objective, hooks)
