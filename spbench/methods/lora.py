"""LoRA (Hu et al. 2021, arXiv:2106.09685) through ``peft``.

A frozen Linear W gets a trainable low-rank update: h = W x + (alpha / r) * B A dropout(x),
with A (r x d_in) random and B (d_out x r) zero at start. Trained: the adapters of the target
modules (query and value by default, resolved per architecture from peft's own table) and the
task head. The backward pass still goes through every frozen W to reach earlier adapters.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

from spbench.errors import InputError
from spbench.methods.base import Method, head_module_names, register_method

if TYPE_CHECKING:
    from torch import nn

    from spbench.backbones import Backbone

# Architectures peft's table does not cover.
_EXTRA_TARGETS = {"distilbert": ["q_lin", "v_lin"]}


def default_targets(model_type: str) -> list[str]:
    from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as PEFT_TARGETS

    targets = PEFT_TARGETS.get(model_type) or _EXTRA_TARGETS.get(model_type)
    if not targets:
        raise InputError(
            f"no default LoRA targets for model type {model_type!r}; pass them, e.g. --set targets=query,value"
        )
    return list(targets)


@register_method("lora")
@dataclass(frozen=True)
class LoRA(Method):
    """peft LoRA, r=8, alpha=16, dropout 0.1 on query/value; head trained; lr 5e-4."""

    summary = "LoRA adapters via peft (r=8, alpha=16, query/value) + head"
    lr: float = 5e-4
    r: int = dataclasses.field(default=8, metadata={"search": "4,8,16"})  # sweep space
    alpha: int = 16
    dropout: float = 0.1
    targets: tuple[str, ...] = ()  # empty: resolved per architecture
    train_head: bool = True
    supports_grad_checkpointing = True

    def lora_config(self, model: "nn.Module") -> object:
        from peft import LoraConfig

        return LoraConfig(
            r=self.r,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules=list(self.targets) or default_targets(model.config.model_type),
            modules_to_save=head_module_names(model) if self.train_head else None,
        )

    def prepare(self, backbone: "Backbone") -> "nn.Module":
        from peft import get_peft_model

        model = backbone.model
        # Only a classification head is trained; the prompt objective's MLM head stays frozen.
        method = dataclasses.replace(self, train_head=self.train_head and backbone.head == "classification")
        return get_peft_model(model, method.lora_config(model))
