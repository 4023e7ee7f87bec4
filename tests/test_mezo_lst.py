"""MeZO -> LST: the stage-1 checkpoint round trip is bit-identical, stage 2 sits on the stage-1
weights, and a benchmark case measures stage 2 (stage 1 being the ``mezo`` case)."""

from __future__ import annotations

import pytest
import torch

from spbench import backbones, objectives
from spbench.case import Case
from spbench.methods import get
from spbench.methods.mezo import MeZO
from spbench.methods.mezo_lst import MeZOLST, load_stage1, save_stage1


def _stage1(name: str, trainable: str = "all", steps: int = 3):
    """A few large MeZO steps, so the weights surely differ from the fresh ones."""
    bb = backbones.load(name, head="mlm")
    obj = objectives.get("prompt")
    method = MeZO(lr=1e-1, trainable=trainable)
    model = method.prepare(bb)
    opt = method.make_optimizer(model)
    batch = obj.synthetic_batch(bb, 4, 12)
    for _ in range(steps):
        method.train_step(model, batch, opt, obj)
    model.eval()
    return model, batch


def _logits(model, batch):
    with torch.no_grad():
        return objectives.get("prompt").logits(model, batch)


@pytest.mark.parametrize("name", ["tiny-bert", "tiny-roberta"])
def test_checkpoint_round_trip_is_bit_identical(name, tmp_path) -> None:
    model, batch = _stage1(name)
    path = save_stage1(model, str(tmp_path))
    reloaded = load_stage1(name, path, head="mlm").model.eval()
    fresh = backbones.load(name, head="mlm").model.eval()
    assert torch.equal(_logits(reloaded, batch), _logits(model, batch))
    assert not torch.equal(_logits(fresh, batch), _logits(model, batch))  # the weights came from the file
    for (key, a), (_, b) in zip(model.state_dict().items(), reloaded.state_dict().items()):
        assert torch.equal(a, b), key


def test_classification_head_gets_the_stage1_encoder(tmp_path) -> None:
    model, batch = _stage1("tiny-bert")
    path = save_stage1(model, str(tmp_path))
    clf = load_stage1("tiny-bert", path, head="classification").model.eval()
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    with torch.no_grad():
        want = model.base_model(**inputs).last_hidden_state
        got = clf.base_model(**inputs).last_hidden_state
    assert torch.equal(got, want)


def test_mezo_lora_is_merged_before_saving(tmp_path) -> None:
    model, batch = _stage1("tiny-roberta", trainable="lora")
    before = _logits(model, batch)
    path = save_stage1(model, str(tmp_path))
    reloaded = load_stage1("tiny-roberta", path, head="mlm").model.eval()
    assert not any("lora" in k for k in reloaded.state_dict())
    torch.testing.assert_close(_logits(reloaded, batch), before, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("stage2", ["classification", "prompt"])
def test_stages_train_mezo_then_lst_on_its_weights(stage2, tmp_path) -> None:
    method = MeZOLST(stage2=stage2, checkpoint_dir=str(tmp_path), mezo_share=0.25)
    bb = backbones.load("tiny-bert", head=objectives.get(stage2).head)
    stages = iter(method.stages(bb, method.prepare(bb), stage2))
    first = next(stages)
    assert first.method.name == "mezo" and first.objective == "prompt" and first.share == 0.25
    assert not first.method.uses_backward
    with torch.no_grad():  # stands in for training: the stage-1 weights move
        for p in first.model.parameters():
            p.add_(0.01)
    trained = {k: v.clone() for k, v in first.model.base_model.state_dict().items()}
    second = next(stages)
    assert second.method.name == "lst" and second.objective == stage2 and second.share == 0.75
    assert (tmp_path / "stage1.safetensors").is_file()
    side_backbone = second.model.backbone.base_model.state_dict()
    for key, value in trained.items():
        assert torch.equal(side_backbone[key], value), key
    assert not any(p.requires_grad for p in second.model.backbone.parameters())
    with pytest.raises(StopIteration):
        next(stages)


def test_benchmark_case_is_stage2() -> None:
    bb = backbones.load("tiny-bert", head="classification")
    method = get("mezo_lst")()
    model = method.prepare(bb)
    assert type(model).__name__ == type(get("lst")().prepare(backbones.load("tiny-bert"))).__name__
    assert method.uses_backward


def test_stage2_step_trains_only_the_side_network() -> None:
    from spbench.measure.predict import predict

    metrics, built = predict(Case("mezo_lst", "tiny-bert", 4, 16))
    lst, _ = predict(Case("lst", "tiny-bert", 4, 16))
    assert metrics["predicted_cuda_peak_bytes"] == lst["predicted_cuda_peak_bytes"]
    assert metrics["params_trainable"] == lst["params_trainable"] < metrics["params_total"]


@pytest.fixture(scope="module")
def tiny_with_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A 2-layer BERT (d=32) with minilm-l6's tokenizer, as a local checkpoint."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    root = tmp_path_factory.mktemp("tiny") / "tiny"
    tokenizer = AutoTokenizer.from_pretrained(backbones.minilm_path())
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    BertForSequenceClassification(config).save_pretrained(root)
    tokenizer.save_pretrained(root)
    return str(root)


@pytest.mark.parametrize("budget, share, expected", [
    ("examples=1000", "0.25", [("examples", 250), ("examples", 750)]),
    ("steps=5", "0.5", [("steps", 2), ("steps", 3)]),  # the stages add up to the whole budget
    ("steps=7", "0.3", [("steps", 2), ("steps", 5)]),
    ("epochs=0.5", "0.25", [("examples", 2), ("examples", 6)]),  # an epoch: the 16 rows trained on
])
def test_stages_split_the_budget_and_the_rows_by_mezo_share(budget: str, share: str, expected: list,
                                                            tiny_with_tokenizer: str, tmp_path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Stage 1 gets ``mezo_share`` of the budget and of the training rows, stage 2 the rest of
    both (never a step more or less than the whole). Training itself is replaced by a stand-in
    that records what each stage was given."""
    import re

    from transformers import AutoTokenizer

    from spbench import train

    lines = ["sentence\tlabel"] + [f"a {w} film {i}\t{y}" for i, (y, w) in enumerate([(0, "dull"), (1, "great")] * 10)]
    (tmp_path / "train.tsv").write_text("\n".join(lines) + "\n")  # 20 rows: 4 for validation, 16 trained on
    (tmp_path / "dev.tsv").write_text("\n".join(lines[:5]) + "\n")
    given: list[tuple[str, int, int]] = []
    seen: list[set[str]] = []  # the rows' numbers, whatever each stage's objective made of the sentence
    tokenizer = AutoTokenizer.from_pretrained(tiny_with_tokenizer)

    def stand_in(method, model, objective, train_rows, dev_rows, budget, **kw):
        kind = "steps" if budget.steps is not None else "examples"
        given.append((kind, getattr(budget, kind), len(train_rows)))
        seen.append({re.search(r"film (\d+)", tokenizer.decode(row["input_ids"])).group(1) for row in train_rows})
        steps = budget.total_steps(len(train_rows), kw["batch_size"])
        return train.TrainResult(accuracy=0.5, f1=0.5, val_accuracy=0.5, train_steps=steps,
                                 predictions=[0] * len(dev_rows) if dev_rows else None)

    monkeypatch.setattr(train, "fit", stand_in)
    case = Case("mezo_lst", tiny_with_tokenizer, 4, 16, overrides=(("mezo_share", share),
                                                              ("checkpoint_dir", str(tmp_path / "ck"))))
    result, _ = train.run_accuracy(case, train.Budget.parse(budget), str(tmp_path), validation_size=4)
    assert [(kind, amount) for kind, amount, _ in given] == expected
    rows = [n for _, _, n in given]
    assert sum(rows) == 16 and rows[0] == max(1, round(float(share) * 16))
    assert [s["train_rows"] for s in result.stages] == rows
    assert not seen[0] & seen[1] and len(seen[0] | seen[1]) == 16  # disjoint rows, every one trained on
