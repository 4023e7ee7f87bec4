"""The prompt objective: label-word ids and mask position for BERT- and RoBERTa-style
tokenizers, logits equal to the full MLM scores at the mask, synthetic batches, notes."""

from __future__ import annotations

import pytest
import torch

from spbench import backbones, objectives
from spbench.objectives.prompt import Prompt, encode, label_word_ids, pad, word_ids

CORPUS = ["a great movie . it was great .", "a terrible film , it was terrible .",
          "It was fine and good , not terrible"] * 20


@pytest.fixture(scope="module")
def bert_tok():
    return backbones.load("minilm-l6", head="mlm").tokenizer


@pytest.fixture(scope="module")
def roberta_tok(tmp_path_factory):
    """A tiny byte-level BPE written as vocab/merges files, loaded as a RoBERTa tokenizer whose
    <mask> strips the space to its left, like roberta-base's."""
    from tokenizers import AddedToken, ByteLevelBPETokenizer
    from transformers import RobertaTokenizer

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(CORPUS, vocab_size=300, min_frequency=1,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    folder = tmp_path_factory.mktemp("bpe")
    vocab, merges = bpe.save_model(str(folder))
    return RobertaTokenizer(vocab=vocab, merges=merges, mask_token=AddedToken("<mask>", lstrip=True))


def test_label_words_bert_style(bert_tok) -> None:
    ids = label_word_ids(bert_tok)
    assert bert_tok.convert_ids_to_tokens(ids) == ["terrible", "great"]  # WordPiece: no space marker


def test_label_words_roberta_style(roberta_tok) -> None:
    ids = label_word_ids(roberta_tok)
    assert roberta_tok.convert_ids_to_tokens(ids) == ["Ġterrible", "Ġgreat"]  # the word after "was"


def test_multi_token_label_word_is_a_clear_error(bert_tok) -> None:
    with pytest.raises(ValueError, match="must be one token"):
        label_word_ids(bert_tok, (" terrible", " supercalifragilistic"))


@pytest.mark.parametrize("style", ["bert", "roberta"])
def test_encode_mask_position_and_template(style, bert_tok, roberta_tok) -> None:
    tok = bert_tok if style == "bert" else roberta_tok
    batch = pad(encode(tok, ["a great movie", "a terrible film , it was terrible"], [1, 0], max_len=64),
                tok.pad_token_id)
    for i in range(2):
        row = batch["input_ids"][i]
        pos = int(batch["mask_pos"][i])
        assert row[pos] == tok.mask_token_id
        assert (row == tok.mask_token_id).sum() == 1
        assert row[0] == tok.cls_token_id and row[int(batch["attention_mask"][i].sum()) - 1] == tok.sep_token_id
        after = tok.convert_ids_to_tokens(row[pos + 1:pos + 2].tolist())[0]
        assert after in (".", "Ġ.")
        before = tok.convert_ids_to_tokens(row[pos - 1:pos].tolist())[0]
        assert before in ("was", "Ġwas")  # no stray space token before the mask
    # Joint tokenisation of the filled template agrees with the part-wise one.
    joint = tok("a great movie It was " + tok.mask_token + ".")["input_ids"]  # "." its own token (LM-BFF)
    assert batch["input_ids"][0, :len(joint)].tolist() == joint
    assert batch["labels"].tolist() == [1, 0]
    assert word_ids(batch).tolist() == [label_word_ids(tok)] * 2


def test_truncation_keeps_the_mask(bert_tok) -> None:
    batch = pad(encode(bert_tok, ["awful " * 300, "ok"], max_len=24))
    assert batch["input_ids"].shape == (2, 24)
    assert int(batch["mask_pos"][0]) == 24 - 3  # [MASK] . [SEP] at the end of the full row
    assert batch["input_ids"][0, 21] == bert_tok.mask_token_id
    assert "labels" not in batch


def _eval_mlm(name: str):
    bb = backbones.load(name, head="mlm")
    bb.model.eval()
    return bb


@pytest.mark.parametrize("name", ["tiny-bert", "tiny-roberta", "tiny-distilbert"])
def test_logits_are_full_mlm_scores_at_the_mask(name) -> None:
    obj = objectives.get("prompt")
    bb = _eval_mlm(name)
    batch = obj.synthetic_batch(bb, 4, 16, seed=1)
    rows = torch.arange(4)
    assert (batch["input_ids"][rows, batch["mask_pos"]] == bb.config.vocab_size - 1).all()
    assert (batch["attention_mask"][rows, batch["mask_pos"]] == 1).all()
    with torch.no_grad():
        full = bb.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        got = obj.logits(bb.model, batch)
    assert word_ids(batch).tolist() == [[bb.config.vocab_size - 3, bb.config.vocab_size - 2]] * 4
    want = full[rows, batch["mask_pos"]][:, [bb.config.vocab_size - 3, bb.config.vocab_size - 2]]
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    loss = obj.loss(bb.model, batch)
    assert loss.shape == () and torch.isfinite(loss)


def test_other_modules_use_their_own_logits() -> None:
    """A module that is no transformers MLM model (e.g. a side network) is called as is."""
    obj = Prompt()

    class PerPosition(torch.nn.Module):
        def forward(self, input_ids, attention_mask):
            return torch.nn.functional.one_hot(input_ids, 10).float()

    batch = {"input_ids": torch.tensor([[1, 7, 2], [1, 3, 2]]), "attention_mask": torch.ones(2, 3),
             "mask_pos": torch.tensor([1, 1]), "label_word_0": torch.tensor([3, 3]),
             "label_word_1": torch.tensor([7, 7])}
    assert obj.logits(PerPosition(), batch).tolist() == [[0.0, 1.0], [1.0, 0.0]]


def test_minilm_is_flagged_untrained_head_and_uses_tokenizer_ids(bert_tok) -> None:
    obj = objectives.get("prompt")
    bb = backbones.load("minilm-l6", head="mlm")
    assert obj.notes(bb) == {"mlm_head_untrained": True}
    assert obj.notes(backbones.load("tiny-bert", head="mlm")) == {}
    batch = obj.synthetic_batch(bb, 3, 12)
    assert (batch["input_ids"][torch.arange(3), batch["mask_pos"]] == bert_tok.mask_token_id).all()
    assert word_ids(batch)[0].tolist() == label_word_ids(bert_tok)


def test_prompt_is_registered_lazily() -> None:
    obj = objectives.get("prompt")
    assert obj.head == "mlm" and obj.name == "prompt"


def test_rows_go_through_the_sst2_collator(bert_tok) -> None:
    """The SST-2 path pads per batch with ``data.collate``: the scalar columns stay one per row."""
    from spbench.data import collate

    rows = encode(bert_tok, ["a great movie", "bad"], [1, 0], max_len=32)
    batch = collate(rows, bert_tok.pad_token_id)
    want = pad(rows, bert_tok.pad_token_id)
    for key in ("input_ids", "attention_mask", "mask_pos", "labels", "label_word_0", "label_word_1"):
        assert torch.equal(batch[key], want[key]), key
    bb = backbones.load("minilm-l6", head="mlm")
    assert objectives.get("prompt").logits(bb.model, batch).shape == (2, 2)


def test_mlm_head_warmup_trains_only_the_untied_head() -> None:
    from spbench.objectives.prompt import warmup_mlm_head

    bb = backbones.load("minilm-l6", head="mlm")
    model = bb.model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    losses = warmup_mlm_head(bb, ["a great movie", "a terrible film", "it was fine", "not good"] * 4,
                             steps=3, batch_size=8, mask_prob=0.5, lr=1e-2)
    assert len(losses) == 3 and all(l == l and l > 0 for l in losses)
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("cls.predictions.") for k in changed), changed
    assert "cls.predictions.decoder.weight" not in changed  # tied to the input embeddings: frozen
    assert all(p.requires_grad for p in model.parameters())  # left as it found them
