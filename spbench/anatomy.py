"""Where each encoder family keeps its parts: one table that every method, the prompt objective
and the sequence-length limits read (as peft's ``utils/constants.py`` maps model types to target
modules), so that adding a family is one entry here.

Paths are dotted module paths, each relative to what it lives in:

- ``layers``, ``embeddings``, ``pooler``: in the encoder (``model.base_model``);
- ``self_attention``, ``attn_out``, ``attn_norm``, ``ffn_in``, ``ffn_out``, ``ffn_norm``: in one
  entry of ``layers``; ``query``, ``key``, ``value``: in its ``self_attention`` module (the one
  that calls the attention function);
- ``classifier``, ``mlm_head``: top-level modules of the ``*ForSequenceClassification`` /
  ``*ForMaskedLM`` model, in the order the hidden states go through them.

Words. **head** means one thing: the modules on top of the encoder that turn its hidden states
into the objective's logits. That is the classification head (``classifier``; DistilBERT's
``pre_classifier`` too; and BERT's pooler, which sits inside the encoder but only feeds the
classifier) or, on a masked-LM model, its **MLM head** (``mlm_head``). ``backbones.load(name,
head=...)`` and ``Objective.head`` name which head a model is built with ("classification",
"mlm", or "base": none). Attention heads are always called *attention* heads (``attn_heads``
in code); the template text around a prompt's sentence is its ``before`` / ``after``.

    >>> from spbench import anatomy
    >>> anatomy.of(model).layers                  # "encoder.layer" (DistilBERT: "transformer.layer")
    >>> anatomy.head_module_names(model)          # ["classifier", "bert.pooler"] on BERT
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from spbench.errors import InputError

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class Anatomy:
    """Where one family keeps its parts (see the module docstring for what each path is in)."""

    family: str
    layers: str
    embeddings: str
    self_attention: str
    query: str
    key: str
    value: str
    attn_out: str
    attn_norm: str
    ffn_in: str
    ffn_out: str
    ffn_norm: str
    pooler: str | None
    classifier: tuple[str, ...]
    mlm_head: tuple[str, ...]
    ffn_width: str  # the config field of the FFN's inner width
    position_offset: int = 0  # positions used up before the first token (RoBERTa: padding_idx + 1)

    def layer_paths(self) -> dict[str, str]:
        """One layer's weights, keyed q, k, v, o (attention), ln1, fi, fo (FFN), ln2: paths in the layer."""
        attn = self.self_attention
        return {"q": f"{attn}.{self.query}", "k": f"{attn}.{self.key}", "v": f"{attn}.{self.value}",
                "o": self.attn_out, "ln1": self.attn_norm, "fi": self.ffn_in, "fo": self.ffn_out,
                "ln2": self.ffn_norm}

    def parts(self, layer: "nn.Module") -> dict[str, "nn.Module"]:
        """The modules of :meth:`layer_paths` in ``layer``."""
        return {key: layer.get_submodule(path) for key, path in self.layer_paths().items()}


BERT = Anatomy(
    family="bert", layers="encoder.layer", embeddings="embeddings", self_attention="attention.self",
    query="query", key="key", value="value", attn_out="attention.output.dense",
    attn_norm="attention.output.LayerNorm", ffn_in="intermediate.dense", ffn_out="output.dense",
    ffn_norm="output.LayerNorm", pooler="pooler", classifier=("classifier",), mlm_head=("cls",),
    ffn_width="intermediate_size",
)
# RoBERTa is BERT's layout with its own heads; its classifier is dense + tanh + out_proj on <s>.
ROBERTA = Anatomy(**{**BERT.__dict__, "family": "roberta", "mlm_head": ("lm_head",), "position_offset": 2})
DISTILBERT = Anatomy(
    family="distilbert", layers="transformer.layer", embeddings="embeddings", self_attention="attention",
    query="q_lin", key="k_lin", value="v_lin", attn_out="attention.out_lin", attn_norm="sa_layer_norm",
    ffn_in="ffn.lin1", ffn_out="ffn.lin2", ffn_norm="output_layer_norm", pooler=None,
    classifier=("pre_classifier", "classifier"),
    mlm_head=("vocab_transform", "activation", "vocab_layer_norm", "vocab_projector"),
    ffn_width="hidden_dim",
)

# transformers' ``config.model_type`` -> anatomy. MiniLM checkpoints are model type "bert".
ANATOMIES: dict[str, Anatomy] = {"bert": BERT, "roberta": ROBERTA, "xlm-roberta": ROBERTA, "distilbert": DISTILBERT}


def _config(obj: Any) -> Any:
    return obj if not hasattr(obj, "config") else obj.config


def find(obj: Any) -> Anatomy | None:
    """The anatomy of a model, a peft-wrapped model or a config; None when its family is unknown
    (or it is no transformers model, e.g. LST's side network)."""
    return ANATOMIES.get(getattr(_config(obj), "model_type", None) or "")


def of(obj: Any) -> Anatomy:
    """As :func:`find`, but an unknown family is an :class:`InputError`."""
    found = find(obj)
    if found is None:
        model_type = getattr(_config(obj), "model_type", None)
        raise InputError(f"no anatomy for model type {model_type!r} ({type(obj).__name__}); spbench knows "
                         f"{', '.join(sorted(ANATOMIES))} (add the family to spbench/anatomy.py)")
    return found


def unwrap(model: "nn.Module") -> "nn.Module":
    """The transformers model inside a peft wrapper (the model itself otherwise)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def encoder_layers(model: "nn.Module") -> "nn.ModuleList":
    """The encoder's layer list of a ``*For*`` model, its encoder, or a peft wrapper of either."""
    inner = unwrap(model)
    return inner.base_model.get_submodule(of(inner).layers)


def layers_name(model: "nn.Module") -> str:
    """The qualified name of the encoder's layer list inside ``model`` (wrapped or not)."""
    layers = encoder_layers(model)
    return next(name for name, module in model.named_modules() if module is layers)


def self_attentions(model: "nn.Module") -> list["nn.Module"]:
    """Each layer's self-attention module (owner of query / key / value), first layer first."""
    attn = of(unwrap(model)).self_attention
    return [layer.get_submodule(attn) for layer in encoder_layers(model)]


def _has_params(module: Any) -> bool:
    return hasattr(module, "parameters") and any(True for _ in module.parameters())


def head_module_names(model: "nn.Module") -> list[str]:
    """Qualified names of the head of a transformers ``*For*`` model: its classifier modules and,
    where the encoder has one, its pooler (BERT's: it only feeds the classifier, so it trains
    with the head in every method that trains the head); or its MLM head. Modules without
    parameters are left out; a bare encoder (``AutoModel``) has no head."""
    anatomy = of(model)
    if all(hasattr(model, name) for name in anatomy.classifier):
        names = [name for name in anatomy.classifier if _has_params(getattr(model, name))]
        pooler = getattr(model.base_model, anatomy.pooler, None) if anatomy.pooler else None
        if model.base_model is not model and _has_params(pooler):
            names.append(f"{model.base_model_prefix}.{anatomy.pooler}")
        return names
    if all(hasattr(model, name) for name in anatomy.mlm_head):
        return [name for name in anatomy.mlm_head if _has_params(getattr(model, name))]
    return []


def mlm_head(model: "nn.Module") -> Callable[[Any], Any] | None:
    """The MLM head of a ``*ForMaskedLM`` model as a function of final hidden states, or None when
    ``model`` has none (a classification model, a side network, an unknown family)."""
    anatomy = find(model)
    if anatomy is None or not all(hasattr(model, name) for name in anatomy.mlm_head):
        return None
    modules = [getattr(model, name) for name in anatomy.mlm_head]
    if len(modules) == 1:
        return modules[0]

    def head(hidden: Any) -> Any:
        for module in modules:
            hidden = module(hidden)
        return hidden

    return head


def position_offset(config: Any) -> int:
    """Position embeddings a family uses up before the first token (0 for an unknown family)."""
    found = find(config)
    return found.position_offset if found is not None else 0


def ffn_width(config: Any) -> int:
    """The FFN's inner width from a config (BERT: ``intermediate_size``, DistilBERT: ``hidden_dim``)."""
    return int(getattr(config, of(config).ffn_width))
