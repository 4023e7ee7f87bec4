"""(IA)^3: learned vectors that rescale keys, values and the FFN's inner activation, via peft.

Liu et al. 2022, "Few-Shot Parameter-Efficient Fine-Tuning is Better and Cheaper than
In-Context Learning" (NeurIPS; arXiv:2205.05638); repository r-three/t-few; peft's
``IA3Config`` / ``IA3Model``. In every layer, with frozen W:

    k = l_k * (W_k x)        v = l_v * (W_v x)        ffn = W_2 (l_ff * act(W_1 x))

l_k, l_v (size d) and l_ff (size d_ffn) start at ones, so the model starts unchanged. Trained:
those vectors and the classification head. Backward goes through every frozen weight (the
vectors of lower layers need dL/dx from above), so activations are kept as in full FT.

Targets are the paper's: key, value and the FFN's second Linear (its input is scaled). peft's
own table for BERT/RoBERTa names ``output.dense``, which also matches the *attention* output
projection and would rescale its input too; we name the FFN one alone (a regex built
from the family's anatomy, :func:`targets`). DistilBERT, which peft's table lacks: k_lin, v_lin,
ffn.lin2.

Paper defaults: (IA)^3 vectors init 1, Adafactor lr 3e-3, batch 8, 1,000 steps (T-Few, T0-3B).
Deviations: AdamW instead of Adafactor (lr kept at 3e-3); no T-Few extra losses
(unlikelihood, length normalisation); the head is trained only for the classification
objective, as in ``lora``. Deployed unmerged (the vectors kept beside the frozen weights, and
peft's frozen copy of the head with them): peft 0.21's ``merge_and_unload`` fails on a head
module without a weight of its own (BERT's pooler).

    spbench estimate --method ia3 --backbone roberta-large --batch-size 16 --seq-len 128
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from spbench import anatomy
from spbench.anatomy import head_module_names
from spbench.methods.base import Method, register_method

if TYPE_CHECKING:
    from torch import nn

    from spbench.backbones import Backbone


def targets(model: "nn.Module") -> tuple[str, str]:
    """(target regex, feed-forward regex) for peft's full-name match: every layer's key, value and
    FFN output Linear, as the family's anatomy places them."""
    found = anatomy.of(model)
    attn = found.self_attention
    layer = rf".*\.{re.escape(found.layers)}\.\d+\."
    ffn_out = re.escape(found.ffn_out)
    kv = "|".join(re.escape(f"{attn}.{name}") for name in (found.key, found.value))
    return rf"{layer}({kv}|{ffn_out})$", rf"{layer}{ffn_out}$"


@register_method("ia3")
@dataclass(frozen=True)
class IA3(Method):
    """peft (IA)^3 on key, value and the FFN output Linear; head trained; AdamW at 3e-3."""

    summary = "(IA)^3 via peft: rescaling vectors on keys, values, FFN + head"
    lr: float = 3e-3
    supports_grad_checkpointing = True

    def prepare(self, backbone: "Backbone") -> "nn.Module":
        from peft import IA3Config, get_peft_model

        model = backbone.model
        target, feedforward = targets(model)
        heads = head_module_names(model) if backbone.head == "classification" else None
        config = IA3Config(target_modules=target, feedforward_modules=feedforward,
                           modules_to_save=heads or None)
        return get_peft_model(model, config)
