"""k-LST's ladders: each side layer's input is fused from a window of k projected backbone layers.

The window of side layer i is centred on its backbone layer l: members l-w .. l+w (w = k // 2),
each downsampled by that backbone layer's own Linear (C_j = down_j(h_j)), members beyond the
first or last layer are zeros (the window keeps k members; it is neither clamped nor shrunk).
``pool_all`` makes the window every backbone layer, for every side layer.

``attention`` (the team's fusion, github matoototo/k-LST ``code/adapters.py``, ``LST.fuse`` with
``fusion: attention``, ``configs/9-lst.yaml``; their report, section "k-LST"):

    C~_j  = keep_j * C_j + p_j           p = nn.Embedding(k, D), one table shared by every side
                                         layer, only when k > 1; keep_j in {0, 1}: one draw per
                                         member and step for the whole batch (p_drop 0.2 at
                                         k=9), not rescaled; 1 while evaluating
    KV    = [C~_0; C~_1; ...; C~_{k-1}]  (B, k*S, D): every position of every member
    x_i   = MHA_i(query=s_{i-1}, key=KV, value=KV)    nn.MultiheadAttention(D, 1 head): q, k, v
                                         and out projections; called with its defaults, so the
                                         (B, S, k*S) weights are materialised, as theirs are
    s_i   = side_layer_i(x_i)            no gate and no residual: x_i replaces the ladder input

With k=1 the window is the centre layer alone, no position embedding: the side state attends
over the S positions of its own backbone layer (the team's "LST" baseline, ``configs/lst.yaml``;
not the LST paper's gated ladder). Deviations from their code: (1) padded keys are masked
(``key_padding_mask``; their call passes no mask, so padding got attention weight); (2) each
backbone layer is downsampled once per step and shared by every window that holds it (theirs
recomputes the Linear for each window: the same values, k times the downsampling FLOPs).

``position`` (spbench's first k-LST, kept as a variant): a per-position softmax over the k
members, query W_i s only, keys with a learned position vector, the LST gate kept:

    f_i   = sum_j softmax_j(q . (C_j + p_j) / sqrt(D)) C_j,   q = W_i s     (per position)
    s_i   = side_layer_i(mu_i s + (1 - mu_i) f_i)

O(S*k) scores instead of O(S*k*S). Its window dropout masks members per example in the softmax
and never the centre; with k=1 it is the LST ladder bit for bit.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from spbench.errors import InputError

FUSIONS = ("attention", "position")


class PositionFusion(nn.Module):
    """The ``position`` fusion of one side layer: attention over the k members at each position."""

    def __init__(self, width: int, members: int) -> None:
        super().__init__()
        self.query = nn.Linear(width, width)
        self.pos = nn.Parameter(torch.randn(members, width) * 0.02)
        self.scale = 1.0 / math.sqrt(width)

    def forward(self, side: torch.Tensor, window: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        """side (B, S, D); window (B, S, k, D); keep (B, 1, k) bool or None -> (B, S, D)."""
        q = self.query(side)
        scores = (torch.einsum("bsd,bskd->bsk", q, window) + q @ self.pos.T) * self.scale
        if keep is not None:
            scores = scores.masked_fill(~keep, float("-inf"))
        return torch.einsum("bsk,bskd->bsd", scores.softmax(-1), window)


class WindowFusion(nn.Module):
    """The fusion modules of every side layer and how they are fed.

    Args:
        fusion: "attention" (the team's) or "position".
        width: side width D.
        centres: the backbone layer of each side layer.
        n_layers: backbone layers.
        k: odd window size; ``pool_all``: the window is every backbone layer instead.
        window_dropout: probability of dropping a window member while training.
    """

    def __init__(self, fusion: str, width: int, centres: tuple[int, ...], n_layers: int, k: int,
                 pool_all: bool, window_dropout: float) -> None:
        super().__init__()
        if fusion not in FUSIONS:
            raise InputError(f"k-LST: fusion must be one of {', '.join(FUSIONS)}, not {fusion!r}")
        if k < 1 or k % 2 == 0:
            raise InputError(f"k-LST: k must be odd and positive, not {k}")
        if not 0 <= window_dropout < 1:
            raise InputError(f"k-LST: window_dropout must be in [0, 1), not {window_dropout}")
        self.kind, self.centres, self.n, self.pool_all, self.p = fusion, centres, n_layers, pool_all, window_dropout
        self.members = n_layers if pool_all else k
        self.half = 0 if pool_all else k // 2
        if fusion == "attention":
            self.attn = nn.ModuleList(nn.MultiheadAttention(width, 1, batch_first=True) for _ in centres)
            self.block_pos = nn.Embedding(self.members, width) if self.members > 1 else None
        else:
            self.position = nn.ModuleList(PositionFusion(width, self.members) for _ in centres)

    @property
    def gated(self) -> bool:
        """Whether the side network keeps LST's gate around the fused ladder."""
        return self.kind == "position"

    def read(self) -> tuple[int, ...]:
        """The backbone layers some window holds (each needs a downsampler)."""
        if self.pool_all:
            return tuple(range(self.n))
        return tuple(sorted({j for c in self.centres for j in range(c - self.half, c + self.half + 1)
                             if 0 <= j < self.n}))

    def bind(self, feats: dict[int, torch.Tensor], pad: torch.Tensor) -> Callable[[int, torch.Tensor], torch.Tensor]:
        """A function (side index, side state) -> fused ladder input, over this step's features.

        Args:
            feats: downsampled backbone layers, {layer: (B, S, D)}, for every layer in ``read()``.
            pad: (B, S) bool, True at padding.
        """
        some = next(iter(feats.values()))
        zero = some.new_zeros(some.shape)
        # One stacked tensor of all layers with w zero members on each side: a window is a slice.
        dim = 1 if self.kind == "attention" else 2
        padded = [zero] * self.half + [feats.get(j, zero) for j in range(self.n)] + [zero] * self.half
        stacked = torch.stack(padded, dim=dim)

        def window(i: int) -> torch.Tensor:
            start = 0 if self.pool_all else self.centres[i]
            return stacked.narrow(dim, start, self.members)

        if self.kind == "attention":
            return lambda i, side: self._attend(i, side, window(i), pad)
        return lambda i, side: self.position[i](side, window(i), self._position_keep(stacked, i))

    def _attend(self, i: int, side: torch.Tensor, window: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        """window (B, k, S, D) -> MHA from ``side`` over its k*S positions."""
        if self.training and self.p > 0:
            keep = (torch.rand(self.members, device=window.device) >= self.p).to(window.dtype)
            window = window * keep.view(1, -1, 1, 1)
        if self.block_pos is not None:
            window = window + self.block_pos.weight[None, :, None, :]
        b, k, s, d = window.shape
        kv = window.reshape(b, k * s, d)
        return self.attn[i](side, kv, kv, key_padding_mask=pad.repeat(1, k))[0]

    def _position_keep(self, stacked: torch.Tensor, i: int) -> torch.Tensor | None:
        if not (self.training and self.p > 0):
            return None
        keep = torch.rand(stacked.shape[0], 1, self.members, device=stacked.device) >= self.p
        always = torch.zeros(self.members, dtype=torch.bool, device=stacked.device)
        # The centre member is never dropped: the softmax stays defined.
        always[self.centres[i] if self.pool_all else self.half] = True
        return keep | always
