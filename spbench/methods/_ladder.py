"""The side network of Ladder Side-Tuning (Sung, Cho, Bansal 2022, arXiv:2206.06522; github
ylsung/Ladder-Side-Tuning) and of k-LST (the seed team's, github matoototo/k-LST).

    s_0     = down_emb(h_0)                                       (width D = d / r)
    f_i     = down_i(h_{l_i})                                     LST: the ladder of side layer i
    mu_i    = sigmoid(alpha_i / T),  alpha_i = 0 at start         (so every gate starts at 0.5)
    s_i     = side_layer_i(mu_i s_{i-1} + (1 - mu_i) f_i)
    s_i     = side_layer_i(MHA_i(s_{i-1}, window_i))              k-LST, attention fusion: no gate
    logits  = head(up(LayerNorm(s_n)))                            head: Linear on the first token,
                                                                  or the backbone's frozen MLM head

l_i is the backbone layer of side layer i: every layer, or the ``layers`` / ``drop_every`` choice
(the paper's layer dropping). k-LST's windows and fusions are in ``_fusion.py``.

The backbone runs under ``torch.no_grad()`` (unless its last layers are unfrozen), so backward
never enters it: its activations are not kept for backward and its weights are not read. It
always runs in eval mode (no dropout on the frozen features), as in the team's code, where the
backbone is not a registered submodule; the paper's trainer put the whole model, frozen
backbone included, in training mode (dropout on its activations) - a deviation.

Side layers are BERT-shaped post-LN encoder layers at width d/r: the backbone's attention-head
count (attention-head width / r), FFN width / r, GELU, dropout 0.1 (as the paper's side blocks: the backbone's
own layer class at reduced width), with the padding mask. Pruned init (default) copies the 1/r
most important channels of the matching backbone layer (:func:`prune_plan`). Deviations from
the paper's ``fisher-v2`` init: importance is the L1 magnitude of the weights, not Fisher
information (squared gradients of the task loss over 1,024 training examples: that needs
labelled data inside ``prepare``, which no benchmark case has); and kept channels are chosen per
layer for the residual stream and per attention head, where the paper's pruning chains the
choice Linear to Linear (q/k/v rows jointly, across attention heads) without a consistent residual.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from spbench import anatomy
from spbench.errors import InputError
from spbench.methods._fusion import WindowFusion


@dataclass(frozen=True)
class SideSpec:
    """What the side network looks like (built by the ``lst`` / ``klst`` methods).

    ``k=0`` means the plain LST ladder; ``k>=1`` the k-LST window ``fusion`` ("attention" or
    "position", see ``_fusion.py``). ``drop_every=m`` (with ``layers`` empty) gives side layers
    to the backbone layers l with l % m != 0 (the LST paper's layer dropping).
    """

    r: int = 8
    gate_temperature: float = 0.1
    layers: tuple[int, ...] = ()
    init: str = "pruned"
    dropout: float = 0.1
    ladder_dropout: float = 0.0
    unfreeze_last: int = 0
    downsampler: str = "linear"
    k: int = 0
    window_dropout: float = 0.0
    pool_all: bool = False
    fusion: str = "position"
    drop_every: int = 0


def side_layer_indices(n: int, layers: tuple[int, ...], drop_every: int) -> tuple[int, ...]:
    """The backbone layers (of ``n``) that get a side layer: ``layers`` (negative counts from the
    end), else every l with ``l % drop_every != 0``, else all."""
    if any(not -n <= l < n for l in layers):
        raise InputError(f"LST: layers {layers} outside the backbone's {n} layers")
    if drop_every and (layers or drop_every < 2):
        raise InputError(f"LST: drop_every={drop_every} wants 2 or more and no explicit layers")
    if layers:
        return tuple(sorted({l % n for l in layers}))
    return tuple(l for l in range(n) if not drop_every or l % drop_every)


def top_channels(importance: torch.Tensor, keep: int) -> torch.Tensor:
    """Indices of the ``keep`` largest entries along the last dim, in ascending index order
    (kept channels stay in their original order)."""
    return importance.topk(keep, dim=-1).indices.sort(dim=-1).values


def prune_plan(parts: dict[str, nn.Module], attn_heads: int, r: int) -> dict[str, torch.Tensor]:
    """Structured magnitude pruning of one layer to 1/r of its width (LST's pruned init, with
    L1 weight magnitude standing in for the paper's Fisher information).

    Returns kept indices: ``res`` (hidden channels: every weight touching the residual
    stream), ``attn`` (per attention head, its 1/r most important dims: q/k/v rows and o
    columns, so every attention head survives at 1/r width), ``ffn`` (intermediate channels).
    """
    w = {key: parts[key].weight.detach().abs() for key in ("q", "k", "v", "o", "fi", "fo")}
    d = w["q"].shape[1]
    res = w["q"].sum(0) + w["k"].sum(0) + w["v"].sum(0) + w["fi"].sum(0) + w["o"].sum(1) + w["fo"].sum(1)
    attn = w["q"].sum(1) + w["k"].sum(1) + w["v"].sum(1) + w["o"].sum(0)
    attn_dim = d // attn_heads
    kept = top_channels(attn.view(attn_heads, attn_dim), attn_dim // r)
    kept = kept + torch.arange(attn_heads).unsqueeze(1) * attn_dim
    ffn = w["fi"].sum(1) + w["fo"].sum(0)
    return {"res": top_channels(res, d // r), "attn": kept.flatten(),
            "ffn": top_channels(ffn, ffn.shape[0] // r)}


class SideLayer(nn.Module):
    """A post-LN encoder layer (BERT's shape) at side width: same attention-head count, FFN width / r.

    Attention is SDPA with a boolean padding mask (True = attend), so padded keys get no weight.
    """

    def __init__(self, width: int, attn_heads: int, ffn: int, eps: float, dropout: float) -> None:
        super().__init__()
        self.attn_heads = attn_heads
        self.query, self.key, self.value, self.out = (nn.Linear(width, width) for _ in range(4))
        self.ln1 = nn.LayerNorm(width, eps=eps)
        self.fc_in = nn.Linear(width, ffn)
        self.fc_out = nn.Linear(ffn, width)
        self.ln2 = nn.LayerNorm(width, eps=eps)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, s, width = x.shape

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, s, self.attn_heads, width // self.attn_heads).transpose(1, 2)

        attn = F.scaled_dot_product_attention(
            split(self.query(x)), split(self.key(x)), split(self.value(x)), attn_mask=mask,
            dropout_p=self.drop.p if self.training else 0.0)
        x = self.ln1(x + self.drop(self.out(attn.transpose(1, 2).reshape(b, s, width))))
        return self.ln2(x + self.drop(self.fc_out(F.gelu(self.fc_in(x)))))

    @torch.no_grad()
    def load_pruned(self, parts: dict[str, nn.Module], plan: dict[str, torch.Tensor]) -> None:
        """Copy the kept slices of a backbone layer's weights (see :func:`prune_plan`)."""
        res, attn, ffn = plan["res"], plan["attn"], plan["ffn"]
        for name, key in (("query", "q"), ("key", "k"), ("value", "v")):
            getattr(self, name).weight.copy_(parts[key].weight[attn][:, res])
            getattr(self, name).bias.copy_(parts[key].bias[attn])
        self.out.weight.copy_(parts["o"].weight[res][:, attn])
        self.out.bias.copy_(parts["o"].bias[res])
        self.fc_in.weight.copy_(parts["fi"].weight[ffn][:, res])
        self.fc_in.bias.copy_(parts["fi"].bias[ffn])
        self.fc_out.weight.copy_(parts["fo"].weight[res][:, ffn])
        self.fc_out.bias.copy_(parts["fo"].bias[res])
        for name, key in (("ln1", "ln1"), ("ln2", "ln2")):
            getattr(self, name).weight.copy_(parts[key].weight[res])
            getattr(self, name).bias.copy_(parts[key].bias[res])


class AvgPoolDown(nn.Module):
    """Parameter-free downsampler: the mean of each group of r consecutive channels."""

    def __init__(self, r: int) -> None:
        super().__init__()
        self.r = r

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h.unflatten(-1, (-1, self.r)).mean(-1)


class LadderSideModel(nn.Module):
    """Frozen backbone + side network; ``forward(input_ids, attention_mask)`` -> ``.logits``.

    Args:
        model: the backbone with its head (``*ForSequenceClassification`` or ``*ForMaskedLM``).
        head: "classification" (a new Linear on the first token) or "mlm" (vocabulary
            scores per position from the backbone's frozen MLM head).
    """

    def __init__(self, model: nn.Module, head: str, spec: SideSpec) -> None:
        super().__init__()
        if head not in ("classification", "mlm"):
            raise InputError(f"LST supports the classification and mlm heads, not {head!r}")
        if head == "mlm" and anatomy.mlm_head(model) is None:
            raise InputError(f"LST: no masked-LM head found on {type(model).__name__}")
        config = model.config
        parts_of = anatomy.of(model).parts
        d, attn_heads, ffn = config.hidden_size, config.num_attention_heads, anatomy.ffn_width(config)
        eps = getattr(config, "layer_norm_eps", 1e-12)
        r = spec.r
        if r < 1 or d % (attn_heads * r) or ffn % r:
            raise InputError(f"LST: r={r} must divide the attention-head width {d // attn_heads} "
                             f"and the FFN width {ffn}")
        self.backbone, self.head, self.spec = model, head, spec
        self.base_layers = anatomy.encoder_layers(model)
        n = len(self.base_layers)
        self.layers = side_layer_indices(n, spec.layers, spec.drop_every)
        if not 0 <= spec.unfreeze_last <= n:
            raise InputError(f"LST: unfreeze_last={spec.unfreeze_last} outside 0..{n}")
        if spec.k < 0:
            raise InputError(f"k-LST: k must be odd and positive, not {spec.k}")
        width = d // r
        self.fusion = (WindowFusion(spec.fusion, width, self.layers, n, spec.k, spec.pool_all, spec.window_dropout)
                       if spec.k else None)

        # Downsamplers: "emb" for the side network's first input, one per backbone layer read.
        self.read = self.fusion.read() if self.fusion is not None else self.layers
        keys = ["emb", *map(str, self.read)]
        if spec.downsampler == "linear":
            self.down = nn.ModuleDict({key: nn.Linear(d, width) for key in keys})
        elif spec.downsampler == "shared":
            self.down_shared = nn.Linear(d, width)
        elif spec.downsampler == "avgpool":
            self.down_pool = AvgPoolDown(r)
        else:
            raise InputError(f"LST: downsampler must be linear, shared or avgpool, not {spec.downsampler!r}")
        self.side_layers = nn.ModuleList(SideLayer(width, attn_heads, ffn // r, eps, spec.dropout) for _ in self.layers)
        # The team's attention fusion has no gate: its output replaces the ladder input.
        self.gates = nn.Parameter(torch.zeros(len(self.layers))) if self.fusion is None or self.fusion.gated else None
        self.ladder_drop = nn.Dropout(spec.ladder_dropout)
        self.final_ln = nn.LayerNorm(width, eps=eps)
        self.upsample = nn.Linear(width, d)
        if head == "classification":
            self.head_drop = nn.Dropout(spec.dropout)
            self.classifier = nn.Linear(d, config.num_labels)
        self._init_side(getattr(config, "initializer_range", 0.02))
        if spec.init == "pruned":
            for side, l in zip(self.side_layers, self.layers):
                parts = parts_of(self.base_layers[l])
                side.load_pruned(parts, prune_plan(parts, attn_heads, r))
        elif spec.init != "random":
            raise InputError(f"LST: init must be pruned or random, not {spec.init!r}")

        unfrozen = list(self.base_layers)[n - spec.unfreeze_last:] if spec.unfreeze_last else []
        self.unfrozen = unfrozen
        for name, param in self.named_parameters():
            param.requires_grad_(not name.startswith("backbone."))
        for layer in unfrozen:
            layer.requires_grad_(True)

    def _init_side(self, std: float) -> None:
        for name, module in self.named_modules():
            # The attention fusion keeps PyTorch's own initialisation, as the team's code does.
            if name.startswith(("backbone", "fusion.attn", "fusion.block_pos")):
                continue
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=std)
                nn.init.zeros_(module.bias)

    def train(self, mode: bool = True) -> "LadderSideModel":
        """The frozen backbone always runs in eval mode (no dropout noise on fixed features);
        unfrozen layers follow ``mode``."""
        super().train(mode)
        self.backbone.eval()
        for layer in self.unfrozen:
            layer.train(mode)
        return self

    def downsample(self, key: str, h: torch.Tensor) -> torch.Tensor:
        side_dtype = self.final_ln.weight.dtype
        if h.dtype != side_dtype:
            # A half-precision backbone (``bf16-weights``): the ladder reads its states in their
            # own precision (no float32 copy of a state kept for backward); the side network
            # continues in float32.
            with torch.autocast(h.device.type, dtype=h.dtype):
                return self._downsample(key, h).to(side_dtype)
        return self._downsample(key, h)

    def _downsample(self, key: str, h: torch.Tensor) -> torch.Tensor:
        if self.spec.downsampler == "linear":
            return self.down[key](h)
        if self.spec.downsampler == "shared":
            return self.down_shared(h)
        return self.down_pool(h)

    def backbone_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Every hidden state of the backbone (embeddings first), without a graph if frozen."""
        grad = torch.no_grad() if not self.unfrozen else contextlib.nullcontext()
        with grad:
            out = self.backbone.base_model(input_ids=input_ids, attention_mask=attention_mask,
                                           output_hidden_states=True, return_dict=True)
        return out.hidden_states

    def ladders(self, states: tuple[torch.Tensor, ...], pad: torch.Tensor) -> Callable[[int, torch.Tensor], torch.Tensor]:
        """A function (side index, side state) -> the ladder input of that side layer."""
        if self.fusion is None:
            return lambda i, side: self.downsample(str(self.layers[i]), states[self.layers[i] + 1])
        feats = {l: self.downsample(str(l), states[l + 1]) for l in self.read}
        return self.fusion.bind(feats, pad)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                **_: Any) -> SimpleNamespace:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        states = self.backbone_states(input_ids, attention_mask)
        mask = attention_mask.bool()[:, None, None, :]
        ladder = self.ladders(states, attention_mask == 0)
        side = self.downsample("emb", states[0])
        for i, layer in enumerate(self.side_layers):
            fused = self.ladder_drop(ladder(i, side))
            if self.gates is None:
                side = layer(fused, mask)
            else:
                mu = torch.sigmoid(self.gates[i] / self.spec.gate_temperature)
                side = layer(mu * side + (1 - mu) * fused, mask)
        side = self.final_ln(side)
        if self.head == "classification":
            # The head reads the first token only: upsampling just it is the same and cheaper.
            logits = self.classifier(self.head_drop(self.upsample(side[:, 0])))
        else:
            up = self.upsample(side)
            logits = anatomy.mlm_head(self.backbone)(up.to(next(self.backbone.parameters()).dtype))
        return SimpleNamespace(logits=logits)
