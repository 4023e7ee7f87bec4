"""Side-LoRA: LoRA whose backward pass never goes through the frozen pretrained weights.

The research team's idea (seed slides, "Side-LoRA"): keep the pretrained weights as buffers;
during backprop go only through the newly inserted LoRA layers, not the pretrained weights.
Here every frozen Linear inside the transformer blocks computes from a *detached* input,

    y = W stop_grad(x) + b + (alpha / r) B A x,

so autograd never forms dL/dx = W^T dL/dy for a frozen W: the frozen weights are neither read
by backward nor is their input kept for it. The gradient reaching an earlier layer flows only
through the LoRA branches (B A), the residual connections and the LayerNorms, so an adapter is
needed on *every* Linear the gradient must cross: by default (``targets=blocks``) query, key,
value, attention output, FFN in and FFN out of every block (found from the model's modules,
``lora.block_linears``). B starts at zero, so the adapters before a block's output projection
get a zero gradient in the first step and a nonzero one from the second step on. The task head
(and BERT's pooler, which feeds it) trains in full, as in ``lora``.

``scope="all"`` (default) detaches the input of every frozen Linear inside the blocks;
``scope="targets"`` only that of the LoRA-wrapped base layers (with ``targets=blocks`` both are
the same set). Linears outside the blocks are never detached: with the prompt objective the
frozen masked-LM head is the gradient's only way into the encoder (backward then reads it).
``--set targets=qv`` gives the q/v-only configuration: with scope "all" the frozen attention
output projection then cuts every path, so only the head trains; ``params_with_grad`` shows it
and every report warns about it.

    spbench estimate --method side_lora --backbone distilbert-base --batch-size 16 --seq-len 128
    spbench estimate --method lora_blocks --backbone distilbert-base    # same adapters, plain LoRA

Reference: the team's code, github.com/matoototo/k-LST (``code/configs/side-lora.yaml``,
``code/models/lora.py`` with ``buffer_original: True``): rank 4, scale 1/r, A ~ N(0, 0.01^2),
B = 0, on q_lin|k_lin|v_lin|out_lin|lin1|lin2 (RoBERTa: query|key|value|dense), trained:
adapters, classifier (DistilBERT's pre_classifier too) and every LayerNorm; AdamW lr 6e-5,
weight decay 0.01, linear decay with 6% warmup, 5 epochs, batch 16. Deviations:
- The gradient path. That code computes ``F.linear(x, W + B A / r)`` with W a buffer, whose
  backward still multiplies by the merged weight (dL/dx = (W + B A / r)^T dL/dy) and forms the
  full d_out x d_in weight gradient before reducing it to A and B: W is read by backward and
  the backward FLOPs stay LoRA's. The slides' stated idea (backprop only through the LoRA
  layers) is what is implemented here; the team's own figures (no memory saving, 11% less
  run time than LoRA) fit their code, not the idea.
- peft's LoRA (separate B A branch, r 8, alpha 16, A Kaiming-uniform, no dropout) with
  ``lora``'s hyperparameters (lr 5e-4, weight decay 0.1), so ``lora_blocks`` is a like-for-like
  baseline; the LayerNorms stay frozen (the team trained them), as in ``lora``.
- The pooler of BERT-family models trains with the head (the team ran DistilBERT and RoBERTa,
  whose classifiers have no pooler).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from spbench.errors import InputError
from spbench.methods.base import register_method
from spbench.methods.lora import LoRA, block_lists

if TYPE_CHECKING:
    from torch import nn

    from spbench.backbones import Backbone


def _detach_input(module: "nn.Module", args: tuple[Any, ...]) -> tuple[Any, ...]:
    return (args[0].detach(), *args[1:])


def frozen_linears(model: "nn.Module", scope: str) -> list[tuple[str, "nn.Module"]]:
    """The frozen Linear layers whose input Side-LoRA detaches: inside the transformer blocks
    (scope "all"), or only the LoRA-wrapped base layers (scope "targets")."""
    from peft.tuners.lora import LoraLayer
    from torch import nn

    if scope == "targets":
        return [(f"{name}.base_layer", m.base_layer) for name, m in model.named_modules()
                if isinstance(m, LoraLayer)]
    blocks = tuple(f"{name}." for name in block_lists(model))
    return [(name, m) for name, m in model.named_modules()
            if isinstance(m, nn.Linear) and not m.weight.requires_grad and blocks and name.startswith(blocks)]


@register_method("side_lora")
@dataclass(frozen=True)
class SideLoRA(LoRA):
    """LoRA on every block Linear whose frozen base layers see detached inputs.

    Fields (besides LoRA's; ``targets`` defaults to "blocks"): ``scope`` "all" | "targets".
    """

    summary = "LoRA on every block Linear; backward skips the frozen weights (detached inputs)"
    targets: tuple[str, ...] = ("blocks",)
    scope: Literal["all", "targets"] = "all"

    def prepare(self, backbone: "Backbone") -> "nn.Module":
        if self.scope not in ("all", "targets"):
            raise InputError(f"side_lora scope must be 'all' or 'targets', not {self.scope!r}")
        model = super().prepare(backbone)
        for _, linear in frozen_linears(model, self.scope):
            linear.register_forward_pre_hook(_detach_input)
        return model
