"""Overview, ``--compare`` and ``--baseline`` tables as format-neutral text cells.

Cells are plain text plus a few private-use marker characters (bold, arrows, times, delta,
dash) that each renderer turns into its own markup: LaTeX escaping is left to tabulate's
``latex_booktabs`` and the markers survive it. Units are scaled per column (or per compared
metric) so the numbers of one column share a unit; the best value of a column is marked
from the direction ``spbench.result.METRICS`` declares.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, Iterable

from spbench.errors import InputError
from spbench.reporting.results import Row, Source, groups
from spbench.reporting.seeds import spread_text
from spbench.result import METRICS, PREDICTED, Metric

# Markers (Unicode private use area): renderers replace them.
BOLD_ON, BOLD_OFF, UP, DOWN, TIMES, DELTA, NONE = (chr(0xE000 + i) for i in range(7))

# The "LoRA vs Side-LoRA" rows first, in this order; the other metrics follow in METRICS order.
COMPARE_FIRST = ("params_backward_read", "params_with_grad", "params_trainable", "predicted_cuda_peak_bytes",
                 "peak_bytes", "step_time_s", "flops_backward", "sst2_accuracy", "sst2_f1",
                 "inference_time_overhead", "predicted_inference_overhead", "deploy_bytes", "energy_step_j",
                 "train_energy_j")


@dataclass
class Table:
    title: str
    headers: list[str]
    rows: list[list[str]]
    align: list[str]  # "left" | "right" per column
    notes: list[str] = field(default_factory=list)

    def transposed(self) -> "Table":
        """Metrics as rows, methods as columns: what fits a page when there are many metrics."""
        headers = ["metric"] + [row[0] for row in self.rows]
        rows = [[h] + [row[j] for row in self.rows] for j, h in enumerate(self.headers) if j > 0]
        return Table(self.title, headers, rows, ["left"] + ["right"] * len(self.rows), self.notes)


@dataclass
class Report:
    title: str
    sources: list[Source]
    tables: list[Table]
    legend: str


@dataclass(frozen=True)
class Scale:
    divisor: float
    unit: str  # shown in the header; "" for plain counts
    decimals: int


def scale_for(metric: Metric, values: Iterable[float]) -> Scale:
    """One display unit for a set of values of ``metric`` (chosen from the largest)."""
    top = max((abs(v) for v in values), default=0.0)
    if metric.unit == "bytes":
        for div, unit in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
            if top >= div:
                return Scale(div, unit, 2)
        return Scale(1, "B", 0)
    if metric.unit == "s":
        return Scale(1e-3, "ms", 2) if top < 1 else Scale(1, "s", 2)
    if metric.unit == "flops":
        for div, unit in ((1e12, "TFLOP"), (1e9, "GFLOP"), (1e6, "MFLOP")):
            if top >= div:
                return Scale(div, unit, 2)
        return Scale(1, "FLOP", 0)
    if metric.unit == "ratio":
        return Scale(0.01, "%", 2)
    if metric.unit == "factor":
        return Scale(1, "x", 2)
    if metric.unit == "J":
        return Scale(1e3, "kJ", 2) if top >= 1e3 else Scale(1, "J", 2)
    return Scale(1, "", 0)  # counts stay exact: 1,536 read parameters must not show as 0.00 M


def fmt(value: float, scale: Scale) -> str:
    scaled = value / scale.divisor
    smallest = 10.0 ** -scale.decimals
    if value != 0 and abs(scaled) < smallest / 2:  # not zero, and must not read as zero
        return f"<{smallest:.{scale.decimals}f}" if value > 0 else f">-{smallest:.{scale.decimals}f}"
    return f"{scaled:,.{scale.decimals}f}"


def header(metric: Metric, scale: Scale) -> str:
    unit = f" [{scale.unit}]" if scale.unit else ""
    # The breakdown labels ("params", "grads") would read as counts next to "parameters".
    label = f"at peak: {metric.label}" if metric.key.startswith("mem_") else metric.label
    if metric.higher_is_better is None:
        return f"{label}{unit}"
    return f"{label}{unit} {UP if metric.higher_is_better else DOWN}"


def best_of(metric: Metric, values: list[float | None]) -> set[int]:
    """Indices holding the best value; none when fewer than two values or all are equal."""
    present = [v for v in values if v is not None]
    if metric.higher_is_better is None or len(present) < 2 or len(set(present)) == 1:
        return set()
    best = max(present) if metric.higher_is_better else min(present)
    return {i for i, v in enumerate(values) if v == best}


def bold(text: str) -> str:
    return f"{BOLD_ON}{text}{BOLD_OFF}"


def gradient_warning(row: Row) -> str:
    """A warning when some trainable parameters never receive a gradient ("" when none):
    such a case trains less than it claims (e.g. Side-LoRA with q/v adapters trains the head only)."""
    trainable, reached = row.metrics.get("params_trainable"), row.metrics.get("params_with_grad")
    if trainable is None or reached is None or reached >= trainable:
        return ""
    return (f"{BOLD_ON}WARNING{BOLD_OFF} {row.label}: only {reached:,.0f} of {trainable:,.0f} trainable parameters receive a "
            "gradient; the rest are never trained")


def _notes(rows: list[Row]) -> list[str]:
    out = [w for w in map(gradient_warning, rows) if w]
    for row in rows:
        for device, status in sorted(row.status.items()):
            if status != "ok":
                reason = row.reasons.get(device, "no reason recorded")
                kind = "predicted" if device == PREDICTED else f"measured on {device}"
                out.append(f"{row.label}: {status} ({kind}): {reason}")
        for key, value in sorted(row.notes.items()):
            out.append(f"{row.label}: {key} = {value}")
    return out + _training_notes(rows)


def _training_notes(rows: list[Row]) -> list[str]:
    """Training configuration once per table (per distinct configuration), the restored
    checkpoints, and each multi-stage run's stages with their own figures."""
    out = []
    configs: dict[str, list[str]] = {}
    for row in rows:
        if row.train_config:
            text = ", ".join(f"{k}={'none' if v is None else v}" for k, v in row.train_config.items())
            configs.setdefault(text, []).append(row.label)
    for text, labels in configs.items():
        who = "" if len(labels) == len(rows) else f" of {', '.join(labels)}"
        out.append(f"training{who}: {text}")
    best = [f"{row.label} at step {row.best_step}" for row in rows if row.best_step is not None]
    if best:
        on = {(row.train_config or {}).get("select_on", "dev") for row in rows if row.best_step is not None}
        out.append(f"best checkpoint (by {' / '.join(sorted(on))} accuracy) restored: " + ", ".join(best))
    for row in rows:
        for i, stage in enumerate(row.stages or (), 1):
            figures = ", ".join(f"{METRICS[k].label} {_with_unit(METRICS[k], v)}"
                                for k, v in stage.items() if k in METRICS)
            out.append(f"{row.label} stage {i}: {stage.get('method')} ({stage.get('objective')}): {figures}")
    return out


def _with_unit(metric: Metric, value: float) -> str:
    scale = scale_for(metric, [value])
    return f"{fmt(value, scale)} {scale.unit}".rstrip()


def overview_table(title: str, rows: list[Row], baseline: str | None = None) -> Table:
    """One row per method of a group; a column per metric with data; ``baseline``: also % of it."""
    keys = [k for k in METRICS if any(k in r.metrics for r in rows)]
    base_row = _find(rows, baseline) if baseline else None
    with_status = not all(r.ok for r in rows)
    headers = ["method"] + (["status"] if with_status else [])
    cells: list[list[str]] = [[r.label] + ([r.status_text] if with_status else []) for r in rows]
    for key in keys:
        metric = METRICS[key]
        values = [r.metrics.get(key) for r in rows]
        scale = scale_for(metric, [v for v in values if v is not None])
        headers.append(header(metric, scale))
        best = best_of(metric, values)
        base = base_row.metrics.get(key) if base_row is not None else None
        for i, (row, value) in enumerate(zip(rows, values)):
            if value is None:
                cells[i].append(NONE)
                continue
            text = fmt(value, scale) + spread_text(row, key, scale.divisor, scale.decimals)
            text = bold(text) if i in best else text
            if base is not None and row is not base_row:
                text += f" ({value / base * 100:.1f}%)" if base else " (n/a)"
            cells[i].append(text)
    notes = _notes(rows)
    if baseline and base_row is None:
        notes.insert(0, f"no {baseline} row in this group: no percentages")
    align = ["left"] * (2 if with_status else 1) + ["right"] * len(keys)
    return Table(title, headers, cells, align, notes)


def _find(rows: list[Row], name: str) -> Row | None:
    """The row named ``name`` (a label, or a method with a single configuration in the group)."""
    exact = [r for r in rows if r.label == name]
    if exact:
        return exact[0]
    by_method = [r for r in rows if r.method == name]
    if len(by_method) > 1:
        raise InputError(f"{name!r} has several configurations here ({', '.join(r.label for r in by_method)}); "
                       "name one by its label in quotes")
    return by_method[0] if by_method else None


def baseline_rows(rows: list[Row], name: str) -> dict[tuple[Any, ...], Row]:
    """The ``name`` row of every group that has one, by group key."""
    _known(rows, name)
    found = ((_find(rs, name), rs) for _, rs in groups(rows))
    return {rs[0].group: row for row, rs in found if row is not None}


def _known(rows: list[Row], name: str) -> None:
    names = sorted({r.method for r in rows} | {r.label for r in rows})
    if name not in names:
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise InputError(f"no results for method {name!r}.{hint} In these files: {', '.join(names)}")


def compare_table(title: str, a: Row, b: Row) -> Table:
    """``a`` and ``b`` side by side, one line per metric, with B/A (and B-A for accuracies)."""
    keys = [k for k in COMPARE_FIRST if k in METRICS] + [k for k in METRICS if k not in COMPARE_FIRST]
    keys = [k for k in keys if k in a.metrics or k in b.metrics]
    with_delta = any(METRICS[k].unit == "ratio" for k in keys)
    headers = ["metric", a.label, b.label, f"{b.label} / {a.label}"] + ([f"{DELTA} ({b.label} - {a.label})"] if with_delta else [])
    cells = []
    for key in keys:
        metric = METRICS[key]
        va, vb = a.metrics.get(key), b.metrics.get(key)
        scale = scale_for(metric, [v for v in (va, vb) if v is not None])
        best = best_of(metric, [va, vb])
        line = [header(metric, scale)]
        for i, v in enumerate((va, vb)):
            line.append(NONE if v is None else bold(fmt(v, scale)) if i in best else fmt(v, scale))
        if va is None or vb is None or va == 0:
            line.append(NONE)
        else:
            line.append(fmt(vb / va, Scale(1, "", 2)) + TIMES)
        if with_delta:
            line.append(f"{(vb - va) * 100:+.2f} pp" if metric.unit == "ratio" and None not in (va, vb) else "")
        cells.append(line)
    align = ["left", "right", "right", "right"] + (["right"] if with_delta else [])
    return Table(title, headers, cells, align, paired_notes(a, b) + _notes([a, b]))


def paired_notes(a: Row, b: Row) -> list[str]:
    """The paired comparison of two rows' dev accuracy on the same examples (stats.py), or why not."""
    from spbench.reporting import stats

    if a.correct is None or b.correct is None:
        if "sst2_accuracy" in a.metrics and "sst2_accuracy" in b.metrics:
            return ["no paired comparison: these runs did not keep their dev predictions"]
        return []
    try:
        result = stats.paired(a.correct, b.correct)
    except InputError as exc:
        return [f"no paired comparison: {exc}"]
    return [f"{BOLD_ON}paired dev accuracy {b.label} - {a.label}{BOLD_OFF}: {result.text(a.label, b.label)} "
            f"({result.examples} sentences, {result.seeds[0]} vs {result.seeds[1]} seeds)", stats.METHOD_NOTE]


LEGEND = (f"{DOWN} lower is better, {UP} higher is better; the best value of each column is in bold. "
          "'predicted' figures: one training step on fake tensors with CUDA's allocator and kernels "
          "emulated (deterministic); 'measured': the real step on the device named in the table title.")


def overview(sources: list[Source], rows: list[Row], baseline: str | None = None) -> Report:
    if baseline:
        _known(rows, baseline)
    tables = [overview_table(title, rs, baseline) for title, rs in groups(rows)]
    legend = LEGEND + (f" Percentages: of {baseline} in the same table." if baseline else "")
    return Report("spbench report", sources, tables, legend)


def compare_pairs(rows: list[Row], a: str, b: str) -> list[tuple[str, Row, Row]]:
    """(group title, row of a, row of b) for every group that has both."""
    _known(rows, a)
    _known(rows, b)
    pairs = []
    for title, rs in groups(rows):
        ra, rb = _find(rs, a), _find(rs, b)
        if ra is not None and rb is not None:
            pairs.append((title, ra, rb))
    if not pairs:
        raise InputError(f"no table has both {a} and {b} for the same backbone, shape, dtype and device")
    return pairs


def same_adapters(a: Row, b: Row) -> str:
    """", same adapters (targets=...)" when both rows' methods put adapters on the same targets
    (e.g. lora_blocks vs side_lora), else "": a comparison says whether it is like for like."""
    ta, tb = a.method_config.get("targets"), b.method_config.get("targets")
    if ta is None or tb is None or list(ta) != list(tb):
        return ""
    return f", same adapters (targets={'+'.join(map(str, ta)) or 'default'})"


def compare(sources: list[Source], rows: list[Row], a: str, b: str) -> Report:
    pairs = compare_pairs(rows, a, b)
    tables = [compare_table(f"{ra.label} vs {rb.label}{same_adapters(ra, rb)}: {title}", ra, rb)
              for title, ra, rb in pairs]
    same = {same_adapters(ra, rb) for _, ra, rb in pairs}
    return Report(f"spbench report: {a} vs {b}{same.pop() if len(same) == 1 else ''}", sources, tables, LEGEND)
