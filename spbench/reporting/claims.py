"""The research team's claims, checked one by one against spbench's measurements.

    spbench report reports/accuracy/reference/*-best-3seeds.json reports/accuracy/claims-matrix.json \
        --claims -o reports/accuracy/claims.md

Each claim on the team's slides that a 6-layer backbone can test is a row: the team's figure,
ours with its interval, the paired difference with its interval and p-value (accuracy claims),
or the ratio measured in one run (memory and time claims), and a verdict in words. The claims
and the team's figures are declared here (from the slides); every other number comes from the
result files given, and a claim whose rows are missing says which.

Accuracy rows are the reference's studies: a row named ``lst`` is the study ``lst-best-3seeds``
(its three seeds folded, selected on validation). Memory and time rows come from a benchmark
matrix: predicted figures on ``roberta-large`` and CPU-measured ones on ``distilbert-base``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from spbench.reporting.results import Record
from spbench.result import PREDICTED

SUFFIX = "-best-3seeds"


@dataclass(frozen=True)
class AccuracyClaim:
    """B against A on SST-2 dev. ``expect``: "b_not_worse" (virtually no loss), "b_better",
    "a_better" (B trails A), "close" (neither distinguishably better)."""

    claim: str
    team: str
    a: str
    b: str
    expect: str


@dataclass(frozen=True)
class CostClaim:
    """A memory or time figure of B against A: ``metric`` on ``device`` (PREDICTED or "cpu")
    of ``backbone``; ``expect`` describes what the team saw, ``agrees`` judges our ratio."""

    claim: str
    team: str
    a: str
    b: str
    metric: str
    device: str
    backbone: str
    agrees: Callable[[float], bool]
    expect: str


ACCURACY_CLAIMS = (
    AccuracyClaim("Side-LoRA loses virtually nothing against LoRA (the slides' detached form)",
                  "90.25 vs 90.02 (DistilBERT)", "lora_blocks", "side_lora", "b_not_worse"),
    AccuracyClaim("Side-LoRA loses virtually nothing against LoRA (the team's code: merged weight)",
                  "90.25 vs 90.02 (DistilBERT)", "lora_blocks", "side_lora_team", "b_not_worse"),
    AccuracyClaim("k-LST beats LST (the window's effect: k=3 against its own k=1)",
                  "94.50 vs 93.12 (RoBERTa-large, k=9); no difference on DistilBERT's 6 layers",
                  "klst-k1", "klst-k3", "b_better"),
    AccuracyClaim("MeZO+LST barely improves on LST", "86.24 vs 88.07 (DistilBERT); 92.89 vs 92.54 (RoBERTa-large)",
                  "lst", "mezo_lst", "close"),
    AccuracyClaim("MeZO trails full fine-tuning by a wide margin", "82.57 vs 91.28 (DistilBERT)",
                  "full_ft", "mezo", "a_better"),
    AccuracyClaim("LoRA is close to full fine-tuning", "90.02 vs 90.59 (DistilBERT)", "full_ft", "lora", "close"),
)

COST_CLAIMS = (
    CostClaim("k-LST costs little memory over LST; both about 3 GB on RoBERTa-large",
              "both around 3 GB, 9-LST a bit more (RoBERTa-large)", "lst", "klst", "predicted_cuda_peak_bytes",
              PREDICTED, "roberta-large", lambda r: 1.0 <= r <= 1.5, "klst / lst within 1.0-1.5x"),
    CostClaim("9-LST is about 10% slower than LST", "about 10% slower", "lst", "klst", "step_time_s", "cpu",
              "distilbert-base", lambda r: r <= 1.25, "klst / lst step time at most 1.25x"),
    CostClaim("Side-LoRA: 64% fewer parameters in the gradient computation (detached form)",
              "23M vs 66M (DistilBERT): 0.36x", "lora_blocks", "side_lora", "params_backward_read", PREDICTED,
              "roberta-large", lambda r: r <= 0.5, "side_lora / lora_blocks at most 0.5x"),
    CostClaim("Side-LoRA: 64% fewer parameters in the gradient computation (team's code)",
              "23M vs 66M (DistilBERT): 0.36x", "lora_blocks", "side_lora_team", "params_backward_read", PREDICTED,
              "roberta-large", lambda r: r <= 0.5, "side_lora_team / lora_blocks at most 0.5x"),
    CostClaim("Side-LoRA: 11% less run time than LoRA (detached form)", "28 vs 32 min (DistilBERT): 0.89x",
              "lora_blocks", "side_lora", "step_time_s", "cpu", "distilbert-base", lambda r: r < 1.0,
              "side_lora / lora_blocks step time below 1x"),
    CostClaim("Side-LoRA: 11% less run time than LoRA (team's code)", "28 vs 32 min (DistilBERT): 0.89x",
              "lora_blocks", "side_lora_team", "step_time_s", "cpu", "distilbert-base", lambda r: r < 1.0,
              "side_lora_team / lora_blocks step time below 1x"),
    CostClaim("Side-LoRA: no memory reduction against LoRA (detached form)", "no reduction", "lora_blocks",
              "side_lora", "predicted_cuda_peak_bytes", PREDICTED, "roberta-large", lambda r: r >= 0.95,
              "side_lora / lora_blocks peak at least 0.95x"),
    CostClaim("Side-LoRA: no memory reduction against LoRA (team's code)", "no reduction", "lora_blocks",
              "side_lora_team", "predicted_cuda_peak_bytes", PREDICTED, "roberta-large", lambda r: r >= 0.95,
              "side_lora_team / lora_blocks peak at least 0.95x"),
)


# A row that trains exactly as another: its accuracy is the other row's runs (its time and memory
# are its own, in the cost rows). The team's Side-LoRA has lora_blocks' gradients
# (tests/test_methods.py) and, trained from the same seed, lora_blocks' loss curve and predictions:
SAME_TRAINING = {"side_lora_team": ("lora_blocks", "tests/test_train.py::test_team_side_lora_trains_as_lora_blocks")}


def accuracy_rows(records: list[Record]) -> dict[str, list[Record]]:
    """The reference's rows: study ``NAME-best-3seeds`` -> its finished runs."""
    rows: dict[str, list[Record]] = {}
    for rec in records:
        study = str((rec.result.notes.get("sweep") or {}).get("study", ""))
        if study.endswith(SUFFIX) and rec.result.ok and rec.result.predictions:
            rows.setdefault(study[: -len(SUFFIX)], []).append(rec)
    return rows


def _pct(value: float) -> str:
    return f"{value * 100:.2f}"


def accuracy_line(claim: AccuracyClaim, rows: dict[str, list[Record]]) -> list[str]:
    from spbench.reporting import stats

    # a row without runs of its own that trains as another stands on that one's runs
    same = {name: SAME_TRAINING[name] for name in (claim.a, claim.b) if name not in rows and name in SAME_TRAINING}
    needed = [name for name in (claim.a, claim.b) if name not in same] + [row for row, _ in same.values()]
    missing = list(dict.fromkeys(name for name in needed if name not in rows))
    if missing:
        return [claim.claim, claim.team, "not measured yet", "not measured yet", "—",
                f"no result yet for {', '.join(missing)}"]
    ours = []
    correct = {}
    for name in (claim.a, claim.b):
        row, test = same.get(name, (name, ""))
        correct[name], _ = stats.correctness([r.result.predictions for r in rows[row]])  # type: ignore[misc]
        low, high = stats.interval(correct[name])
        ours.append(f"{name}: the runs of {row} (the same training: {test})" if test else
                    f"{name}: {_pct(correct[name].mean())} [{_pct(low)}, {_pct(high)}] ({len(rows[row])} seeds)")
    used = [same.get(name, (name, ""))[0] for name in (claim.a, claim.b)]
    if used[0] == used[1]:  # one side stands on the other's runs
        return [claim.claim, claim.team, *ours, "0 (the same runs)",
                f"agrees (it trains as {used[0]}: the same gradients, and the same predictions where tested)"]
    pair = stats.paired(correct[claim.a], correct[claim.b])
    diff = (f"{pair.difference * 100:+.2f} pp [{pair.low * 100:+.2f}, {pair.high * 100:+.2f}], "
            f"p = {pair.p_value:.3g}")
    return [claim.claim, claim.team, ours[0], ours[1], diff, verdict(claim, pair)]


def verdict(claim: AccuracyClaim, pair: Any) -> str:
    noise = "not distinguishable from noise at this size"
    if not pair.distinguishable:
        if claim.expect in ("b_not_worse", "close"):
            return f"agrees ({noise})"
        return noise
    better_b = pair.difference > 0
    if claim.expect == "b_better":
        return "agrees" if better_b else "disagrees (the other way round)"
    if claim.expect == "a_better":
        return "agrees" if not better_b else "disagrees (the other way round)"
    if claim.expect == "b_not_worse":
        return "agrees (B better)" if better_b else "disagrees (B is worse)"
    return f"disagrees ({claim.b if better_b else claim.a} is better)"


def cost_line(claim: CostClaim, records: list[Record]) -> list[str]:
    def find(method: str) -> float | None:
        for rec in records:
            res = rec.result
            on_device = res.device == claim.device if claim.device == PREDICTED else (
                res.device == claim.device and res.device != PREDICTED)
            if (res.case.method == method and res.case.backbone == claim.backbone and on_device and res.ok
                    and claim.metric in res.metrics and not res.case.grad_checkpointing
                    and res.case.dtype == "float32" and not res.case.overrides):
                return float(res.metrics[claim.metric])
        return None

    a, b = find(claim.a), find(claim.b)
    where = claim.backbone if claim.device == PREDICTED else f"on {claim.device}, {claim.backbone}"
    if a is None or b is None:
        return [claim.claim, claim.team, "not measured", "not measured", "—", f"no {claim.metric} ({where})"]
    ratio = b / a if a else float("inf")
    from spbench.reporting.tables import fmt, scale_for
    from spbench.result import METRICS

    metric = METRICS[claim.metric]
    scale = scale_for(metric, [a, b])
    unit = f" {scale.unit}" if scale.unit else ""
    return [claim.claim, claim.team, f"{claim.a}: {fmt(a, scale)}{unit}", f"{claim.b}: {fmt(b, scale)}{unit}",
            f"{ratio:.2f}x ({metric.label}, {where})",
            ("agrees" if claim.agrees(ratio) else "disagrees") + f" ({claim.expect})"]


HEADERS = ["claim (the team's slides)", "team's figure", "ours: A", "ours: B", "B - A (accuracy) or B / A",
           "verdict"]


def claims_markdown(records: list[Record], sources: list[Any]) -> str:
    """The claims table as Markdown (what ``spbench report --claims`` writes)."""
    from tabulate import tabulate

    from spbench.reporting import stats

    rows = accuracy_rows(records)
    lines = [accuracy_line(c, rows) for c in ACCURACY_CLAIMS] + [cost_line(c, records) for c in COST_CLAIMS]
    parts = [
        "# The research team's claims, checked on minilm-l6", "",
        "Accuracy rows: SST-2 dev accuracy [%] of the reference (`benchmarks/reference_sweep.sh`: learning rate "
        "chosen on a validation split carved from SST-2 train by a pruned search at the full budget, then three "
        "seeds), mean over seeds with its 95% interval; B - A is paired on the same dev sentences. "
        + stats.METHOD_NOTE + ". Memory and time rows: one benchmark matrix, the ratio of two methods measured "
        "in the same run (predicted CUDA peak on roberta-large, CPU step time on distilbert-base, batch 16 x 128). "
        "The team's figures are from their slides (DistilBERT / RoBERTa-large, their budgets); ours are on "
        "minilm-l6 (6 layers), so a verdict says whether this backbone shows the same, not whether theirs was right.",
        "", "Sources:", *[f"- {s.path}: {s.machine}; commit {s.commit}" for s in sources], "",
        tabulate(lines, headers=HEADERS, tablefmt="github", disable_numparse=True), ""]
    return "\n".join(parts)
