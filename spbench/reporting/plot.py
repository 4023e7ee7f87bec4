"""``--plot PATH.png``: peak memory vs accuracy (Pareto front marked) and the memory breakdown.

Left: one point per method and table group; x is the predicted CUDA peak (the measured peak
where nothing was predicted), y is SST-2 accuracy, or the step time when the files hold no
accuracy case. The Pareto front (nothing else is both smaller and better) is drawn per group,
so different backbones or shapes are never ranked against each other. Right: the predicted
breakdown (``mem_*_bytes``) as stacked bars, one per method and group.

matplotlib is an optional extra (``pip install 'spbench[plot]'``).
"""

from __future__ import annotations

import io
from typing import Any

from spbench.errors import InputError
from spbench.reporting.results import Row, groups, write_atomic
from spbench.reporting.tables import scale_for
from spbench.result import METRICS

BREAKDOWN = ("mem_params_bytes", "mem_grads_bytes", "mem_optimizer_bytes", "mem_activations_bytes", "mem_temp_bytes")


def pareto(points: list[tuple[float, float]], higher_is_better: bool) -> list[int]:
    """Indices of the points no other point beats on both x (lower) and y (its direction)."""
    sign = -1 if higher_is_better else 1

    def beats(p: tuple[float, float], q: tuple[float, float]) -> bool:
        return p[0] <= q[0] and sign * p[1] <= sign * q[1] and p != q

    return [i for i, q in enumerate(points) if not any(beats(p, q) for p in points)]


def _memory(row: Row) -> float | None:
    return row.metrics.get("predicted_cuda_peak_bytes", row.metrics.get("peak_bytes"))


def plot(rows: list[Row], path: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise InputError("--plot needs matplotlib: pip install 'spbench[plot]'") from None
    y_key = "sst2_accuracy" if any("sst2_accuracy" in r.metrics for r in rows) else "step_time_s"
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5.2), gridspec_kw={"width_ratios": [1, 1.2]})
    _scatter(ax1, rows, y_key)
    _breakdown(ax2, rows)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=130)
    plt.close(fig)
    write_atomic(path, buf.getvalue())


def _scatter(ax: Any, rows: list[Row], y_key: str) -> None:
    metric = METRICS[y_key]
    data = [(title, [r for r in rs if r.ok and _memory(r) is not None and y_key in r.metrics])
            for title, rs in groups(rows)]
    data = [(t, rs) for t, rs in data if rs]
    if not data:
        ax.text(0.5, 0.5, f"no case has both a peak and {y_key}", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return
    mem_scale = scale_for(METRICS["predicted_cuda_peak_bytes"], [_memory(r) for _, rs in data for r in rs])
    y_scale = scale_for(metric, [r.metrics[y_key] for _, rs in data for r in rs])
    for n, (title, rs) in enumerate(data):
        pts = [(_memory(r) / mem_scale.divisor, r.metrics[y_key] / y_scale.divisor) for r in rs]
        color = f"C{n % 10}"
        ax.scatter(*zip(*pts), color=color, label=title, zorder=3)
        spread = [(x, y, r.spread[y_key][0] / y_scale.divisor) for r, (x, y) in zip(rs, pts)
                  if r.spread.get(y_key, (None, 0))[0] is not None]
        if spread:  # runs repeated over seeds: one standard deviation
            xs, ys, errs = zip(*spread)
            ax.errorbar(xs, ys, yerr=errs, fmt="none", ecolor=color, capsize=3, zorder=2)
        front = sorted(pareto(pts, metric.higher_is_better), key=lambda i: pts[i])
        ax.step([pts[i][0] for i in front], [pts[i][1] for i in front], where="post", color=color,
                linestyle="--", linewidth=1, zorder=2)
        ax.scatter([pts[i][0] for i in front], [pts[i][1] for i in front], s=140, facecolors="none",
                   edgecolors=color, linewidths=1.5, zorder=4)
        for r, (x, y) in zip(rs, pts):
            ax.annotate(r.label, (x, y), textcoords="offset points", xytext=(6, 4), fontsize=8)
    arrow = "↑" if metric.higher_is_better else "↓"
    ax.set_xlabel(f"peak memory (predicted CUDA) [{mem_scale.unit}] ↓")
    ax.set_ylabel(f"{metric.label} [{y_scale.unit}] {arrow}")
    ax.set_title("peak memory vs " + ("accuracy" if y_key == "sst2_accuracy" else "step time (no accuracy cases)")
                 + "\ncircled, dashed: Pareto front per group"
                 + ("; bars: ±1 std over seeds" if any(r.spread for _, rs in data for r in rs) else ""), fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")


def _breakdown(ax: Any, rows: list[Row]) -> None:
    seen, bars = set(), []
    multi = len(groups(rows)) > 1
    for r in rows:
        key = (r.case_id, r.label)
        if key in seen or not any(k in r.metrics for k in BREAKDOWN):
            continue  # the predicted breakdown is the same on every measured device
        seen.add(key)
        name = f"{r.label}\n{r.backbone} {r.batch_size}x{r.seq_len}" if multi else r.label
        bars.append((name, r))
    if not bars:
        ax.text(0.5, 0.5, "no memory breakdown (mem_*_bytes) in these files", ha="center", va="center",
                transform=ax.transAxes)
        ax.set_axis_off()
        return
    scale = scale_for(METRICS["mem_params_bytes"], [sum(r.metrics.get(k, 0) for k in BREAKDOWN) for _, r in bars])
    bottom = [0.0] * len(bars)
    xs = range(len(bars))
    for n, key in enumerate(BREAKDOWN):
        heights = [r.metrics.get(key, 0) / scale.divisor for _, r in bars]
        ax.bar(xs, heights, bottom=bottom, label=METRICS[key].label, color=f"C{n}")
        bottom = [b + h for b, h in zip(bottom, heights)]
    peaks = [r.metrics.get("predicted_cuda_peak_bytes") for _, r in bars]
    if any(p is not None for p in peaks):
        ax.scatter([x for x, p in zip(xs, peaks) if p is not None],
                   [p / scale.divisor for p in peaks if p is not None], marker="_", s=400, color="black",
                   label="predicted CUDA peak", zorder=3)
    tilt = multi or len(bars) > 6  # many bars (methods and their levers): names would overlap
    ax.set_xticks(list(xs), [n for n, _ in bars], fontsize=7, rotation=30 if tilt else 0, ha="right" if tilt else "center")
    ax.set_ylabel(f"memory at the predicted peak [{scale.unit}]")
    ax.set_title("memory breakdown at the predicted peak", fontsize=10)
    ax.set_ylim(0, max(bottom) * 1.3)  # room for the legend above the bars
    ax.legend(fontsize=7, loc="upper center", ncol=3)
    ax.grid(axis="y", alpha=0.3)
