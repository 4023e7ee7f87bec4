"""Ladder Side-Tuning (Sung, Cho, Bansal 2022, arXiv:2206.06522) and k-LST, our extension.

LST trains a small side network of width d/r beside a frozen encoder. Each side layer reads
the matching backbone layer's output through a "ladder" (a downsampling Linear d -> d/r) and
mixes it with its own state through a gate mu = sigmoid(alpha / T) (alpha = 0 at start, so
mu = 0.5). The backbone runs under ``torch.no_grad()``: backward never enters it, so neither
its activations are kept for backward nor its weights read (``params_backward_read`` counts
the side network only). Trained: downsamplers, side layers, gates, final LayerNorm, upsampler
d/r -> d and the classification head. The math is in ``_ladder.py``.

k-LST replaces each ladder with a window of k backbone layers (k odd, centred, zero-padded at
the ends) fused by attention whose query is the side state; k=1 is LST exactly.

    spbench estimate --method lst --backbone roberta-large --batch-size 16 --seq-len 128
    spbench estimate --method klst --backbone roberta-large --set k=9

With the prompt objective (``head == "mlm"``), the upsampled states go through the backbone's
frozen MLM head; backward then reads that head's weights (it must, to reach the side network).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

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
    """Ladder side network of width d/r (r=8), pruned init, gates at 0.5; AdamW at 1e-3.

    lr: the paper used 3e-3 for T5; our side network is post-LN BERT-shaped and partly random,
    trained with AdamW, so we take 1e-3 (between LoRA's 5e-4 and the paper's 3e-3); the
    accuracy cases should confirm it.

    Fields: ``r`` reduction factor; ``gate_temperature`` T; ``layers`` backbone layer indices
    that get a side layer (empty: all; negative counts from the end); ``init`` "pruned" (the
    1/r largest-magnitude channels of the matching backbone layer) or "random"; ``dropout``
    inside the side layers and before the head; ``ladder_dropout`` on the ladder features;
    ``unfreeze_last`` backbone layers trained too (then backward enters them); ``downsampler``
    "linear" (one per ladder), "shared" (one for all) or "avgpool" (no parameters).
    """

    summary = "Ladder Side-Tuning: frozen backbone, side network of width d/r (r=8) on ladders"
    lr: float = 1e-3
    r: int = 8
    gate_temperature: float = 0.1
    layers: tuple[int, ...] = ()
    init: Literal["pruned", "random"] = "pruned"
    dropout: float = 0.1
    ladder_dropout: float = 0.0
    unfreeze_last: int = 0
    downsampler: Literal["linear", "shared", "avgpool"] = "linear"

    def side_spec(self) -> "SideSpec":
        from spbench.methods._ladder import SideSpec

        return SideSpec(r=self.r, gate_temperature=self.gate_temperature, layers=self.layers,
                        init=self.init, dropout=self.dropout, ladder_dropout=self.ladder_dropout,
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
    """k-LST: each ladder attends over a window of k backbone layers (k=3 by default).

    Fields (besides LST's): ``k`` odd window size (1 = LST); ``window_dropout`` probability of
    dropping a whole window member while training (never the centre; e.g. 0.2 for k=9);
    ``pool_all`` attends over all backbone layers instead of a window.
    """

    summary = "k-LST: LST whose ladders fuse a window of k backbone layers by attention (k=3)"
    k: int = field(default=3, metadata={"search": "1,3,6"})  # sweep space
    window_dropout: float = 0.0
    pool_all: bool = False

    def side_spec(self) -> "SideSpec":
        import dataclasses

        if self.k < 1 or self.k % 2 == 0:
            raise InputError(f"klst: k must be odd and positive, not {self.k}")
        if not 0 <= self.window_dropout < 1:
            raise InputError(f"klst: window_dropout must be in [0, 1), not {self.window_dropout}")
        return dataclasses.replace(super().side_spec(), k=self.k, window_dropout=self.window_dropout,
                                   pool_all=self.pool_all)
