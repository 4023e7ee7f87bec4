"""Training loop: evaluation math, budgets, seeded determinism, real learning on a toy task,
NaN handling, clipping, best-checkpoint restore, and one SST-2 case end to end."""

from __future__ import annotations

from typing import Any

import math
import random
from pathlib import Path

import pytest
import torch

from spbench import backbones, methods, objectives
from spbench.methods.base import NO_HOOKS
from spbench.train import Budget, ClipHooks, binary_scores, evaluate, fit, lr_schedule

CLS = objectives.get("classification")


def toy_rows(n: int, seed: int) -> list[dict]:
    """A separable task for tiny-bert (vocab 1000): positives draw tokens from 500-999,
    negatives from 5-499; lengths vary so padding is exercised."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = i % 2
        lo, hi = (500, 999) if label else (5, 499)
        rows.append({"input_ids": [101] + [rng.randint(lo, hi) for _ in range(rng.randint(3, 12))],
                     "labels": label})
    rng.shuffle(rows)
    return rows


def tiny(method: str = "full_ft", **hp):
    m = methods.get(method)(**hp)
    return m, m.prepare(backbones.load("tiny-bert"))


def test_binary_scores_on_known_predictions() -> None:
    # TP=2, FP=1, FN=1, TN=1: accuracy 3/5, F1 = 2*2 / (2*2 + 1 + 1)
    s = binary_scores([1, 1, 0, 0, 1], [1, 0, 0, 1, 1])
    assert s["accuracy"] == pytest.approx(0.6) and s["f1"] == pytest.approx(4 / 6)
    assert binary_scores([0, 0], [0, 0]) == {"accuracy": 1.0, "f1": 0.0}  # no positive anywhere
    assert binary_scores([1, 1, 1, 1], [1, 0, 0, 0])["f1"] == pytest.approx(2 / 5)  # P=1/4, R=1
    with pytest.raises(ValueError):
        binary_scores([1], [1, 0])


def test_evaluate_uses_argmax_and_restores_train_mode() -> None:
    class Fixed(torch.nn.Module):  # "logits" favour class 1 exactly when the first token is 9
        def forward(self, input_ids, attention_mask):
            first = (input_ids[:, 0] == 9).float()
            return torch.stack([1 - first, first], dim=-1)

    model = Fixed().train()
    rows = [{"input_ids": [9, 1], "labels": 1}, {"input_ids": [2], "labels": 1}, {"input_ids": [3, 3, 3], "labels": 0}]
    assert evaluate(model, CLS, rows, batch_size=2) == pytest.approx({"accuracy": 2 / 3, "f1": 2 / 3})
    assert model.training


def test_budget_parsing_and_steps() -> None:
    assert Budget.parse("examples=100").total_steps(1000, 32) == 4
    assert Budget.parse("epochs=0.5").total_steps(100, 10) == 5
    assert Budget.parse("steps=7").total_steps(10, 32) == 7
    assert str(Budget.parse("epochs=2")) == "epochs=2.0"
    for bad in ("examples", "minutes=3", "steps=-1", "steps=x", "epochs=0"):
        with pytest.raises(ValueError):
            Budget.parse(bad)


def test_same_seed_same_loss_curve() -> None:
    rows = toy_rows(64, 0)
    curves = []
    for seed in (3, 3, 4):
        m, model = tiny("lora", lr=1e-3)
        curves.append(fit(m, model, CLS, rows, None, Budget(steps=8), batch_size=8, seed=seed,
                          measure_peak=False).losses)
    assert len(curves[0]) == 8 and all(map(math.isfinite, curves[0]))
    assert curves[0] == curves[1]  # bit for bit: seeds, dropout and data order all fixed
    assert curves[0] != curves[2]


@pytest.mark.parametrize("method", ["lora", "lst", "mezo"])
def test_scoring_validation_at_the_rungs_leaves_the_run_unchanged(method: str) -> None:
    """A pruned search scores validation at its rungs; a run that goes on past them must be the run
    trained without them (same losses, same dev predictions), so a seed study may take it over
    (``spbench sweep --best-from``). Dropout, MeZO's perturbations and the data order all draw
    from seeded generators that evaluation must not touch."""
    rows, val, dev = toy_rows(64, 0), toy_rows(16, 1), toy_rows(16, 2)
    runs = []
    for report_at in ((), (2, 4, 8)):
        m, model = tiny(method)
        seen: list[int] = []
        res = fit(m, model, CLS, rows, dev, Budget(steps=8), batch_size=8, seed=5, measure_peak=False,
                  val_rows=val, report_at=report_at, on_report=lambda step, _: seen.append(step) or "")
        assert seen == list(report_at)
        runs.append(res)
    assert runs[0].losses == runs[1].losses and len(runs[0].losses) == 8
    assert runs[0].predictions == runs[1].predictions and runs[0].accuracy == runs[1].accuracy


def test_learns_a_separable_toy_task() -> None:
    train, dev = toy_rows(256, 0), toy_rows(128, 1)
    m, model = tiny("full_ft", lr=2e-3)
    before = evaluate(model, CLS, dev)
    res = fit(m, model, CLS, train, dev, Budget(epochs=4), batch_size=16, seed=0)
    assert res.status == "ok" and res.train_steps == 64 and res.train_examples == 1024
    early, late = sum(res.losses[:8]) / 8, sum(res.losses[-8:]) / 8
    assert late < 0.5 * early, (early, late)
    assert res.accuracy >= 0.9 and res.f1 >= 0.9, (before, res.accuracy, res.f1)
    assert res.peak_bytes > sum(p.numel() * 4 for p in model.parameters())  # params + grads + states
    assert res.train_time_s > 0


def test_lr_schedule_is_constant_without_backward() -> None:
    full = methods.get("full_ft")

    class NoBackward(full):
        uses_backward = False

    class Declared(full):
        lr_schedule = "constant"

    class Bad(full):
        lr_schedule = "cosine"

    assert lr_schedule(full()) == "linear"
    assert lr_schedule(NoBackward()) == "constant" and lr_schedule(Declared()) == "constant"
    with pytest.raises(ValueError, match="cosine"):
        lr_schedule(Bad())


def test_nan_loss_fails_the_run_with_its_reason() -> None:
    class Poisoned(type(CLS)):
        calls = 0

        def loss(self, model, batch):
            Poisoned.calls += 1
            loss = super().loss(model, batch)
            return loss * float("nan") if Poisoned.calls == 3 else loss

    m, model = tiny()
    res = fit(m, model, Poisoned(), toy_rows(64, 0), toy_rows(8, 1), Budget(steps=10), batch_size=8)
    assert res.status == "failed" and "nan" in res.reason and "step 3" in res.reason
    assert res.train_steps == 3 and res.accuracy is None
    assert "sst2_accuracy" not in res.metrics()


def test_clip_hooks_bound_the_gradient_norm_before_the_update() -> None:
    m, model = tiny()
    params = [p for p in model.parameters() if p.requires_grad]
    from spbench.data import collate

    loss = CLS.loss(model, collate(toy_rows(8, 0))) * 1e4  # a huge gradient
    loss.backward()
    assert torch.nn.utils.get_total_norm([p.grad for p in params]) > 1.0
    with ClipHooks(params, 0.5).phase("optimizer"):
        assert torch.nn.utils.get_total_norm([p.grad for p in params]) == pytest.approx(0.5, rel=1e-4)


class BagOfTokens(torch.nn.Module):
    """Logits = the mean of per-token class scores: learns ``toy_rows`` in a few steps."""

    def __init__(self) -> None:
        super().__init__()
        self.scores = torch.nn.Embedding(1000, 2)
        torch.nn.init.zeros_(self.scores.weight)  # every logit 0: argmax 0, accuracy 0.5

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = attention_mask.unsqueeze(-1).float()
        return (self.scores(input_ids) * mask).sum(1) / mask.sum(1)


def _turncoat(snapshots: dict[int, dict[str, torch.Tensor]]) -> Any:
    """full_ft that learns the toy task for eight steps, then learns it with flipped labels."""

    class Turncoat(methods.get("full_ft")):
        def train_step(self, model, batch, optimizer, objective, hooks=NO_HOOKS):  # type: ignore[no-untyped-def]
            step = len(snapshots) + 1
            if step > 8:
                batch = {**batch, "labels": 1 - batch["labels"]}
            loss = super().train_step(model, batch, optimizer, objective, hooks)
            snapshots[step] = {n: p.detach().clone() for n, p in model.named_parameters()}
            return loss

    return Turncoat(lr=0.1)


def test_eval_every_restores_the_best_checkpoint_by_validation_and_scores_dev_once() -> None:
    """Eight steps learn the toy task, the rest learn it with flipped labels, so later
    evaluations score measurably worse than an earlier one. The best step on the validation
    rows must come back, not the last one; dev is scored once, on the restored parameters."""
    snapshots: dict[int, dict[str, torch.Tensor]] = {}
    train, val, dev = toy_rows(128, 0), toy_rows(64, 1), toy_rows(64, 2)
    model = BagOfTokens()
    res = fit(_turncoat(snapshots), model, CLS, train, dev, Budget(steps=24), batch_size=8, eval_every=4,
              val_rows=val, measure_peak=False, group_by_length=False)  # the fixture's margins hold for this order
    steps = [4, 8, 12, 16, 20, 24]
    assert [e["step"] for e in res.evals] == steps

    def score(step: int, rows: list) -> float:  # each recorded state scored afresh, outside fit
        probe = BagOfTokens()
        probe.load_state_dict(snapshots[step])
        return evaluate(probe, CLS, rows)["accuracy"]

    scores = [score(s, val) for s in steps]
    assert [e["accuracy"] for e in res.evals] == scores  # the evaluations are validation's
    best = max(range(len(steps)), key=lambda i: (scores[i], -i))
    assert 0 < best < len(steps) - 1 and scores[best] > max(scores[best + 1:]) + 0.1, scores  # the fixture bites
    assert res.best_step == steps[best] and res.val_accuracy == scores[best]
    restored = dict(model.named_parameters())
    assert all(torch.equal(restored[n], t) for n, t in snapshots[steps[best]].items()), \
        f"the parameters are not step {steps[best]}'s"
    assert not all(torch.equal(restored[n], t) for n, t in snapshots[24].items()), "the last step's parameters stayed"
    assert res.accuracy == score(steps[best], dev)
    assert res.predictions is not None and len(res.predictions) == len(dev)
    assert sum(p == r["labels"] for p, r in zip(res.predictions, dev)) / len(dev) == res.accuracy


def test_eval_every_never_selects_on_dev_unless_dev_is_the_selection_split() -> None:
    """Validation and dev disagree (dev's labels are flipped): selecting on validation keeps an
    early step; the same run selecting on dev (passed as the selection rows, as
    ``run_accuracy(select_on="dev")`` does) keeps another one. Without selection rows,
    ``eval_every`` is refused rather than falling back to dev."""
    train, val = toy_rows(128, 0), toy_rows(64, 1)
    dev = [{**r, "labels": 1 - r["labels"]} for r in val]
    picked = {}
    for name, rows in (("validation", val), ("dev", dev)):
        res = fit(_turncoat({}), BagOfTokens(), CLS, train, dev, Budget(steps=24), batch_size=8, eval_every=4,
                  val_rows=rows, measure_peak=False, group_by_length=False)
        picked[name] = res.best_step
    assert picked["validation"] != picked["dev"], picked
    with pytest.raises(ValueError, match="val_rows"):
        fit(_turncoat({}), BagOfTokens(), CLS, train, dev, Budget(steps=8), batch_size=8, eval_every=4,
            measure_peak=False)


def test_a_run_predicting_one_class_is_collapsed_not_ok() -> None:
    m, model = tiny("lora", lr=1e-3)

    class Constant(CLS.__class__):
        def logits(self, model, batch):  # type: ignore[no-untyped-def]
            out = super().logits(model, batch)
            return torch.stack([out[:, 0] * 0 - 1, out[:, 1] * 0 + 1], -1)

    res = fit(m, model, Constant(), toy_rows(32, 0), toy_rows(16, 1), Budget(steps=2), batch_size=8,
              measure_peak=False)
    assert res.status == "collapsed" and "class 1 for all 16" in res.reason
    assert res.accuracy is not None  # the figures stay, the status says what they are


@pytest.mark.slow
def test_run_accuracy_end_to_end_on_a_tiny_sst2_folder(tmp_path: Path) -> None:
    from spbench.case import Case
    from spbench.result import Result
    from spbench.train import run_accuracy

    rng = random.Random(0)
    words = {1: ["great", "wonderful", "moving"], 0: ["dull", "awful", "boring"]}
    lines = ["sentence\tlabel"] + [f"a {rng.choice(words[y])} film \t{y}" for y in [0, 1] * 20]
    (tmp_path / "train.tsv").write_text("\n".join(lines) + "\n")
    (tmp_path / "dev.tsv").write_text("\n".join(lines[:9]) + "\n")
    result, res = run_accuracy(Case("lora", "minilm-l6", batch_size=4, seq_len=16), Budget(steps=3), str(tmp_path))
    info = result.to_extra_info()
    # three steps may well leave one class everywhere: "collapsed" keeps the figures
    assert res.status in ("ok", "collapsed") and info["train_steps"] == 3 and info["train_examples"] == 12
    assert (res.status == "collapsed") == (len(set(info["predictions"]["predicted"])) == 1)
    assert 0.0 <= info["sst2_accuracy"] <= 1.0 and info["peak_bytes"] > 0 and 0.0 <= info["val_accuracy"] <= 1.0
    assert info["train_config"]["select_on"] == "validation"
    assert info["train_config"]["validation"]["size"] == 10  # a quarter of a 40-row train split
    assert info["predictions"]["examples"] == 8 and info["predictions"]["labels"] == "01010101"
    assert info["method_config"]["lr"] == 5e-4 and info["train_config"]["budget"] == "steps=3"
    assert info["device"] == "cpu" and info["case_id"] == "lora-minilm-l6-b4-s16"
    from spbench.case import build

    meta = build(result.case, meta=True)
    trained = sum(p.numel() * p.element_size() for p in meta.model.parameters() if p.requires_grad)
    assert trained < info["deploy_bytes"] < trained + 64 * 1024  # the adapters and head, saved
    assert Result.from_extra_info(info) == result  # the JSON round trip keeps every field


def test_progress_bar_shows_loss_and_throughput_only_when_asked(capsys: pytest.CaptureFixture) -> None:
    m, model = tiny("lora", lr=1e-3)
    fit(m, model, CLS, toy_rows(32, 0), None, Budget(steps=2), batch_size=8, measure_peak=False)
    assert capsys.readouterr().out == ""  # not a terminal: quiet
    fit(m, model, CLS, toy_rows(32, 0), None, Budget(steps=2), batch_size=8, measure_peak=False,
        progress=True, label="toy")
    out = capsys.readouterr().out
    assert "toy" in out and "2/2" in out and "ex/s" in out and "loss 0." in out


@pytest.mark.slow
def test_multi_stage_run_reports_each_stage(tmp_path: Path) -> None:
    from spbench.case import Case
    from spbench.train import run_accuracy

    lines = ["sentence\tlabel"] + [f"a {w} film \t{y}" for y, w in [(0, "dull"), (1, "great")] * 8]
    (tmp_path / "train.tsv").write_text("\n".join(lines) + "\n")
    (tmp_path / "dev.tsv").write_text("\n".join(lines[:5]) + "\n")
    result, res = run_accuracy(Case("mezo_lst", "minilm-l6", batch_size=4, seq_len=16), Budget(steps=4), str(tmp_path))
    info = result.to_extra_info()
    assert res.status in ("ok", "collapsed"), res.reason
    stages = info["stages"]
    assert [s["method"] for s in stages] == ["mezo", "lst"]
    # disjoint parts of the 12 rows left after the validation split: stage 2 sees none of stage 1's
    assert [(s["train_rows_from"], s["train_rows"]) for s in stages] == [(0, 6), (6, 6)]
    assert all(s["train_steps"] > 0 and s["peak_bytes"] > 0 for s in stages)
    assert info["train_steps"] == sum(s["train_steps"] for s in stages)
    assert info["peak_bytes"] == max(s["peak_bytes"] for s in stages)
    assert info["train_time_s"] == pytest.approx(sum(s["train_time_s"] for s in stages))


def test_length_grouped_batches_pad_less_and_keep_every_row() -> None:
    from itertools import islice

    from spbench.train import batches

    rng = random.Random(0)
    rows = [{"input_ids": [101] + [7] * rng.randint(1, 60), "labels": i % 2, "row": i} for i in range(640)]

    def epoch(grouped: bool, seed: int = 0) -> list[dict]:
        return list(islice(batches(rows, 16, 0, seed, group_by_length=grouped), 640 // 16))

    plain, grouped = epoch(False), epoch(True)
    for run in (plain, grouped):  # one epoch: every row exactly once
        assert sorted(int(r) for b in run for r in b["row"]) == list(range(640))
    real = sum(len(r["input_ids"]) for r in rows)
    padded = {name: sum(b["input_ids"].numel() for b in run) for name, run in (("plain", plain), ("grouped", grouped))}
    assert padded["grouped"] < 0.7 * padded["plain"] and padded["grouped"] >= real
    assert [b["row"].tolist() for b in grouped] == [b["row"].tolist() for b in epoch(True)]  # seeded
    assert [b["row"].tolist() for b in grouped] != [b["row"].tolist() for b in epoch(True, seed=1)]


def test_deadline_stops_a_run_that_would_not_finish() -> None:
    import time

    from spbench import train

    m, model = tiny()
    res = fit(m, model, CLS, toy_rows(64, 0), toy_rows(8, 1), Budget(steps=10), batch_size=8,
              deadline=time.time() - 1)
    assert res.status == "skipped" and "step 1 of 10" in res.reason
    assert res.train_steps == 1 and res.accuracy is None and res.peak_bytes is None
    # The projection after PROJECT_AFTER steps, from the pace of steps 2 on (the first is
    # CUDA's warm-up): 10 ms each -> 1000 steps need 10 s.
    now, n = time.time(), train.PROJECT_AFTER
    since_first = 0.01 * (n - 1)
    assert "10.0 ms each" in train._past_deadline(now + 5, n, 1000, since_first)
    assert "would take 10 s" in train._past_deadline(now + 5, n, 1000, since_first)
    assert train._past_deadline(now + 20, n, 1000, since_first) == ""
    assert train._past_deadline(now + 5, n + 1, 1000, since_first) == ""  # judged once
    assert train._past_deadline(None, 5, 10, 99.0) == ""
    m, model = tiny()
    ok = fit(m, model, CLS, toy_rows(64, 0), toy_rows(8, 1), Budget(steps=3), batch_size=8,
             deadline=time.time() + 600, measure_peak=False)
    assert ok.status in ("ok", "collapsed") and ok.train_steps == 3 and ok.accuracy is not None  # not stopped


def test_training_energy_counts_steps_not_evaluation(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fake counter that advances 1 J per read: the run's figure leaves out the readings
    around each evaluation, and the run says what counted it; without a counter it is absent."""
    from spbench import train
    from spbench.measure.energy import Counter, EnergyMeter

    ticks = iter(range(10**6))
    counter = Counter("fake counter", lambda: [next(ticks)], [2**64], 1.0)
    monkeypatch.setattr(train, "meter_for", lambda device: (EnergyMeter(counter, poll_s=3600), counter.source))
    m, model = tiny()
    res = fit(m, model, CLS, toy_rows(32, 0), None, Budget(steps=4), batch_size=8, eval_every=2,
              val_rows=toy_rows(8, 1), measure_peak=False)
    # reads: start (0), eval 1 before/after (1, 2), eval 2 (3, 4), the end (5): 5 J, 2 J of them evaluating
    assert res.metrics()["train_energy_j"] == pytest.approx(3.0)
    assert res.energy == "fake counter"
    monkeypatch.setattr(train, "meter_for", lambda device: (None, "not measured: no RAPL here"))
    res = fit(m, model, CLS, toy_rows(32, 0), None, Budget(steps=2), batch_size=8, measure_peak=False)
    assert "train_energy_j" not in res.metrics() and res.energy == "not measured: no RAPL here"


def test_team_side_lora_trains_as_lora_blocks() -> None:
    """The team's Side-LoRA has lora_blocks' gradients (tests/test_methods.py); trained from the
    same seed on the same rows it follows the same loss curve (float32 rounding apart) and ends
    with the same predictions, so the reference's accuracy row of lora_blocks stands for it
    (``spbench.reporting.claims.SAME_TRAINING``); its time and memory are measured on their own.
    (The slides' detached form has other gradients: tests/test_methods.py.)"""
    train, dev = toy_rows(256, 0), toy_rows(128, 1)
    runs = []
    for method in ("lora_blocks", "side_lora_team"):
        torch.manual_seed(0)
        m, model = tiny(method, lr=5e-3)
        runs.append(fit(m, model, CLS, train, dev, Budget(epochs=16), batch_size=16, seed=0, measure_peak=False))
    lora, team = runs
    assert lora.status == team.status == "ok" and len(lora.losses) == len(team.losses) == 256
    assert sum(lora.losses[-8:]) / 8 < 0.8 * lora.losses[0]  # it learned: the curves compared are not flat
    assert lora.losses == pytest.approx(team.losses, rel=1e-3, abs=1e-5)
    assert lora.predictions == team.predictions and lora.accuracy == team.accuracy
