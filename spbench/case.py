"""One benchmark case, end to end: build, prepare, then measure or predict one training step.

    Case(method, backbone, batch, seq_len, objective, device, dtype, grad_checkpointing, overrides)
      -> Result.of(case, ...)  (spbench.result: its fields are the identity of every result)
      -> backbones.load -> methods.get(name).from_overrides(...).prepare(backbone)
      -> predict(): fake-tensor step with CUDA emulated (deterministic figures, any size)
      -> measure(): the real step on the device (measured peak; a step function to time)

Every figure is for a steady-state step: a warm-up step creates the optimizer state first.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from spbench.errors import InputError

if TYPE_CHECKING:
    import torch

    from spbench import backbones
    from spbench.methods.base import Method
    from spbench.objectives import Objective

# float32; autocast of the forward to a half type (the weights stay float32); or the weights
# themselves in a half type, no autocast (only where a method declares it sound).
AUTOCAST_DTYPES = ("bfloat16", "float16")
WEIGHT_DTYPES = {"bf16-weights": "bfloat16", "fp16-weights": "float16"}
DTYPES = ("float32", *AUTOCAST_DTYPES, *WEIGHT_DTYPES)


@dataclass(frozen=True)
class Case:
    """What runs. Every field but ``device`` and ``overrides`` is part of a result's identity
    (``spbench.result``): a field added here reaches the JSON, the report's rows and tables,
    ``spbench check``'s case keys and the case id without another edit. ``overrides`` reach
    results typed, as ``method_config``; ``device`` is where the step runs (a result says
    where it was measured, or that it was predicted)."""

    method: str
    backbone: str
    batch_size: int = 16
    seq_len: int = 128
    objective: str = "classification"
    device: str = "cpu"
    dtype: str = "float32"  # "bfloat16": autocast of the forward; "bf16-weights": half weights
    grad_checkpointing: bool = False  # activation checkpointing of the backbone's layers
    overrides: tuple[tuple[str, str], ...] = ()

    @property
    def id(self) -> str:
        """``lora-distilbert-base-b16-s128`` (+ every field not at its default, then overrides)."""
        return "-".join([self.method, self.backbone, f"b{self.batch_size}", f"s{self.seq_len}", *self.settings()])

    def settings(self, short: bool = True) -> list[str]:
        """What the case sets beyond method, backbone and shape, in field order: a non-default
        objective, dtype (``short``: bf16 / fp16) and ``gc``, then ``key=value`` for any other
        non-default field and for each override."""
        parts = []
        if self.objective != "classification":
            parts.append(self.objective)
        if self.dtype != "float32":
            parts.append({"bfloat16": "bf16", "float16": "fp16"}.get(self.dtype, self.dtype) if short else self.dtype)
        if self.grad_checkpointing:
            parts.append("gc")
        shown = {"method", "backbone", "batch_size", "seq_len", "objective", "dtype", "grad_checkpointing",
                 "device", "overrides"}
        parts += [f"{f.name}={getattr(self, f.name)}" for f in dataclasses.fields(self)
                  if f.name not in shown and getattr(self, f.name) != f.default]
        parts += [f"{k}={v}" for k, v in self.overrides]
        return parts

    @property
    def autocast_dtype(self) -> str | None:
        """The torch dtype name the forward autocasts to, or None."""
        return self.dtype if self.dtype in AUTOCAST_DTYPES else None

    @property
    def weights_dtype(self) -> str | None:
        """The torch dtype name the weights are cast to (``*-weights``), or None."""
        return WEIGHT_DTYPES.get(self.dtype)

    @property
    def levers(self) -> tuple[str, ...]:
        """The levers this case pulls, as a report labels them beside the method (``full_ft+gc``)."""
        return (*(("gc",) if self.grad_checkpointing else ()), *((self.dtype,) if self.weights_dtype else ()))

    def without_levers(self) -> "Case":
        """The same case without its levers: the row a lever is compared against."""
        return dataclasses.replace(self, grad_checkpointing=False,
                                   dtype="float32" if self.weights_dtype else self.dtype)

    def method_config(self) -> dict[str, Any]:
        """The method's hyperparameters with the overrides applied (``method_config`` in results)."""
        from spbench import methods

        return methods.get(self.method).from_overrides(dict(self.overrides)).config()

    def validate(self) -> None:
        from spbench import backbones, methods, objectives

        methods.get(self.method)  # raises with did-you-mean
        backbones.resolve(self.backbone)
        objectives.get(self.objective)
        if self.batch_size < 1 or self.seq_len < 2:
            raise InputError(f"impossible shape: batch size {self.batch_size}, sequence length {self.seq_len}")
        if self.dtype not in DTYPES:
            raise InputError(f"unknown dtype {self.dtype!r}; choose from {', '.join(DTYPES)}")
        limit = backbones.max_seq_len(self.backbone)  # also: the backbone's config can be read
        if limit is not None and self.seq_len > limit:
            raise InputError(f"sequence length {self.seq_len} exceeds the backbone's {limit} positions "
                             f"({self.backbone})")
        cls = methods.get(self.method)
        if self.grad_checkpointing and not cls.supports_grad_checkpointing:
            raise InputError(f"gradient checkpointing does not apply to {self.method}: its backward does not "
                             "go through the backbone's layers (it has no backward there, or none at all)")
        if self.weights_dtype and not cls.supports_half_weights:
            raise InputError(f"{self.dtype} is not sound for {self.method}: it would train half-precision "
                             "weights with a backprop optimizer; use --dtype bfloat16 (autocast) instead")
        cls.from_overrides(dict(self.overrides))


@dataclass(frozen=True)
class Built:
    """A built case: what :func:`build` made, never reassigned afterwards (a step that needs
    another batch or case makes a new one with ``dataclasses.replace``). The model and the
    batch's tensors are the case's own: a prediction turns them fake, a measurement moves them
    to the device."""

    case: Case
    method: Method
    objective: Objective
    backbone: backbones.Backbone
    model: torch.nn.Module
    batch: dict[str, torch.Tensor]
    notes: dict[str, Any] = field(default_factory=dict)
    plain: torch.nn.Module | None = None  # an untouched copy of the backbone (``keep_backbone_copy``)


def build(case: Case, keep_backbone_copy: bool = False, on_device: bool = False, meta: bool = False) -> Built:
    """Load the backbone and prepare the method, on the CPU (or on ``case.device`` with
    ``on_device``); optionally keep an untouched copy of the backbone (``Built.plain``: the
    no-grad floor).

    ``meta``: build on the meta device instead: every parameter and buffer has its shape,
    dtype and ties but no data, and nothing is initialised (no random weights drawn, no copy
    of them made), and the synthetic batch is built there too (its shapes only, so any batch
    size costs nothing). That is all the fake-tensor prediction reads.
    """
    import torch

    from spbench import backbones, methods, objectives

    case.validate()
    method = methods.get(case.method).from_overrides(dict(case.overrides))
    objective = objectives.get(case.objective)
    device = "meta" if meta else case.device if on_device else "cpu"
    bb = backbones.load(case.backbone, head=objective.head, device=device)
    plain = copy.deepcopy(bb.model) if keep_backbone_copy else None
    with torch.device("meta") if meta else contextlib.nullcontext():
        batch = objective.synthetic_batch(bb, case.batch_size, case.seq_len)
    if on_device and not meta:
        batch = {k: v.to(case.device) for k, v in batch.items()}
    # Modules and tensors a method creates (side networks, index tensors) land on the
    # backbone's device.
    with torch.device(device):
        model = method.prepare(bb)
    if case.grad_checkpointing:
        method.enable_grad_checkpointing(model)
    if case.weights_dtype:
        method.to_half_weights(model, getattr(torch, case.weights_dtype))
        if plain is not None:  # the floor: inference with the same half-precision weights
            plain.to(getattr(torch, case.weights_dtype))
    model.train()
    notes = {**objective.notes(bb), **method.notes(bb)}
    return Built(case, method, objective, bb, model, batch, notes, plain)
