"""Side-LoRA: LoRA whose backward pass never goes through the frozen pretrained weights.

The research team's idea (seed slides, "Side-LoRA"): keep the pretrained weights as buffers;
during backprop go only through the newly inserted LoRA layers, not the pretrained weights.
The slides' sentence and the team's code are two different optimisers, and both are here:

- ``backward="detached"`` (default, the slides' sentence): see below.
- ``backward="team"`` (the team's code, ``code/models/lora.py`` with ``buffer_original``):
  every adapted Linear computes ``F.linear(x, W + (alpha / r) B A, b)`` in one call, W frozen.
  Its gradients are exactly LoRA's (dL/dx = (W + s B A)^T dL/dy = W^T dL/dy + s A^T B^T dL/dy;
  dL/dA, dL/dB through the merged weight's gradient), so it trains as ``lora_blocks`` does.
  Its time and memory are its own: forward makes a weight-sized copy W + s B A per layer and
  keeps it for backward; backward multiplies by that copy (W's own storage is not read: the
  slides' "64% fewer parameters in the gradient computation" holds in that sense) and forms the
  full d_out x d_in weight gradient before reducing it to A and B (more backward FLOPs than
  LoRA). ``scope`` does not apply (nothing is detached).

The detached form: every frozen Linear inside the transformer blocks computes from a
*detached* input,

    y = W stop_grad(x) + b + (alpha / r) B A x,

so autograd never forms dL/dx = W^T dL/dy for a frozen W: the frozen weights are neither read
by backward nor is their input kept for it. The gradient reaching an earlier layer flows only
through the LoRA branches (B A), the residual connections and the LayerNorms, so an adapter is
needed on *every* Linear the gradient must cross: by default (``targets=blocks``) query, key,
value, attention output, FFN in and FFN out of every block (every Linear in the encoder's
layers, ``lora.block_linears``). B starts at zero, so the adapters before a block's output projection
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
- The gradient path of the default form. That code computes ``F.linear(x, W + B A / r)`` with
  W a buffer, whose backward still multiplies by the merged weight and forms the full weight
  gradient, so the gradient is LoRA's and the backward FLOPs exceed LoRA's (``backward="team"``
  reproduces it). The default implements the slides' stated idea (backprop only through the
  LoRA layers); the team's own figures (no memory saving, 11% less run time than LoRA) fit
  their code, not the idea.
- peft's LoRA (separate B A branch, r 8, alpha 16, A Kaiming-uniform, no dropout) with
  ``lora``'s hyperparameters (lr 5e-4, weight decay 0.1), so ``lora_blocks`` is a like-for-like
  baseline; the LayerNorms stay frozen (the team trained them), as in ``lora``.
- The pooler of BERT-family models trains with the head (the team ran DistilBERT and RoBERTa,
  whose classifiers have no pooler).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from spbench import anatomy
from spbench.errors import InputError
from spbench.methods.base import register_method
from spbench.methods.lora import LoRA

if TYPE_CHECKING:
    import torch
    from torch import nn

    from spbench.backbones import Backbone


def _detach_input(module: "nn.Module", args: tuple[Any, ...]) -> tuple[Any, ...]:
    return (args[0].detach(), *args[1:])


def frozen_linears(model: "nn.Module", scope: str) -> list[tuple[str, "nn.Module"]]:
    """The frozen Linear layers whose input Side-LoRA detaches: inside the encoder's layers
    (scope "all"), or only the LoRA-wrapped base layers (scope "targets")."""
    from peft.tuners.lora import LoraLayer
    from torch import nn

    if scope == "targets":
        return [(f"{name}.base_layer", m.base_layer) for name, m in model.named_modules()
                if isinstance(m, LoraLayer)]
    blocks = f"{anatomy.layers_name(model)}."
    return [(name, m) for name, m in model.named_modules()
            if isinstance(m, nn.Linear) and not m.weight.requires_grad and name.startswith(blocks)]


@register_method("side_lora")
@dataclass(frozen=True)
class SideLoRA(LoRA):
    """LoRA on every block Linear whose frozen base layers see detached inputs.

    Fields (besides LoRA's; ``targets`` defaults to "blocks"): ``backward`` "detached" (the
    slides' idea) | "team" (the team's code: one ``F.linear`` with the merged weight, LoRA's exact
    gradients); ``scope`` "all" | "targets" (detached form only).
    """

    summary = "LoRA on every block Linear; backward skips the frozen weights (detached inputs)"
    targets: tuple[str, ...] = ("blocks",)
    scope: Literal["all", "targets"] = "all"
    backward: Literal["detached", "team"] = "detached"

    def prepare(self, backbone: "Backbone") -> "nn.Module":
        if self.scope not in ("all", "targets"):
            raise InputError(f"side_lora scope must be 'all' or 'targets', not {self.scope!r}")
        if self.backward not in ("detached", "team"):
            raise InputError(f"side_lora backward must be 'detached' or 'team', not {self.backward!r}")
        model = super().prepare(backbone)
        if self.backward == "team":
            merge_in_forward(model)
            return model
        for _, linear in frozen_linears(model, self.scope):
            linear.register_forward_pre_hook(_detach_input)
        return model


def merge_in_forward(model: "nn.Module") -> None:
    """Make every peft LoRA Linear of ``model`` compute ``F.linear(x, W + s B A, b)``: the
    team's Side-LoRA (the adapters' dropout, if any, cannot apply to a merged weight)."""
    import types

    from peft.tuners.lora import Linear as LoraLinear

    for module in model.modules():
        if isinstance(module, LoraLinear):
            module.forward = types.MethodType(_merged_forward, module)


def _merged_forward(self: Any, x: "torch.Tensor", *args: Any, **kwargs: Any) -> "torch.Tensor":
    import torch.nn.functional as F

    base = self.base_layer
    weight = base.weight
    for name in self.active_adapters:
        if name in self.lora_A:
            delta = self.lora_B[name].weight @ self.lora_A[name].weight
            weight = weight + delta.to(weight.dtype) * self.scaling[name]
    return F.linear(x, weight, base.bias)


@register_method("side_lora_team")
@dataclass(frozen=True)
class SideLoRATeam(SideLoRA):
    """The research team's Side-LoRA as their code runs it: ``side_lora --set backward=team``
    (W frozen, ``F.linear(x, W + s B A)`` in one call; LoRA's exact gradients)."""

    summary = "Side-LoRA as the team's code runs it: merged weight in one F.linear, LoRA's gradients"
    backward: Literal["detached", "team"] = "team"
