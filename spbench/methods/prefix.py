"""Prefix tuning: P trainable key/value vectors prepended in every self-attention layer.

Li & Liang 2021, "Prefix-Tuning: Optimizing Continuous Prompts for Generation" (ACL;
arXiv:2101.00190); repository XiangLi1999/PrefixTuning; the encoder setting is the MeZO
paper's baseline (Malladi et al. 2023, princeton-nlp/MeZO ``medium_models/src/prefix.py``, for
RoBERTa-large on SST-2). In layer l, with frozen projections and P prefix rows K_l, V_l:

    attention(Q, [K_l ; W_k x], [V_l ; W_v x])      (every query also attends to the prefix)

The input sequence keeps its length and positions; only the keys and values are P longer, and
the attention mask gets P ones in front. Trained: the 2 x layers x P x d prefix and the
classification head. Backward goes through every frozen layer (lower prefixes need dL/dx from
above), so activations are kept as in full FT.

The prefix defaults are MeZO's for RoBERTa-large (its README's "Adam fine-tuning +
prefix-tuning"): 5 prefix tokens, no reparameterisation, prefixes initialised with the real
keys/values of P random tokens (``init="real"``), AdamW at lr 1e-2, batch 8. MeZO's runs are
prompt-based and train the prefix alone (the masked-LM head frozen): that is ``--objective
prompt`` here. Under spbench's default classification objective a fresh classification head
trains beside the prefix at the same 1e-2, which MeZO's setting never had: a deviation, and no
longer "MeZO's setting" as a whole. Li & Liang's own defaults (GPT-2,
table-to-text): prefix length 10, the prefix produced by an MLP from a smaller matrix,
AdamW lr 5e-5, batch 5.

Deviations, and why this is not peft's ``PrefixTuningConfig``: peft 0.21 hands the prefix to
the model as ``past_key_values``; transformers 5 renamed that argument ``cache`` in BERT and
RoBERTa, so peft refuses them ("Model does not support past key values"), DistilBERT never
took one, and a cache is appended to again when gradient checkpointing recomputes a layer.
The prefix is therefore applied as MeZO's code does it, inside each self-attention, through
transformers' ``AttentionInterface`` (a registered attention function that prepends the
layer's prefix and calls transformers' SDPA attention): one path for every architecture,
stateless under recomputation. Li & Liang's MLP reparameterisation is not implemented (MeZO
runs without it). The prefix does not shift the input's positions (peft's cache path on BERT
did).

    spbench estimate --method prefix --backbone roberta-large --batch-size 16 --seq-len 128
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from spbench import anatomy
from spbench.anatomy import head_module_names
from spbench.domains import at_least, hparam
from spbench.errors import InputError
from spbench.methods.base import Method, register_method, set_trainable

if TYPE_CHECKING:
    import torch
    from torch import nn

    from spbench.backbones import Backbone

ATTENTION = "spbench_prefix_sdpa"


def _prefix_attention(module: "nn.Module", query: "torch.Tensor", key: "torch.Tensor", value: "torch.Tensor",
                      attention_mask: "torch.Tensor | None", **kwargs: Any) -> Any:
    """transformers' SDPA attention with the module's prefix in front of its keys and values."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    batch, attn_heads, _, attn_dim = key.shape
    pk, pv = (p.to(key.dtype).view(-1, attn_heads, attn_dim).transpose(0, 1).unsqueeze(0).expand(batch, -1, -1, -1)
              for p in (module.prefix.key, module.prefix.value))
    return sdpa_attention_forward(module, query, torch.cat([pk, key], dim=2), torch.cat([pv, value], dim=2),
                                  attention_mask, **kwargs)


def register_attention() -> None:
    """Make ``ATTENTION`` a transformers attention implementation (with SDPA's mask builder)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(ATTENTION, _prefix_attention)
    AttentionMaskInterface.register(ATTENTION, sdpa_mask)


def _extend_mask(length: int) -> Any:
    """Forward pre-hook for the encoder: P ones in front of a 2-D attention mask."""

    def hook(module: "nn.Module", args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, Any]:
        import torch

        def extend(mask: Any) -> Any:
            if mask is None or mask.dim() != 2:
                return mask
            ones = torch.ones(mask.shape[0], length, dtype=mask.dtype, device=mask.device)
            return torch.cat([ones, mask], dim=1)

        if "attention_mask" in kwargs:
            kwargs["attention_mask"] = extend(kwargs["attention_mask"])
        elif len(args) > 1:
            args = (args[0], extend(args[1]), *args[2:])
        return args, kwargs

    return hook


def _real_activations(encoder: "nn.Module", attentions: list["nn.Module"], names: tuple[str, str],
                      length: int, vocab: int) -> list[tuple["torch.Tensor", "torch.Tensor"]]:
    """Keys and values (P x d each) every layer computes for P random tokens (MeZO's init);
    ``names``: the key and value projections of an attention module."""
    import torch

    captured: dict[tuple[int, str], torch.Tensor] = {}
    handles = []
    for i, attn in enumerate(attentions):
        for name in names:
            def keep(mod: Any, inp: Any, out: "torch.Tensor", key: tuple[int, str] = (i, name)) -> None:
                captured[key] = out[0].detach().clone()

            handles.append(getattr(attn, name).register_forward_hook(keep))
    ids = torch.randint(0, vocab, (1, length), generator=torch.Generator().manual_seed(0), device="cpu")
    was_training = encoder.training
    try:
        encoder.eval()
        with torch.no_grad():
            device = next(encoder.parameters()).device
            encoder(input_ids=ids.to(device))
    finally:
        encoder.train(was_training)
        for h in handles:
            h.remove()
    return [(captured[(i, names[0])], captured[(i, names[1])]) for i in range(len(attentions))]


@register_method("prefix")
@dataclass(frozen=True)
class Prefix(Method):
    """Prefix tuning, 5 prefix keys/values per layer from real activations; lr 1e-2 (MeZO's prefix
    setting); a classification head, where the objective has one, trains at the same rate."""

    summary = "prefix tuning: trainable keys/values prepended in every attention layer + head"
    lr: float = 1e-2
    num_prefix: int = hparam(5, at_least(1))
    init: Literal["real", "random"] = "real"
    supports_grad_checkpointing = True

    def prepare(self, backbone: "Backbone") -> "nn.Module":
        import torch
        from torch import nn

        if self.num_prefix < 1:
            raise InputError(f"prefix num_prefix must be >= 1, not {self.num_prefix}")
        model = backbone.model
        encoder = model.base_model
        attentions = anatomy.self_attentions(model)
        parts = anatomy.of(model)
        width = model.config.hidden_size
        real = (_real_activations(encoder, attentions, (parts.key, parts.value), self.num_prefix,
                                  model.config.vocab_size) if self.init == "real" else None)
        gen = torch.Generator().manual_seed(0)
        for i, attn in enumerate(attentions):
            prefix = nn.Module()
            for j, name in enumerate(("key", "value")):
                init = (real[i][j] if real is not None
                        else torch.randn(self.num_prefix, width, generator=gen, device="cpu"))
                like = next(attn.parameters())
                prefix.register_parameter(name, nn.Parameter(init.to(device=like.device, dtype=like.dtype)))
            attn.prefix = prefix
        register_attention()
        model.set_attn_implementation(ATTENTION)
        encoder.register_forward_pre_hook(_extend_mask(self.num_prefix), with_kwargs=True)
        heads = head_module_names(model) if backbone.head == "classification" else []
        prefixes = tuple(f"{h}." for h in heads)
        set_trainable(model, lambda name: ".prefix." in name or name.startswith(prefixes))
        return model
