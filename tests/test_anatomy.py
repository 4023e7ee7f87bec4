"""The anatomy table: every declared path exists on each family's tiny model, the MLM head it
names computes the model's own logits, the head is what the methods train, and no other module
of the package spells a family's module names."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import torch
from torch import nn

from spbench import anatomy, backbones, data
from spbench.errors import InputError

TINY = ["tiny-bert", "tiny-roberta", "tiny-distilbert"]
PACKAGE = Path(__file__).resolve().parent.parent / "spbench"


@pytest.mark.parametrize("name", TINY)
def test_every_declared_path_is_there(name: str) -> None:
    model = backbones.load(name).model
    parts = anatomy.of(model)
    layers = anatomy.encoder_layers(model)
    assert isinstance(layers, nn.ModuleList) and len(layers) == model.config.num_hidden_layers == 2
    assert model.get_submodule(anatomy.layers_name(model)) is layers
    assert isinstance(model.base_model.get_submodule(parts.embeddings).word_embeddings, nn.Embedding)
    d, ffn = model.config.hidden_size, anatomy.ffn_width(model.config)
    for layer, attn in zip(layers, anatomy.self_attentions(model)):
        found = parts.parts(layer)
        shapes = {key: tuple(m.weight.shape) for key, m in found.items()}
        assert shapes == {"q": (d, d), "k": (d, d), "v": (d, d), "o": (d, d), "ln1": (d,),
                          "fi": (ffn, d), "fo": (d, ffn), "ln2": (d,)}
        assert getattr(attn, parts.key) is found["k"] and getattr(attn, parts.value) is found["v"]
    assert anatomy.mlm_head(model) is None  # a classification model has no MLM head


@pytest.mark.parametrize("name", TINY)
def test_the_mlm_head_computes_the_models_own_logits(name: str) -> None:
    model = backbones.load(name, head="mlm").model.eval()
    ids = torch.randint(5, 900, (2, 7), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        hidden = model.base_model(input_ids=ids).last_hidden_state
        assert torch.equal(anatomy.mlm_head(model)(hidden), model(input_ids=ids).logits)
    assert anatomy.head_module_names(model)  # the MLM head is the masked-LM model's head
    assert all(not n.startswith(model.base_model_prefix) for n in anatomy.head_module_names(model))


def test_head_module_names_adds_the_pooler_only_where_the_head_reads_it() -> None:
    assert anatomy.head_module_names(backbones.load("tiny-bert").model) == ["classifier", "bert.pooler"]
    assert anatomy.head_module_names(backbones.load("tiny-roberta").model) == ["classifier"]
    assert anatomy.head_module_names(backbones.load("tiny-distilbert").model) == ["pre_classifier", "classifier"]
    assert anatomy.head_module_names(backbones.load("tiny-bert", head="mlm").model) == ["cls"]
    assert anatomy.head_module_names(backbones.load("tiny-distilbert", head="mlm").model) == [
        "vocab_transform", "vocab_layer_norm", "vocab_projector"]
    assert anatomy.head_module_names(backbones.load("tiny-bert", head="base").model) == []


def test_query_and_value_agree_with_peft_and_ia3_targets_the_paper_linears() -> None:
    from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as PEFT_TARGETS

    from spbench.methods.ia3 import targets

    for model_type in ("bert", "roberta", "xlm-roberta"):
        found = anatomy.ANATOMIES[model_type]
        assert [found.query, found.value] == list(PEFT_TARGETS[model_type])
    for name in TINY:
        model = backbones.load(name).model
        target, feedforward = targets(model)
        hit = [n for n, _ in model.named_modules() if re.fullmatch(target, n)]
        ffn = [n for n, _ in model.named_modules() if re.fullmatch(feedforward, n)]
        assert len(hit) == 3 * 2 and len(ffn) == 2 and set(ffn) < set(hit)
        assert all(isinstance(model.get_submodule(n), nn.Linear) for n in hit)


def test_an_unknown_family_is_a_one_line_input_error() -> None:
    from transformers import GPT2Config

    with pytest.raises(InputError, match="no anatomy for model type 'gpt2'.*knows bert, distilbert"):
        anatomy.of(GPT2Config())
    assert anatomy.find(nn.Linear(2, 2)) is None and anatomy.mlm_head(nn.Linear(2, 2)) is None
    assert anatomy.position_offset(GPT2Config()) == 0


def test_position_offset_bounds_the_sequence_length() -> None:
    assert data.max_seq_len(backbones.config_of("roberta-base")) == 512  # 514 positions, 2 used up
    assert data.max_seq_len(backbones.config_of("distilbert-base")) == 512


# Module names of the families (in code, not in docstrings) belong in spbench/anatomy.py only.
SPELLINGS = re.compile(r"\b(q_lin|k_lin|v_lin|out_lin|lin1|lin2|sa_layer_norm|output_layer_norm|vocab_projector|"
                       r"vocab_transform|lm_head|pre_classifier|intermediate\.dense|encoder\.layer|"
                       r"transformer\.layer|attention\.self|output\.dense|pooler)\b")


def _code_strings(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    return [node.value for node in ast.walk(tree) if isinstance(node, ast.Constant)
            and isinstance(node.value, str) and id(node) not in docstrings]


def test_only_the_anatomy_spells_a_familys_module_names() -> None:
    assert SPELLINGS.search(str(_code_strings(PACKAGE / "anatomy.py")))  # the scan sees them there
    offenders = {str(path.relative_to(PACKAGE)): hits for path in sorted(PACKAGE.rglob("*.py"))
                 if path.name != "anatomy.py"
                 and (hits := sorted({m.group(0) for s in _code_strings(path) for m in SPELLINGS.finditer(s)}))}
    assert not offenders, f"family module names outside spbench/anatomy.py: {offenders}"
