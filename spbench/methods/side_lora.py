"""Side-LoRA: LoRA whose backward pass never goes through the frozen pretrained weights.

Same adapters and trainable set as ``lora``. Every frozen Linear computes its output from a
*detached* input: y = W stop_grad(x) (+ B A x for the wrapped ones). The gradient reaching an
earlier layer therefore flows only through the LoRA branches and the residual / normalisation
paths, and autograd never computes dL/dx = W^T dL/dy for a frozen W: a real saving of backward
FLOPs, and the frozen W need not be read (or kept for) backward at all.

scope="all" (default, as proposed) detaches the input of every frozen Linear of the model;
scope="targets" only that of the LoRA-wrapped base layers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from spbench.errors import InputError
from spbench.methods.base import register_method
from spbench.methods.lora import LoRA

if TYPE_CHECKING:
    from torch import nn

    from spbench.backbones import Backbone


def _detach_input(module: "nn.Module", args: tuple[Any, ...]) -> tuple[Any, ...]:
    return (args[0].detach(), *args[1:])


def frozen_linears(model: "nn.Module", scope: str) -> list[tuple[str, "nn.Module"]]:
    """The Linear layers whose input Side-LoRA detaches."""
    from peft.tuners.lora import LoraLayer
    from torch import nn

    if scope == "targets":
        return [(f"{name}.base_layer", m.base_layer) for name, m in model.named_modules()
                if isinstance(m, LoraLayer)]
    return [(name, m) for name, m in model.named_modules()
            if isinstance(m, nn.Linear) and not m.weight.requires_grad]


@register_method("side_lora")
@dataclass(frozen=True)
class SideLoRA(LoRA):
    """LoRA adapters; frozen Linears see detached inputs (scope "all" | "targets")."""

    summary = "LoRA whose backward skips frozen weights (detached frozen-Linear inputs)"
    scope: Literal["all", "targets"] = "all"

    def prepare(self, backbone: "Backbone") -> "nn.Module":
        if self.scope not in ("all", "targets"):
            raise InputError(f"side_lora scope must be 'all' or 'targets', not {self.scope!r}")
        model = super().prepare(backbone)
        for _, linear in frozen_linears(model, self.scope):
            linear.register_forward_pre_hook(_detach_input)
        return model
