"""BitFit: train only the bias terms (and the task head) of a frozen encoder.

Ben Zaken, Ravfogel, Goldberg 2022, "BitFit: Simple Parameter-efficient Fine-tuning for
Transformer-based Masked Language-models" (ACL; arXiv:2106.10199); repository
benzakenelad/BitFit (``run_glue.py``, bias terms "all"). Every parameter whose name ends in
``bias`` is trained (query/key/value, attention output, FFN in/out, both LayerNorms, embedding
LayerNorm), plus the classification head; every weight matrix stays frozen.

Backward still goes through every frozen weight (a bias gradient at layer i needs dL/dx from
all layers above it), so the activations kept for backward are those of full fine-tuning; the
saving is in gradients and optimizer state (about 0.1% of the parameters).

Paper / repository defaults: AdamW, lr 1e-3 (grid {1e-4, 4e-4, 7e-4, 1e-3}), batch 8,
16 epochs, max length 128. Deviations: none in what is trained; the head is trained only for
the classification objective (the prompt objective's MLM head keeps its weights, as in
``lora``; its biases train with the rest).

    spbench estimate --method bitfit --backbone roberta-large --batch-size 16 --seq-len 128
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from spbench.anatomy import head_module_names
from spbench.methods.base import Method, register_method, set_trainable

if TYPE_CHECKING:
    from torch import nn

    from spbench.backbones import Backbone


@register_method("bitfit")
@dataclass(frozen=True)
class BitFit(Method):
    """Bias terms + classification head trained; AdamW at 1e-3 (the paper's default)."""

    summary = "BitFit: bias terms + head trained, weights frozen"
    lr: float = 1e-3
    supports_grad_checkpointing = True

    def prepare(self, backbone: "Backbone") -> "nn.Module":
        model = backbone.model
        heads = head_module_names(model) if backbone.head == "classification" else []
        prefixes = tuple(f"{h}." for h in heads)
        set_trainable(model, lambda name: name.endswith("bias") or name.startswith(prefixes))
        return model
