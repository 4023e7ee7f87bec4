"""LoRA (Hu et al. 2021, arXiv:2106.09685; github.com/microsoft/LoRA, ``examples/NLU``) through ``peft``.

A frozen Linear W gets a trainable low-rank update: h = W x + (alpha / r) * B A dropout(x),
with A (r x d_in) random and B (d_out x r) zero at start. Trained: the adapters of the target
modules and the task head. The backward pass still goes through every frozen W to reach
earlier adapters (dL/dx = W^T dL/dy).

Targets (``targets``, a tuple of tokens or module names):
- ``qv`` (``lora``'s default): query and value, the LoRA paper's GLUE choice, as the family's
  anatomy names them (``spbench.anatomy``; the same names as peft's
  ``TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING``, which lacks DistilBERT's q_lin / v_lin).
- ``blocks`` (``lora_blocks``, and ``side_lora``'s default): every Linear inside the
  encoder's layers (query, key, value, attention output, FFN in, FFN out; :func:`block_linears`).
  peft's ``"all-linear"`` is not used: it would also adapt BERT's pooler, DistilBERT's
  pre_classifier and RoBERTa's classifier.dense, which belong to the head here and are trained
  in full.
- anything else: module names as peft matches them (``--set targets=query,key``).

The head: the classifier modules and, on BERT, the encoder's pooler (``anatomy.head_module_names``),
trained in full through peft's ``modules_to_save``.

``lora_blocks`` is LoRA with ``side_lora``'s adapter set: the fair baseline for Side-LoRA
(same adapters, same head, same hyperparameters; only the backward path differs).

    spbench estimate --method lora --backbone roberta-base
    spbench estimate --method lora_blocks --backbone distilbert-base

Deviations from the reference (microsoft/LoRA ``examples/NLU/roberta_base_sst2.sh``: r 8,
alpha 16, query/value, lr 5e-4, batch 16, 60 epochs, warmup 0.06, weight decay 0.1, max length
512; ``loralib.Linear`` with its default lora_dropout 0):
- The budget is spbench's (``--budget``), not 60 epochs, and sequences are as long as the
  case says, not 512; warmup 6% and linear decay as the reference (spbench.train).
- The reference trains every parameter outside the ``roberta.`` / ``deberta.`` backbone (its
  classifier; DeBERTa's ContextPooler, a top-level module there). spbench also trains BERT's
  pooler, which sits inside ``bert.`` but only feeds the classifier (a BERT model the
  reference did not run). The frozen copy of each head module that peft's
  ``modules_to_save`` keeps counts in ``params_total``.
- ``lora_blocks`` is not in the reference (the paper adapts query/value only); it exists for
  the same-adapter comparison with ``side_lora``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

from spbench import anatomy
from spbench.anatomy import head_module_names
from spbench.domains import at_least, fraction, hparam, positive
from spbench.errors import InputError
from spbench.methods.base import Method, register_method

if TYPE_CHECKING:
    from torch import nn

    from spbench.backbones import Backbone

TOKENS = ("qv", "blocks")


def default_targets(model: "nn.Module") -> list[str]:
    """The LoRA paper's query / value modules of ``model``'s family (as peft's table names them)."""
    found = anatomy.find(model)
    if found is None:
        raise InputError(f"no default LoRA targets for model type {getattr(model.config, 'model_type', None)!r}; "
                         "pass them, e.g. --set targets=query,value")
    return [found.query, found.value]


def block_linears(model: "nn.Module") -> list[str]:
    """Qualified names of every ``nn.Linear`` inside the encoder's layers (BERT / RoBERTa
    ``encoder.layer``, DistilBERT ``transformer.layer``)."""
    from torch import nn

    prefix = f"{anatomy.layers_name(model)}."
    return [name for name, m in model.named_modules() if isinstance(m, nn.Linear) and name.startswith(prefix)]


def resolve_targets(model: "nn.Module", targets: tuple[str, ...]) -> list[str]:
    """peft ``target_modules`` for the tokens / names of ``targets``."""
    if not targets:
        raise InputError(f"LoRA targets are empty; use {' or '.join(TOKENS)}, or module names")
    out: list[str] = []
    for item in targets:
        if item == "qv":
            out += default_targets(model)
        elif item == "blocks":
            out += block_linears(model)
        else:
            out.append(item)
    return list(dict.fromkeys(out))


@register_method("lora")
@dataclass(frozen=True)
class LoRA(Method):
    """peft LoRA, r=8, alpha=16 on query/value; head trained; AdamW lr 5e-4, weight decay 0.1.

    Fields: ``r`` rank; ``alpha`` (scale alpha / r); ``dropout`` on the LoRA branch input;
    ``targets`` "qv" | "blocks" | module names; ``train_head`` (classification head and
    BERT's pooler trained in full).
    """

    summary = "LoRA adapters via peft (r=8, alpha=16, query/value) + head"
    lr: float = 5e-4
    weight_decay: float = 0.1
    r: int = hparam(8, at_least(1), search="4,8,16")
    alpha: int = hparam(16, positive())
    dropout: float = hparam(0.0, fraction())
    targets: tuple[str, ...] = ("qv",)
    train_head: bool = True
    supports_grad_checkpointing = True

    def lora_config(self, model: "nn.Module") -> object:
        from peft import LoraConfig

        return LoraConfig(
            r=self.r,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules=resolve_targets(model, self.targets),
            modules_to_save=head_module_names(model) if self.train_head else None,
        )

    def prepare(self, backbone: "Backbone") -> "nn.Module":
        from peft import get_peft_model

        model = backbone.model
        # Only a classification head is trained; the prompt objective's MLM head stays frozen.
        method = dataclasses.replace(self, train_head=self.train_head and backbone.head == "classification")
        return get_peft_model(model, method.lora_config(model))

    def deployable(self, model: "nn.Module") -> "nn.Module":
        """The adapters merged into the frozen weights (W + s B A) and the head swapped in:
        peft's ``merge_and_unload``, which leaves the backbone's own modules and shapes."""
        return model.merge_and_unload()


@register_method("lora_blocks")
@dataclass(frozen=True)
class LoRABlocks(LoRA):
    """LoRA on every Linear of every transformer block: side_lora's adapter set, backward
    through the frozen weights (the same-adapter baseline of side_lora)."""

    summary = "LoRA on every block Linear (q, k, v, attn out, FFN in/out) + head: side_lora's adapters"
    targets: tuple[str, ...] = ("blocks",)
