"""Ladder Side-Tuning (LST) and k-LST, the seed team's extension.

LST: Sung, Cho, Bansal, "LST: Ladder Side-Tuning for Parameter and Memory Efficient Transfer
Learning", NeurIPS 2022, arXiv:2206.06522; github ylsung/Ladder-Side-Tuning (``seq2seq/``: T5
``scripts/ladder_side_tuning_base.sh``, BART encoder ``scripts/ladder_side_tuning_bart.sh``,
``third_party/models/bart/modeling_bart_encoder.py``, ``training_args.py``).
A side network of width d/r beside a frozen encoder: each side layer reads the matching backbone
layer's output through a ladder (a downsampling Linear d -> d/r) mixed with its own state by a
gate mu = sigmoid(alpha / T) (alpha = 0 at start: mu = 0.5). The backbone runs under
``torch.no_grad()``: backward never enters it (``params_backward_read`` counts the side network
only). Trained: downsamplers, side layers, gates, final LayerNorm, upsampler d/r -> d, head.
The math and the side network's own deviations (pruned-init importance, backbone eval mode)
are in ``_ladder.py``.

As the paper's scripts: r=8 (``task_reduction_factor``), T=0.1 and alpha=0 (``gate_T``,
``gate_alpha``), learnable gates (``use_gate learnable``), biased down/upsamplers
(``add_bias_sampling``), side layers at the backbone's dropout (0.1), AdamW at lr 3e-3 with no
weight decay (both T5-base and the BART encoder on SST-2), pruned init (``fisher-v2``). Layer
dropping (``encoder_side_layers``): the T5-base runs (Table 1) keep side layers on
1,2,3,5,6,7,9,10,11 of 12 (``--set drop_every=4``), T5-large on the odd layers
(``drop_every=2``); ``--set layers=...`` gives any list. The default is every layer, as the
paper's encoder-only classification runs (BART encoder, Table 2) have.

Deviations from the paper: the head is a new Linear on the first token (CLS / <s>), with the
side dropout before it; the paper's BART encoder head is BART's classification head (dense,
tanh, out_proj) on the last </s>, its T5 runs generate the label word. A final LayerNorm
follows the last side layer (the paper's T5 side network has one; its BART encoder side
network has none). Warmup and decay follow spbench's training loop (the paper: 500 warmup
steps, linear decay). Pruned init by weight magnitude, not Fisher information (``_ladder.py``).

k-LST (the team: github matoototo/k-LST ``code/adapters.py``, ``code/configs/9-lst.yaml``; their
report's "k-LST" section and slides): each side layer's input is cross-attention from the side
state over all positions of a window of k backbone layers (k odd, centred, zero members beyond
the ends) with a block position embedding on keys and values and no gate; window dropout drops
whole members. Defaults as ``9-lst.yaml`` and the report: k=9, window dropout 0.2, r=8, AdamW
lr 2e-4 with weight decay 0.01 (linear decay; warmup is spbench's 6% of the steps where
``9-lst.yaml`` warms up for 12%). ``--set fusion=position`` is
spbench's first k-LST (per-position softmax over the k members, LST gate kept). The fusion's
math and its deviations are in ``_fusion.py``. Deviations of the side network from the
team's: the side layers, init, final LayerNorm and head are LST's above (theirs: PyTorch
``nn.TransformerEncoderLayer(d/r, 4 heads, ReLU)`` with random init, no padding mask, no final
LayerNorm, and the backbone's own classifier module on the first token), so that lst vs klst
isolates the ladder; side Linears are initialised N(0, 0.02) where theirs keep PyTorch's
defaults (the fusion keeps PyTorch's defaults, as theirs).

    spbench estimate --method lst --backbone roberta-large --batch-size 16 --seq-len 128
    spbench estimate --method klst --backbone roberta-large --batch-size 16 --seq-len 128
    spbench estimate --method klst --backbone roberta-large --set fusion=position --set k=3

With the prompt objective (``head == "mlm"``), the upsampled states go through the backbone's
frozen MLM head; backward then reads that head's weights (it must, to reach the side network).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from spbench.domains import Domain, at_least, fraction, hparam, odd, positive
from spbench.errors import InputError
from spbench.methods.base import Method, register_method

if TYPE_CHECKING:
    import torch
    from torch import nn

    from spbench.backbones import Backbone
    from spbench.methods._ladder import SideSpec


@register_method("lst")
@dataclass(frozen=True)
class LST(Method):
    """Ladder side network of width d/r (r=8), pruned init, gates at 0.5; AdamW at 3e-3 (the paper's).

    Fields: ``r`` reduction factor; ``gate_temperature`` T; ``layers`` backbone layer indices
    that get a side layer (empty: all; negative counts from the end); ``drop_every`` m: side
    layers only on backbone layers l with l % m != 0 (4: the paper's T5-base layer dropping);
    ``init`` "pruned" (the 1/r largest-magnitude channels of the matching backbone layer) or
    "random"; ``dropout`` inside the side layers and before the head; ``ladder_dropout`` on the
    ladder features (element-wise, rescaled: spbench's; the team's idea of dropping ladder
    inputs is k-LST's ``window_dropout``, whole members; 0 in both references); ``unfreeze_last`` backbone layers trained too (then backward enters them); ``downsampler``
    "linear" (one per ladder), "shared" (one for all) or "avgpool" (no parameters).
    """

    summary = "Ladder Side-Tuning: frozen backbone, side network of width d/r (r=8) on ladders"
    lr: float = 3e-3
    r: int = hparam(8, at_least(1))
    gate_temperature: float = hparam(0.1, positive())
    layers: tuple[int, ...] = ()
    drop_every: int = hparam(0, Domain(low=2, zero=True))  # 0: keep every layer
    init: Literal["pruned", "random"] = "pruned"
    dropout: float = hparam(0.1, fraction())
    ladder_dropout: float = hparam(0.0, fraction())
    unfreeze_last: int = hparam(0, at_least(0))
    downsampler: Literal["linear", "shared", "avgpool"] = "linear"

    def side_spec(self) -> "SideSpec":
        from spbench.methods._ladder import SideSpec

        return SideSpec(r=self.r, gate_temperature=self.gate_temperature, layers=self.layers,
                        drop_every=self.drop_every, init=self.init, dropout=self.dropout, ladder_dropout=self.ladder_dropout,
                        unfreeze_last=self.unfreeze_last, downsampler=self.downsampler)

    supports_half_weights = True

    def to_half_weights(self, model: "nn.Module", dtype: "torch.dtype") -> None:
        """The frozen backbone in ``dtype`` (it runs under no_grad, no optimizer touches it); the
        trained side network stays float32 and reads the ladders through ``downsample``."""
        if self.unfreeze_last:
            raise InputError(f"{self.name}: half-precision weights with unfreeze_last={self.unfreeze_last} "
                             "would train half-precision backbone layers")
        model.backbone.to(dtype)

    def prepare(self, backbone: "Backbone") -> "nn.Module":
        from spbench.methods._ladder import LadderSideModel

        if self.gate_temperature <= 0:
            raise InputError(f"{self.name}: gate_temperature must be positive, not {self.gate_temperature}")
        return LadderSideModel(backbone.model, backbone.head, self.side_spec())


@register_method("klst")
@dataclass(frozen=True)
class KLST(LST):
    """k-LST: each side layer cross-attends over a window of k=9 backbone layers; AdamW 2e-4, wd 0.01.

    Fields (besides LST's): ``k`` odd window size; ``fusion`` "attention" (the team's: one-head
    MultiheadAttention over the k*S window positions, block position embedding, no gate; k=1:
    attention over the centre layer, the team's LST baseline) or "position" (per-position
    softmax over the k members with LST's gate; k=1 is LST exactly); ``window_dropout``
    probability of dropping a whole window member while training (attention: one draw per
    member for the whole batch, any member; position: per example, never the centre);
    ``pool_all`` attends over all backbone layers instead of a window.
    """

    summary = "k-LST: LST whose ladders attend over a window of k backbone layers (k=9, the team's)"
    lr: float = 2e-4
    weight_decay: float = 0.01
    k: int = hparam(9, odd(1), search="3,5,9")
    fusion: Literal["attention", "position"] = "attention"
    window_dropout: float = hparam(0.2, fraction())
    pool_all: bool = False

    def side_spec(self) -> "SideSpec":
        import dataclasses

        if self.k < 1 or self.k % 2 == 0:
            raise InputError(f"klst: k must be odd and positive, not {self.k}")
        if not 0 <= self.window_dropout < 1:
            raise InputError(f"klst: window_dropout must be in [0, 1), not {self.window_dropout}")
        return dataclasses.replace(super().side_spec(), k=self.k, fusion=self.fusion,
                                   window_dropout=self.window_dropout, pool_all=self.pool_all)

    def notes(self, backbone: "Backbone") -> dict[str, Any]:
        """``klst_padding`` when k exceeds the backbone's depth: every window then holds members
        that are all zeros (k=9 on a 6-layer backbone: 3 or 4 in each). Also a warning."""
        import warnings

        n = backbone_depth(backbone.model.config)
        if self.pool_all or n is None or self.k <= n:
            return {}
        half = self.k // 2
        centres = [c % n for c in self.layers] if self.layers else list(range(n))
        padding = sum(1 for c in centres for j in range(c - half, c + half + 1) if not 0 <= j < n)
        text = (f"k={self.k} exceeds the backbone's {n} layers: {padding} of {self.k * len(centres)} window "
                f"members are all-zero padding")
        warnings.warn(f"klst: {text}", stacklevel=2)
        return {"klst_padding": text}


def backbone_depth(config: Any) -> int | None:
    """Transformer layers of a backbone config (transformers maps DistilBERT's ``n_layers`` to
    ``num_hidden_layers``)."""
    value = getattr(config, "num_hidden_layers", None)
    return value if isinstance(value, int) else None
