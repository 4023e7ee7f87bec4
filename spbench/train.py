"""Train and evaluate one method on SST-2: the loop every method goes through.

    res = run_accuracy(Case("lora", "minilm-l6", batch_size=32, seq_len=64), Budget.parse("examples=8000"))

``fit`` runs AdamW (``method.make_optimizer``) with linear warmup then linear decay
(``transformers.get_linear_schedule_with_warmup``; a constant rate for methods without a
backward pass, as in MeZO: ``Method.lr_schedule``), seeds torch, Python and the data order,
clips the gradient norm between backward and the optimizer (a ``StepHooks`` phase, so a method
that overrides ``train_step``, as MeZO does, still gets it; skipped when the method uses no
backward), and stops with status "failed" on a NaN/inf loss rather than report garbage.
``evaluate`` gives accuracy and the F1 of the positive class.

Selection and report are apart (``run_accuracy``): a validation split carved from SST-2 train
(``data.carve_validation``: stratified, seeded, never trained on) is what ``eval_every`` (the
best checkpoint is restored at the end) and a sweep's intermediate reports select on; dev is
scored once, at the end of a finished run, and its per-example predictions are kept, so runs
can be compared paired on the same sentences (``spbench.reporting.stats``). Selecting on dev
takes ``select_on="dev"``, and the result says so. A run whose dev predictions are all one class
has status "collapsed": its figures are kept, but it is not "ok".

Peak memory (``peak_bytes``): after training and evaluation, one more steady-state step
(optimizer state present) on the run's largest batch shape -- batch size x the longest
tokenised training row -- runs under ``spbench.measure.memory.Tracker`` on the CPU (live
tensor bytes; ``max_memory_allocated`` after a reset on CUDA). Model loading is not counted.
"""

from __future__ import annotations

import contextlib
import math
import random
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

from spbench.errors import InputError
from spbench.measure.energy import meter_for
from spbench.methods.base import StepHooks

if TYPE_CHECKING:
    import torch
    from torch import nn

    from spbench.case import Case
    from spbench.methods.base import Method
    from spbench.result import Result
    from spbench.objectives import Objective

# The embedded CPU default (README): about 10 minutes for full_ft on minilm-l6 on 2 cores.
DEFAULT_CPU_BUDGET = "examples=8000"
DEFAULT_BATCH_SIZE = 32
DEFAULT_WARMUP = 0.06  # share of the steps (RoBERTa's GLUE recipe)
DEFAULT_CLIP = 1.0
EVAL_BATCH_SIZE = 64
PROJECT_AFTER = 50  # steps whose pace (the first one aside: CUDA's warm-up) predicts a run's end


@dataclass(frozen=True)
class Budget:
    """How much training: exactly one of ``examples``, ``steps`` or ``epochs``."""

    examples: int | None = None
    steps: int | None = None
    epochs: float | None = None

    def __post_init__(self) -> None:
        given = [v for v in (self.examples, self.steps, self.epochs) if v is not None]
        if len(given) != 1 or not math.isfinite(given[0]) or given[0] <= 0:  # nan <= 0 is False
            raise InputError("a budget is exactly one positive amount: examples=N, steps=N or epochs=X")

    @classmethod
    def parse(cls, text: str) -> "Budget":
        """``"examples=8000"``, ``"steps=250"`` or ``"epochs=0.5"``."""
        key, sep, value = text.partition("=")
        key = key.strip()
        if not sep or key not in ("examples", "steps", "epochs"):
            raise InputError(f"budget {text!r}: write examples=N, steps=N or epochs=X")
        try:
            amount = float(value) if key == "epochs" else int(value)
        except ValueError:
            raise InputError(f"budget {text!r}: {value!r} is not a positive number") from None
        if not math.isfinite(amount) or amount <= 0:
            raise InputError(f"budget {text!r}: {value.strip()!r} is not a positive finite number")
        return cls(**{key: amount})

    def total_steps(self, n_train: int, batch_size: int) -> int:
        if self.steps is not None:
            return self.steps
        examples = self.examples if self.examples is not None else self.epochs * n_train  # type: ignore[operator]
        return max(1, math.ceil(examples / batch_size))

    def __str__(self) -> str:
        for key in ("examples", "steps", "epochs"):
            if getattr(self, key) is not None:
                return f"{key}={getattr(self, key)}"
        return ""


@dataclass
class TrainResult:
    """What a run produced. ``metrics()`` gives the DESIGN.md keys of an accuracy case."""

    status: str = "ok"  # "ok" | "failed" | "skipped" (past ``deadline``) | "pruned" | "collapsed"
    reason: str = ""
    accuracy: float | None = None  # dev (the reported split)
    f1: float | None = None
    val_accuracy: float | None = None  # the selection split, at the end (or where the run stopped)
    predictions: list[int] | None = None  # per dev example, in dev's order
    warm_start: dict[str, Any] = field(default_factory=dict)  # Method.warm_start's account, scored
    train_examples: int = 0
    train_steps: int = 0
    train_time_s: float = 0.0
    peak_bytes: int | None = None
    train_energy_j: float | None = None  # training steps only, as train_time_s (None: no counter)
    energy: str = ""  # what counted it, or why not
    losses: list[float] = field(default_factory=list)
    evals: list[dict[str, float]] = field(default_factory=list)  # {"step", "accuracy", "f1"}
    best_step: int | None = None

    def metrics(self) -> dict[str, Any]:
        out: dict[str, Any] = {"train_examples": self.train_examples, "train_steps": self.train_steps,
                               "train_time_s": self.train_time_s}
        if self.accuracy is not None:
            out["sst2_accuracy"] = self.accuracy
            out["sst2_f1"] = self.f1
        if self.val_accuracy is not None:
            out["val_accuracy"] = self.val_accuracy
        if self.peak_bytes is not None:
            out["peak_bytes"] = self.peak_bytes
        if self.train_energy_j is not None:
            out["train_energy_j"] = self.train_energy_j
        return out


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy

        numpy.random.seed(seed)
    except ImportError:  # numpy is optional for torch
        pass


def batches(rows: Sequence[dict[str, Any]], batch_size: int, pad_id: int, seed: int,
            group_by_length: bool = True) -> Iterator[dict[str, "torch.Tensor"]]:
    """Endless shuffled batches: a fresh order per epoch from a generator seeded once, so the
    data order depends on ``seed`` alone (never on the global RNG the model also uses).

    ``group_by_length``: each epoch's order comes from transformers' ``LengthGroupedSampler``
    (what the Trainer's ``group_by_length`` uses): a random permutation cut into mega-batches
    of up to 50 batches, each sorted by length. A batch is padded to its own longest row, so
    rows of similar length waste almost no compute on padding. Off: a plain permutation.
    """
    import torch

    from spbench.data import collate

    gen = torch.Generator().manual_seed(seed)
    grouped = None
    if group_by_length:
        from transformers.trainer_pt_utils import LengthGroupedSampler

        grouped = LengthGroupedSampler(batch_size, lengths=[len(r["input_ids"]) for r in rows], generator=gen)
    while True:
        order = list(grouped) if grouped is not None else torch.randperm(len(rows), generator=gen).tolist()
        for start in range(0, len(order) - batch_size + 1 if len(order) >= batch_size else 1, batch_size):
            yield collate([rows[i] for i in order[start:start + batch_size]], pad_id)


def binary_scores(predictions: Sequence[int], labels: Sequence[int]) -> dict[str, float]:
    """Accuracy and the F1 of the positive class (label 1): F1 = 2TP / (2TP + FP + FN),
    0 when the model predicts no positive and there is none."""
    if len(predictions) != len(labels) or not labels:
        raise ValueError(f"need as many predictions as labels, and some: {len(predictions)} vs {len(labels)}")
    tp = sum(1 for p, y in zip(predictions, labels) if p == 1 and y == 1)
    fp = sum(1 for p, y in zip(predictions, labels) if p == 1 and y != 1)
    fn = sum(1 for p, y in zip(predictions, labels) if p != 1 and y == 1)
    correct = sum(1 for p, y in zip(predictions, labels) if p == y)
    denom = 2 * tp + fp + fn
    return {"accuracy": correct / len(labels), "f1": 2 * tp / denom if denom else 0.0}


def evaluate(model: "nn.Module", objective: "Objective", rows: Sequence[dict[str, Any]], pad_id: int = 0,
             batch_size: int = EVAL_BATCH_SIZE, device: str = "cpu") -> dict[str, float]:
    """Accuracy and positive-class F1 (argmax of the objective's logits), in eval mode."""
    return binary_scores(predict(model, objective, rows, pad_id, batch_size, device), [int(r["labels"]) for r in rows])


def predict(model: "nn.Module", objective: "Objective", rows: Sequence[dict[str, Any]], pad_id: int = 0,
            batch_size: int = EVAL_BATCH_SIZE, device: str = "cpu") -> list[int]:
    """The predicted class of every row (argmax of the objective's logits), in eval mode."""
    import torch

    from spbench.data import collate

    was_training = model.training
    model.eval()
    predictions: list[int] = []
    try:
        with torch.no_grad():
            for start in range(0, len(rows), batch_size):
                batch = _to(collate(list(rows[start:start + batch_size]), pad_id), device)
                predictions += objective.logits(model, batch).argmax(-1).tolist()
    finally:
        model.train(was_training)
    return predictions


def collapsed(predictions: Sequence[int], labels: Sequence[int]) -> str:
    """Why a run counts as collapsed (every prediction one class while the labels hold both), or ""."""
    if len(set(predictions)) == 1 and len(set(labels)) > 1:
        return f"collapsed: predicts class {predictions[0]} for all {len(predictions)} dev examples"
    return ""


class ClipHooks(StepHooks):
    """Clips the gradient norm as the optimizer phase begins (after backward, before the
    update), whichever ``train_step`` runs."""

    def __init__(self, params: list["torch.Tensor"], max_norm: float | None) -> None:
        self.params = params
        self.max_norm = max_norm

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        if name == "optimizer" and self.max_norm:
            import torch

            torch.nn.utils.clip_grad_norm_(self.params, self.max_norm)
        yield


def fit(method: "Method", model: "nn.Module", objective: "Objective", train_rows: Sequence[dict[str, Any]],
        eval_rows: Sequence[dict[str, Any]] | None, budget: Budget, *, batch_size: int = DEFAULT_BATCH_SIZE,
        seed: int = 0, warmup: float = DEFAULT_WARMUP, clip: float | None = DEFAULT_CLIP,
        eval_every: int = 0, pad_id: int = 0, device: str = "cpu", progress: bool | None = None,
        measure_peak: bool = True, label: str = "", group_by_length: bool = True,
        deadline: float | None = None, val_rows: Sequence[dict[str, Any]] | None = None,
        report_at: Sequence[int] = (), on_report: Callable[[int, dict[str, float]], str] | None = None
        ) -> TrainResult:
    """Train ``model`` (already prepared by ``method``) on tokenised rows, then score ``eval_rows``.

    Args:
        train_rows / eval_rows: rows of ``input_ids`` (unpadded) and ``labels`` (``data.encode_sst2``);
            ``eval_rows`` (dev) are scored once, at the end of a finished run, with their predictions kept.
        budget: examples, steps or epochs; the step count is fixed before training starts.
        warmup: share of the steps with a linearly rising learning rate.
        clip: max gradient norm (None or 0: no clipping).
        eval_every: score ``val_rows`` every N steps and restore the best checkpoint at the end.
        val_rows: the selection rows (validation): what ``eval_every`` and ``report_at`` score.
        report_at: steps at which ``val_rows`` are scored and ``on_report(step, scores)`` is called;
            a non-empty answer stops the run there with status "pruned" and that reason (no dev score).
        progress: a rich progress bar; None shows it only when stdout is a terminal.
        measure_peak: track one extra steady-state step on the largest batch shape afterwards.
        group_by_length: batches of similar lengths (``batches``), so little compute goes to padding.
        deadline: a ``time.time()`` the run must end by (a time budget). After ``PROJECT_AFTER``
            steps the rest is projected from the pace of steps 2 on; a run that would end past it stops
            there, as one still running at the deadline does: status "skipped", no score.
    """
    import torch
    from transformers import get_constant_schedule, get_linear_schedule_with_warmup

    from spbench.methods.base import trainable_parameters

    if not train_rows:
        raise ValueError("no training rows")
    if (eval_every or report_at) and not val_rows:
        raise ValueError("eval_every / report_at select on val_rows: pass the selection rows")
    seed_everything(seed)
    model.to(device)
    model.train()
    result = TrainResult()
    result.warm_start = method.warm_start(model, objective, train_rows, pad_id=pad_id, device=device, seed=seed)
    if result.warm_start:  # where training starts from, so the gain it brings is measured
        for key, rows in (("val_accuracy", val_rows), ("dev_accuracy", eval_rows)):
            if rows:
                result.warm_start[key] = evaluate(model, objective, rows, pad_id, device=device)["accuracy"]
    optimizer = method.make_optimizer(model)
    total = budget.total_steps(len(train_rows), batch_size)
    if lr_schedule(method) == "constant":
        scheduler = get_constant_schedule(optimizer)
    else:
        scheduler = get_linear_schedule_with_warmup(optimizer, int(warmup * total), total)
    hooks = ClipHooks(trainable_parameters(model), clip if method.uses_backward else None)
    best: tuple[float, int, dict[str, torch.Tensor]] | None = None
    reports = set(report_at)
    data = batches(train_rows, batch_size, pad_id, seed, group_by_length)
    meter, result.energy = meter_for(device)
    energy = meter if meter is not None else contextlib.nullcontext()
    started, eval_time, eval_energy = time.perf_counter(), 0.0, 0.0
    with energy, _progress(progress, total, label) as advance:
        for step in range(1, total + 1):
            batch = _to(next(data), device)
            loss = float(method.train_step(model, batch, optimizer, objective, hooks))
            with warnings.catch_warnings():  # MeZO updates without optimizer.step(): expected
                warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)`")
                scheduler.step()
            result.train_steps = step
            result.train_examples += int(batch["labels"].shape[0])
            result.losses.append(loss)
            if not math.isfinite(loss):
                result.status, result.reason = "failed", f"loss became {loss} at step {step}"
                break
            advance(loss, result.train_examples / (time.perf_counter() - started - eval_time))
            if step == 1:
                first_done = time.perf_counter()
            late = _past_deadline(deadline, step, total, time.perf_counter() - first_done)
            if late:
                result.status, result.reason = "skipped", late
                break
            selecting = eval_every and (step % eval_every == 0 or step == total)
            if selecting or step in reports:
                eval_started = time.perf_counter()
                eval_joules = meter.joules() if meter is not None else 0.0
                scores = evaluate(model, objective, val_rows, pad_id, device=device)  # type: ignore[arg-type]
                eval_time += time.perf_counter() - eval_started  # train_time_s is training only
                eval_energy += (meter.joules() - eval_joules) if meter is not None else 0.0
                result.evals.append({"step": step, **scores})
                result.val_accuracy = scores["accuracy"]
                if selecting and (best is None or scores["accuracy"] > best[0]):
                    best = (scores["accuracy"], step, _snapshot(model))
                stop = on_report(step, scores) if on_report is not None and step in reports else ""
                if stop:
                    result.status, result.reason = "pruned", stop
                    break
    result.train_time_s = time.perf_counter() - started - eval_time
    if meter is not None:
        result.train_energy_j = meter.joules() - eval_energy
        meter.counter.close()
    if result.status != "ok":
        return result
    if best is not None:
        model.load_state_dict(best[2], strict=False)
        result.best_step, result.val_accuracy = best[1], best[0]
        best = None  # the snapshot must not sit in the peak measured below
    elif val_rows and (not result.evals or result.evals[-1]["step"] != result.train_steps):
        result.val_accuracy = evaluate(model, objective, val_rows, pad_id, device=device)["accuracy"]
    if eval_rows:
        labels = [int(r["labels"]) for r in eval_rows]
        result.predictions = predict(model, objective, eval_rows, pad_id, device=device)
        scores = binary_scores(result.predictions, labels)
        result.accuracy, result.f1 = scores["accuracy"], scores["f1"]
        why = collapsed(result.predictions, labels)
        if why:
            result.status, result.reason = "collapsed", why
    if measure_peak:
        result.peak_bytes = peak_of_step(method, model, objective, optimizer, hooks,
                                         largest_batch(train_rows, batch_size, pad_id), device)
    return result


def _past_deadline(deadline: float | None, step: int, total: int, since_first: float) -> str:
    """Why the run must stop now for ``deadline`` (empty: it may go on). The pace is that of
    steps 2 .. ``step`` (``since_first`` seconds: the first step pays for CUDA's and the
    allocator's warm-up), eval time included (the budget pays for it too)."""
    if deadline is None or step >= total:
        return ""
    now = time.time()
    if now >= deadline:
        return f"time budget: reached at step {step} of {total}"
    if step == min(PROJECT_AFTER, total - 1) and step > 1:
        pace = since_first / (step - 1)
        if now + pace * (total - step) > deadline:
            return (f"time budget: {total} steps at {1000 * pace:.1f} ms each (steps 2-{step}) would take "
                    f"{pace * total:.0f} s; {deadline - now:.0f} s were left after step {step}")
    return ""


def lr_schedule(method: "Method") -> str:
    """``method.lr_schedule``, checked: "linear" (warmup then decay to 0) or "constant"."""
    schedule = method.lr_schedule
    if schedule not in ("linear", "constant"):
        raise InputError(f"method {method.name!r}: lr_schedule must be 'linear' or 'constant', not {schedule!r}")
    return schedule


def largest_batch(rows: Sequence[dict[str, Any]], batch_size: int, pad_id: int) -> dict[str, "torch.Tensor"]:
    """The run's largest batch shape: the ``batch_size`` longest rows, padded together."""
    from spbench.data import collate

    longest = sorted(range(len(rows)), key=lambda i: -len(rows[i]["input_ids"]))[:batch_size]
    return collate([rows[i] for i in longest], pad_id)


def peak_of_step(method: "Method", model: "nn.Module", objective: "Objective", optimizer: Any,
                 hooks: StepHooks, batch: dict[str, "torch.Tensor"], device: str = "cpu") -> int:
    """Peak bytes of one steady-state step (optimizer state already present) on ``batch``,
    measured as a benchmark step is (``spbench.measure.measured.step_peak``)."""
    from spbench.measure.measured import step_peak

    batch = _to(batch, device)
    step = lambda: method.train_step(model, batch, optimizer, objective, hooks)  # noqa: E731
    return step_peak(step, model, optimizer, list(batch.values()), device)["peak_bytes"]


def _snapshot(model: "nn.Module") -> dict[str, "torch.Tensor"]:
    """A copy of what training changes: the trainable parameters (and buffers)."""
    params = dict(model.named_parameters())
    return {k: v.detach().clone() for k, v in model.state_dict().items()
            if k not in params or params[k].requires_grad}


def _to(batch: dict[str, "torch.Tensor"], device: str) -> dict[str, "torch.Tensor"]:
    return batch if device == "cpu" else {k: v.to(device) for k, v in batch.items()}


@contextlib.contextmanager
def _progress(show: bool | None, total: int, label: str) -> Iterator[Any]:
    """A rich bar with loss and examples/s; a no-op when quiet (not a terminal)."""
    if show is None:
        show = sys.stdout.isatty()
    if not show:
        yield lambda loss, rate: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
        TimeRemainingColumn

    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("loss {task.fields[loss]:.4f}  {task.fields[rate]:.1f} ex/s"),
               TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*columns, transient=False) as bar:
        task = bar.add_task(label or "train", total=total, loss=float("nan"), rate=0.0)
        yield lambda loss, rate: bar.update(task, advance=1, loss=loss, rate=rate)


# --- one accuracy case ------------------------------------------------------------------------

SELECT_ON = ("validation", "dev")


def run_accuracy(case: "Case", budget: Budget | None = None, sst2_dir: str | None = None, *,
                 seed: int = 0, warmup: float = DEFAULT_WARMUP, clip: float | None = DEFAULT_CLIP,
                 eval_every: int = 0, progress: bool | None = None,
                 group_by_length: bool = True, deadline: float | None = None, select_on: str = "validation",
                 validation_size: int | None = None, report_at: Sequence[float] = (),
                 on_report: Callable[[float, dict[str, float]], str] | None = None) -> tuple["Result", TrainResult]:
    """Build ``case`` (``seq_len`` is the max token length), train it on SST-2 train less the
    validation split, select on validation, score dev once. Returns the case's Result (metrics,
    per-example dev predictions, training configuration, stages) and the run.

    A multi-stage method (``Method.stages``) is trained stage by stage, the budget split by
    each stage's ``share``, and each stage on its own share of the training rows (a seeded
    permutation cut in order: stage 2 never sees what stage 1 trained on); the last stage takes
    the rest of both, so the stages add up to the whole budget; its last stage is scored. ``deadline``: as in :func:`fit`, for every stage.

    Args:
        select_on: "validation" (the carved split), or "dev" (selection on the reported split:
            only when asked for, and recorded).
        validation_size: rows carved from train (default ``data.VALIDATION_SIZE``).
        report_at: fractions of the whole budget (e.g. 1/8, 1/4, 1/2, 1) at which the
            validation accuracy is scored and ``on_report(fraction, scores)`` called; a non-empty
            answer stops the run ("pruned", see :func:`fit`).
    """
    import random as _random

    from spbench import objectives
    from spbench.case import build
    from spbench.data import VALIDATION_SIZE, carve_validation, encode_sst2, examples_digest, load_sst2
    from spbench.result import Result

    if select_on not in SELECT_ON:
        raise InputError(f"select_on {select_on!r}: choose validation or dev")
    budget = budget or Budget.parse(DEFAULT_CPU_BUDGET)
    data = load_sst2(sst2_dir)
    train_idx, val_idx, validation = carve_validation(data["train"], validation_size or VALIDATION_SIZE)
    built = build(case, on_device=False)
    tokenizer = built.backbone.tokenizer
    pad_id = int(getattr(tokenizer, "pad_token_id", None) or 0)
    given = budget
    if budget.epochs is not None:  # an epoch is one pass over the rows trained on, whatever the stages
        budget = Budget(examples=max(1, round(budget.epochs * len(train_idx))))
    order = list(train_idx)
    _random.Random(seed).shuffle(order)  # stage parts: disjoint, seeded (one stage: every row)
    encoded: dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]] = {}  # per objective: train, dev
    stages = built.method.stages(built.backbone, built.model, case.objective)
    result = TrainResult()
    spent, used, done_share, granted = 0.0, 0, 0.0, 0
    per_stage: list[dict[str, Any]] = []
    notes = dict(built.notes)
    for stage in stages:
        objective = objectives.get(stage.objective)
        notes.update(objective.notes(built.backbone))
        if stage.objective not in encoded:
            encoded[stage.objective] = (encode_sst2(data["train"], tokenizer, objective, case.seq_len),
                                        encode_sst2(data["dev"], tokenizer, objective, case.seq_len))
        train_all, dev_rows = encoded[stage.objective]
        last = done_share + stage.share >= 1.0 - 1e-9
        take = len(order) - used if last else max(1, round(stage.share * len(order)))
        part = order[used:used + take]
        train_rows = [train_all[i] for i in part]
        val_rows = [train_all[i] for i in val_idx] if select_on == "validation" else dev_rows
        stage_budget = _share(budget, stage.share, granted if last else None)
        granted += stage_budget.steps or stage_budget.examples or 0
        steps = stage_budget.total_steps(len(train_rows), case.batch_size)
        # the budget fractions that fall in this stage, as its own steps
        local = {max(1, math.ceil((f - done_share) / stage.share * steps)): f for f in report_at
                 if done_share < f <= done_share + stage.share + 1e-9}
        offset = result.train_steps
        hook = None if on_report is None else (lambda step, scores, local=local: on_report(local[step], scores))
        res = fit(stage.method, stage.model, objective, train_rows, dev_rows if last else None, stage_budget,
                  batch_size=case.batch_size, seed=seed, warmup=warmup, clip=clip, eval_every=eval_every,
                  pad_id=pad_id, device=case.device, progress=progress, label=f"{case.id} [{stage.method.name}]",
                  group_by_length=group_by_length, deadline=deadline, val_rows=val_rows,
                  report_at=sorted(local), on_report=hook)
        per_stage.append({"method": stage.method.name, "objective": stage.objective,
                          "train_rows": len(part), "train_rows_from": used, **res.metrics(),
                          **({"warm_start": res.warm_start} if res.warm_start else {})})
        if res.warm_start:
            notes["warm_start" if len(per_stage) == 1 else f"warm_start_stage{len(per_stage)}"] = res.warm_start
        used += take
        done_share += stage.share
        res.train_examples += result.train_examples
        res.train_steps += offset
        if result.peak_bytes is not None and res.peak_bytes is not None:  # the largest stage's
            res.peak_bytes = max(result.peak_bytes, res.peak_bytes)  # (a failed stage: not measured)
        spent += res.train_time_s
        res.train_time_s = spent
        if len(per_stage) > 1 and res.train_energy_j is not None:  # every stage's, or none
            res.train_energy_j = None if result.train_energy_j is None else result.train_energy_j + res.train_energy_j
        notes["energy"] = res.energy
        result = res
        if result.status != "ok":
            break
    train_config = {
        "budget": str(given), "seed": seed, "warmup": warmup,
        "clip": clip if built.method.uses_backward else None,
        "eval_every": eval_every, "max_len": case.seq_len, "lr_schedule": lr_schedule(built.method),
        "group_by_length": group_by_length, "select_on": select_on, "validation": validation,
        "peak": "tracked steady-state step at the largest batch shape",
    }
    predictions = None
    if result.predictions is not None:
        dev = data["dev"]
        predictions = {"split": "dev", "examples": len(result.predictions), "sha256": examples_digest(dev),
                       "labels": "".join(str(int(v)) for v in dev["label"]),
                       "predicted": "".join(str(int(v)) for v in result.predictions)}
    metrics = result.metrics()
    if result.status in ("ok", "collapsed"):  # what this trained model must store to be deployed
        from spbench.measure.inference import deploy_bytes

        metrics["deploy_bytes"] = deploy_bytes(built.method.deploy_state(stage.model))
    # A multi-stage run keeps each stage's own peak, time and score; its top-level figures are overall.
    return Result.of(case, status=result.status, reason=result.reason, metrics=metrics,
                     notes=notes, train_config=train_config, stages=per_stage if len(per_stage) > 1 else None,
                     best_step=result.best_step, predictions=predictions), result


def _share(budget: Budget, share: float, rest_after: int | None = None) -> Budget:
    """A stage's ``share`` of a steps or examples budget (``run_accuracy`` turns epochs into
    examples of the rows trained on before the stages split it); the last stage passes
    ``rest_after`` (what the stages before it were given) and gets the rest, so the stages add
    up to the whole budget, as their rows add up to all the rows."""
    if share >= 1.0:
        return budget
    kind = "steps" if budget.steps is not None else "examples"
    total: int = getattr(budget, kind)
    amount = total - rest_after if rest_after is not None else round(total * share)
    return Budget(**{kind: max(1, amount)})
