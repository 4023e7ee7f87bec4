"""The "prompt" objective: classification as masked-word prediction (LM-BFF / MeZO style).

Each sentence is wrapped in a template, ``{sentence} It was <mask>.`` by default (the
tokenizer adds ``<s> ... </s>`` / ``[CLS] ... [SEP]``), and the class logits are the masked-LM
head's scores of the label words (" terrible" = 0, " great" = 1) at the mask position; the
loss is cross-entropy over those scores (Gao et al. 2021, arXiv:2012.15723; Malladi et al.
2023, arXiv:2305.17333, who use this template for SST-2: LM-BFF's ``*cls**sent_0*_It_was*mask*.*sep+*``,
where "." follows the mask as its own token with no space before it).

A batch carries, besides ``input_ids`` / ``attention_mask`` / ``labels``, one integer per row
each of ``mask_pos`` and ``label_word_0`` .. ``label_word_<C-1>``: the objective then needs no
tokenizer, and any loader that slices or collates rows keeps them aligned.

Only the hidden state at the mask goes through the MLM head: the head is per token, so this is
the same as scoring every position and picking one, without the B x S x V logits (1.6 GB for
roberta-large at 64 x 128) that would otherwise dominate the peak of a forward-only method.

Synthetic batches (memory / speed cases) of a backbone without a tokenizer use config ids: the
mask id is ``config.mask_token_id`` when the config has one, else ``vocab_size - 1`` (where
RoBERTa keeps ``<mask>``); the label words are the ids ``vocab_size - 3`` and ``vocab_size - 2``.
The ids do not change memory or time, only which rows of the head are read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

from spbench.anatomy import head_module_names, mlm_head, unwrap
from spbench.errors import InputError
from spbench.objectives.base import OBJECTIVES, Objective, model_inputs, output_logits

if TYPE_CHECKING:
    import torch
    from torch import nn

    from spbench.backbones import Backbone

TEMPLATE = "{sentence} It was <mask>."
LABEL_WORDS = (" terrible", " great")
MASK = "<mask>"
WORD_KEY = "label_word_"  # batch columns label_word_0, label_word_1, ...: one id per row each


def label_word_ids(tokenizer: Any, words: Sequence[str] = LABEL_WORDS) -> list[int]:
    """One token id per label word; raises if a word is not a single token.

    Byte-level BPE (RoBERTa) keeps the leading space (" great" -> "Ġgreat", the word as it
    follows "was"); WordPiece (BERT) drops it, so " great" -> "great". A tokenizer that turns
    the spaced word into two pieces (e.g. "▁" + "great") gets a second try without the space.
    """
    ids = []
    for word in words:
        pieces = tokenizer.encode(word, add_special_tokens=False)
        if len(pieces) != 1 and word != word.strip():
            pieces = tokenizer.encode(word.strip(), add_special_tokens=False)
        if len(pieces) != 1:
            shown = tokenizer.convert_ids_to_tokens(pieces)
            raise InputError(f"prompt label word {word!r} is {len(pieces)} tokens {shown} for "
                             f"{type(tokenizer).__name__}; each label word must be one token")
        ids.append(int(pieces[0]))
    if len(set(ids)) != len(ids):
        raise InputError(f"prompt label words {list(words)} map to the same token ids {ids}")
    return ids


def _split_template(template: str) -> tuple[str, str]:
    if template.count("{sentence}") != 1 or template.count(MASK) != 1:
        raise InputError(f"prompt template needs one {{sentence}} and one {MASK}: {template!r}")
    prefix, suffix = template.split("{sentence}")
    return prefix, suffix


def _template_ids(tokenizer: Any, text: str) -> list[int]:
    """Token ids of a template part, with the mask id put in directly: the text before a mask
    loses its trailing space, so a tokenizer whose mask token does not strip the space to its
    left still gives "Ġwas <mask>" (as RoBERTa's does), not "Ġwas Ġ <mask>"."""
    ids: list[int] = []
    parts = text.split(MASK)
    for i, part in enumerate(parts):
        if i < len(parts) - 1:
            part = part.rstrip()
        if part:
            ids += tokenizer.encode(part, add_special_tokens=False)
        if i < len(parts) - 1:
            ids.append(tokenizer.mask_token_id)
    return ids


def _special_wrap(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The special ids a tokenizer puts before and after one sequence ([CLS] / [SEP],
    <s> / </s>), read off a probe (transformers 5 tokenizers have no public builder)."""
    bare = tokenizer.encode("a", add_special_tokens=False)
    full = tokenizer.encode("a", add_special_tokens=True)
    for start in range(len(full) - len(bare) + 1):
        if full[start:start + len(bare)] == bare:
            return full[:start], full[start + len(bare):]
    raise ValueError(f"cannot tell where {type(tokenizer).__name__} puts its special tokens")


def encode(tokenizer: Any, sentences: Sequence[str], labels: Sequence[int] | None = None,
           max_len: int = 128, template: str = TEMPLATE,
           label_words: Sequence[str] = LABEL_WORDS) -> list[dict[str, Any]]:
    """Tokenise ``sentences`` into prompt rows (unpadded; ``spbench.data.collate`` or
    :func:`pad` makes batches).

    Template prefix, sentence and suffix are tokenised apart and joined, so truncation to
    ``max_len`` cuts the sentence's end and never the template (the mask survives). The
    template's ``<mask>`` becomes the tokenizer's mask id.

    Each row: ``input_ids`` (list), ``mask_pos`` and ``label_word_<i>`` (ints; scalars so that
    a collator pads only the token list) and, with ``labels``, ``labels``.
    """
    if tokenizer.mask_token_id is None:
        raise InputError(f"{type(tokenizer).__name__} has no mask token: the prompt objective needs one")
    words = label_word_ids(tokenizer, label_words)
    before, after = (_template_ids(tokenizer, part) for part in _split_template(template))
    lead, trail = _special_wrap(tokenizer)
    budget = max_len - len(before) - len(after) - len(lead) - len(trail)
    if budget < 1:
        raise InputError(f"max_len {max_len} leaves no room for a sentence in template {template!r}")
    body = tokenizer(list(sentences), add_special_tokens=False)["input_ids"]
    rows = []
    for i, ids in enumerate(body):
        tokens = lead + before + list(ids[:budget]) + after + trail
        row: dict[str, Any] = {"input_ids": tokens, "mask_pos": tokens.index(tokenizer.mask_token_id)}
        row.update({f"{WORD_KEY}{c}": w for c, w in enumerate(words)})
        if labels is not None:
            row["labels"] = int(labels[i])
        rows.append(row)
    return rows


def pad(rows: Sequence[dict[str, Any]], pad_id: int = 0) -> dict[str, "torch.Tensor"]:
    """Right-pad prompt rows into one batch with its ``attention_mask``."""
    import torch

    width = max(len(r["input_ids"]) for r in rows)
    batch = {"input_ids": torch.full((len(rows), width), pad_id, dtype=torch.long),
             "attention_mask": torch.zeros((len(rows), width), dtype=torch.long)}
    for i, row in enumerate(rows):
        batch["input_ids"][i, :len(row["input_ids"])] = torch.tensor(row["input_ids"])
        batch["attention_mask"][i, :len(row["input_ids"])] = 1
    for key in rows[0]:
        if key != "input_ids":
            batch[key] = torch.tensor([r[key] for r in rows], dtype=torch.long)
    return batch


def word_ids(batch: dict[str, "torch.Tensor"]) -> "torch.Tensor":
    """The batch's label-word ids, B x C (from its ``label_word_<i>`` columns)."""
    import torch

    count = sum(1 for key in batch if key.startswith(WORD_KEY))
    if not count:
        raise ValueError("a prompt batch needs label_word_<i> columns (spbench.objectives.prompt.encode makes them)")
    return torch.stack([batch[f"{WORD_KEY}{c}"] for c in range(count)], dim=1)


@dataclass
class Prompt(Objective):
    """Label-word scores at the mask (needs a masked-LM head: ``head = "mlm"``)."""

    template: str = TEMPLATE
    label_words: tuple[str, ...] = LABEL_WORDS
    name = "prompt"
    head = "mlm"

    def logits(self, model: "nn.Module", batch: dict[str, "torch.Tensor"]) -> "torch.Tensor":
        import torch

        rows = torch.arange(batch["input_ids"].shape[0], device=batch["input_ids"].device)
        words = word_ids(batch)
        inner = unwrap(model)
        head = mlm_head(inner)
        if head is not None and getattr(inner, "base_model", inner) is not inner:
            hidden = inner.base_model(**model_inputs(batch), return_dict=True).last_hidden_state
            scores = head(hidden[rows, batch["mask_pos"]])  # B x V
        else:  # another module (e.g. LST's side network): its own logits, per position or not
            scores = output_logits(model(**model_inputs(batch)))
            if scores.dim() == 3:
                scores = scores[rows, batch["mask_pos"]]
            if scores.shape[-1] == words.shape[-1]:  # already one score per class
                return scores
        return scores.gather(1, words)

    def synthetic_batch(self, backbone: "Backbone", batch_size: int, seq_len: int,
                        seed: int = 0) -> dict[str, "torch.Tensor"]:
        """Random rows with the mask token two tokens before each row's end (as the template
        puts it: ``<mask> . </s>``)."""
        import torch

        from spbench.data import synthetic_batch

        batch = synthetic_batch(backbone.config, batch_size, seq_len, seed=seed,
                                num_labels=len(self.label_words))
        config, tok = backbone.config, backbone.tokenizer
        vocab = int(config.vocab_size)
        if tok is not None and tok.mask_token_id is not None:
            mask_id, words = tok.mask_token_id, label_word_ids(tok, self.label_words)
        else:
            mask_id = getattr(config, "mask_token_id", None)
            mask_id = vocab - 1 if mask_id is None else int(mask_id)
            words = [vocab - 1 - len(self.label_words) + i for i in range(len(self.label_words))]
        lengths = batch["attention_mask"].sum(1)
        mask_pos = (lengths - 3).clamp(min=0)
        batch["input_ids"][torch.arange(batch_size), mask_pos] = mask_id
        batch["mask_pos"] = mask_pos
        batch.update({f"{WORD_KEY}{c}": torch.full((batch_size,), w, dtype=torch.long)
                      for c, w in enumerate(words)})
        return batch

    def encode(self, tokenizer: Any, sentences: Sequence[str], labels: Sequence[int], max_len: int) -> Any:
        return encode(tokenizer, sentences, labels, max_len, self.template, self.label_words)

    def notes(self, backbone: "Backbone") -> dict[str, Any]:
        if backbone.spec.pretrained and not backbone.spec.has_pretrained_mlm_head:
            return {"mlm_head_untrained": True}
        return {}


OBJECTIVES.register("prompt")(Prompt())


def warmup_mlm_head(backbone: "Backbone", sentences: Sequence[str], steps: int = 200, batch_size: int = 32,
                    max_len: int = 64, lr: float = 1e-3, mask_prob: float = 0.15, seed: int = 0) -> list[float]:
    """Give a backbone without a pretrained MLM head a usable one: masked-LM training of the
    head alone (the encoder frozen and run without grad; a decoder tied to the input
    embeddings stays frozen with them, so the encoder is exactly the pretrained one) on
    unlabelled sentences. BERT's masking: ``mask_prob`` of the non-special tokens become the
    mask token. Returns the loss per step.
    """
    import random

    import torch
    import torch.nn.functional as F

    model, tok = backbone.model, backbone.tokenizer
    head = mlm_head(model)
    if head is None or tok is None or tok.mask_token_id is None:
        raise InputError(f"{backbone.name}: the MLM-head warm-up needs a masked-LM model with a tokenizer")
    encoder = {id(p) for p in model.base_model.parameters()}
    params = [p for name in head_module_names(model) for p in model.get_submodule(name).parameters()
              if id(p) not in encoder]
    for p in model.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(params, lr=lr)
    rng, gen = random.Random(seed), torch.Generator().manual_seed(seed)
    pool = list(sentences)
    special = set(tok.all_special_ids)
    model.eval()  # no dropout in the frozen encoder; the head has none
    losses = []
    for _ in range(steps):
        enc = tok(rng.sample(pool, batch_size), truncation=True, max_length=max_len,
                  padding=True, return_tensors="pt")
        ids, attn = enc["input_ids"], enc["attention_mask"]
        maskable = attn.bool() & ~torch.isin(ids, torch.tensor(sorted(special)))
        chosen = maskable & (torch.rand(ids.shape, generator=gen) < mask_prob)
        if not chosen.any():
            continue
        with torch.no_grad():
            hidden = model.base_model(input_ids=ids.masked_fill(chosen, tok.mask_token_id),
                                      attention_mask=attn, return_dict=True).last_hidden_state
        loss = F.cross_entropy(head(hidden[chosen]).float(), ids[chosen])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    for p in model.parameters():
        p.requires_grad_(True)
    return losses
