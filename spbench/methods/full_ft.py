"""Full fine-tuning: every parameter is trained (the baseline every method is compared with)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from spbench.methods.base import Method, register_method, set_trainable

if TYPE_CHECKING:
    from torch import nn

    from spbench.backbones import Backbone


@register_method("full_ft")
@dataclass(frozen=True)
class FullFT(Method):
    """Every parameter trainable; AdamW at 2e-5 (the usual BERT/RoBERTa fine-tuning rate)."""

    summary = "full fine-tuning: every parameter trained"
    lr: float = 2e-5
    supports_grad_checkpointing = True

    def prepare(self, backbone: "Backbone") -> "nn.Module":
        model = backbone.model
        set_trainable(model, lambda name: True)
        return model
