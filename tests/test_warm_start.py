"""MeZO's linear-probe warm start and the accuracy run's flags on a backbone without a pretrained
masked-LM head: the head is set from a logistic regression on frozen features, training starts
from it, and prompt-objective results on such a backbone say the head is untrained."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from spbench import backbones, methods, objectives
from spbench.train import Budget, evaluate, fit

CLS = objectives.get("classification")


def rows(n: int, seed: int) -> list[dict]:
    """Token 5 marks class 1, token 6 class 0, among random filler tokens."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        y = i % 2
        ids = [101] + [rng.randint(10, 60) for _ in range(rng.randint(2, 8))] + [5 if y else 6] * 3 + [102]
        out.append({"input_ids": ids, "labels": y})
    return out


def test_the_probe_sets_the_head_to_the_logistic_regression_it_fits() -> None:
    torch.manual_seed(0)
    model = backbones.load("tiny-bert", head="classification").model
    train = rows(256, 0)
    mezo = methods.get("mezo")(probe_examples=256)
    info = mezo.warm_start(model, CLS, train, seed=0)
    assert info["head"] == "linear probe" and info["examples"] == 256
    # the model's own argmax now is the probe's decision: the same accuracy on the probe's rows
    assert evaluate(model, CLS, train)["accuracy"] == pytest.approx(info["train_accuracy"], abs=1e-9)
    head = model.classifier
    assert torch.allclose(head.weight[0], -head.weight[1]) and torch.allclose(head.bias[0], -head.bias[1])
    assert methods.get("mezo")(warm_start_head="none").warm_start(model, CLS, train) == {}
    prompt = objectives.get("prompt")
    assert mezo.warm_start(model, prompt, train) == {}  # auto: only under the classification objective


def test_fit_records_where_mezo_started_so_its_gain_is_measured() -> None:
    torch.manual_seed(0)
    mezo = methods.get("mezo")(lr=1e-4, probe_examples=128)
    model = mezo.prepare(backbones.load("tiny-bert", head="classification"))
    res = fit(mezo, model, CLS, rows(128, 0), rows(32, 2), Budget(steps=3), batch_size=8, val_rows=rows(32, 1),
              measure_peak=False)
    start = res.warm_start
    assert {"val_accuracy", "dev_accuracy", "train_accuracy"} <= start.keys()
    assert start["val_accuracy"] == pytest.approx(evaluate(_probed(), CLS, rows(32, 1))["accuracy"])


def _probed() -> torch.nn.Module:
    """The same model and probe as above, before any MeZO step."""
    torch.manual_seed(0)
    mezo = methods.get("mezo")(lr=1e-4, probe_examples=128)
    model = mezo.prepare(backbones.load("tiny-bert", head="classification"))
    torch.manual_seed(0)  # fit seeds everything before the warm start
    mezo.warm_start(model, CLS, rows(128, 0), seed=0)
    return model


def _sst2(tmp_path: Path) -> str:
    lines = ["sentence\tlabel"] + [f"a {w} film number {i}\t{y}" for i, (y, w) in
                                   enumerate([(0, "dull"), (1, "great")] * 16)]
    (tmp_path / "train.tsv").write_text("\n".join(lines) + "\n")
    (tmp_path / "dev.tsv").write_text("\n".join(lines[:9]) + "\n")
    return str(tmp_path)


def test_a_prompt_objective_run_on_minilm_says_its_mlm_head_is_untrained(tmp_path: Path) -> None:
    from spbench.case import Case
    from spbench.train import run_accuracy

    result, _ = run_accuracy(Case("mezo", "minilm-l6", batch_size=4, seq_len=16, objective="prompt"), Budget(steps=2),
                             _sst2(tmp_path))
    assert result.notes.get("mlm_head_untrained") is True
    assert "mlm_head_untrained" in result.to_extra_info()


def test_mezo_lst_stage1_learns_offline_and_stage2_sees_other_rows(tmp_path: Path, monkeypatch) -> None:
    """On minilm-l6 (no pretrained MLM head) stage 1 is MeZO on the classification objective
    after the probe; the two stages train on disjoint sentences (each sentence is numbered)."""
    import re

    from spbench import train
    from spbench.case import Case

    seen: list[set[str]] = []
    real_fit = train.fit

    def spy(method, model, objective, train_rows, *args, **kwargs):  # type: ignore[no-untyped-def]
        tok = backbones.load("minilm-l6", head="classification").tokenizer
        seen.append({m for r in train_rows for m in re.findall(r"number (\d+)", tok.decode(r["input_ids"]))})
        return real_fit(method, model, objective, train_rows, *args, **kwargs)

    monkeypatch.setattr(train, "fit", spy)
    result, _ = train.run_accuracy(Case("mezo_lst", "minilm-l6", batch_size=4, seq_len=24), Budget(steps=4),
                                   _sst2(tmp_path))
    stages = result.stages or []
    assert [s["objective"] for s in stages] == ["classification", "classification"]
    assert stages[0]["warm_start"]["head"] == "linear probe"
    assert len(seen) == 2 and seen[0] and seen[1] and not seen[0] & seen[1]
    assert "mlm_head_untrained" not in result.notes
