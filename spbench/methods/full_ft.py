"""Full fine-tuning: every parameter is trained (the baseline every method is compared with).

Reference: RoBERTa's GLUE recipe (Liu et al. 2019, arXiv:1907.11692, appendix: AdamW, lr in
{1e-5, 2e-5, 3e-5}, batch 16 or 32, linear decay after 6% warmup, weight decay 0.1, 10
epochs), where the LoRA paper's RoBERTa FT row comes from; the research team's config
(github.com/matoototo/k-LST ``code/configs/full-fine-tuning.yaml``: lr 1e-5, weight decay 0.01,
batch 16, 20 epochs, 6% warmup). Deviations:
- lr 2e-5 (the middle of the grid, for BERT-base-sized and small models alike) and weight
  decay 0 (spbench's AdamW default); Adam betas and eps are torch's defaults.
- The budget is spbench's (``--budget``), not 10-20 epochs.

    spbench estimate --method full_ft --backbone roberta-large --batch-size 16 --seq-len 128
"""

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
    """Every parameter trainable; AdamW at 2e-5 (the middle of RoBERTa's GLUE grid)."""

    summary = "full fine-tuning: every parameter trained"
    lr: float = 2e-5
    supports_grad_checkpointing = True

    def prepare(self, backbone: "Backbone") -> "nn.Module":
        model = backbone.model
        set_trainable(model, lambda name: True)
        return model
