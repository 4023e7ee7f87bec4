"""What a case measured: the metric contract shared by benchmarks, report and check.

Every metric is declared once here with its unit and direction; the reporter scales units
and marks the best value from this table alone. A key that was not measured is absent from a
result, never 0 as a stand-in.

Bump ``SCHEMA_VERSION`` whenever measuring code changes what a number means: ``report`` and
``check`` refuse to compare results across versions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Metric:
    key: str
    unit: str  # "bytes", "s", "flops", "count", "ratio"
    higher_is_better: bool | None  # None: describes the run, neither better nor worse
    label: str
    deterministic: bool = False  # the same on every machine: gated by ``spbench check``


METRICS: dict[str, Metric] = {
    m.key: m
    for m in [
        Metric("peak_bytes", "bytes", False, "peak memory (measured)"),
        Metric("reserved_peak_bytes", "bytes", False, "reserved peak (CUDA)"),
        Metric("nvml_used_bytes", "bytes", False, "NVML used (CUDA)"),
        Metric("predicted_cuda_peak_bytes", "bytes", False, "peak memory (predicted CUDA)", True),
        Metric("predicted_inference_peak_bytes", "bytes", False, "no-grad forward peak (predicted)", True),
        Metric("mem_params_bytes", "bytes", False, "params", True),
        Metric("mem_grads_bytes", "bytes", False, "grads", True),
        Metric("mem_optimizer_bytes", "bytes", False, "optimizer state", True),
        Metric("mem_activations_bytes", "bytes", False, "activations", True),
        Metric("mem_temp_bytes", "bytes", False, "backward temporaries", True),
        Metric("params_total", "count", False, "parameters", True),
        Metric("params_trainable", "count", False, "trainable parameters", True),
        Metric("params_backward_read", "count", False, "parameters read by backward", True),
        Metric("params_with_grad", "count", True, "trainable parameters reached by the gradient", True),
        Metric("flops_forward", "flops", False, "forward FLOPs", True),
        Metric("flops_backward", "flops", False, "backward FLOPs", True),
        Metric("step_time_s", "s", False, "step time"),
        Metric("sst2_accuracy", "ratio", True, "SST-2 dev accuracy"),
        Metric("sst2_f1", "ratio", True, "SST-2 dev F1"),
        Metric("train_examples", "count", None, "training examples"),
        Metric("train_steps", "count", None, "training steps"),
        Metric("train_time_s", "s", False, "training time"),
    ]
}

# What ran (identity of a case); never compared as a metric.
IDENTITY_KEYS = (
    "method",
    "method_config",
    "backbone",
    "objective",
    "batch_size",
    "seq_len",
    "device",
    "dtype",
    "schema_version",
)


@dataclass
class Result:
    """One case's identity, status and metrics (the ``extra_info`` of a benchmark)."""

    method: str
    backbone: str
    objective: str
    batch_size: int
    seq_len: int
    device: str
    method_config: dict[str, Any]
    dtype: str = "float32"
    status: str = "ok"  # "ok" | "oom" | "failed"
    reason: str = ""
    metrics: dict[str, float | int] | None = None
    notes: dict[str, Any] | None = None  # flags such as "mlm_head_untrained"

    def to_extra_info(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "method": self.method,
            "method_config": self.method_config,
            "backbone": self.backbone,
            "objective": self.objective,
            "batch_size": self.batch_size,
            "seq_len": self.seq_len,
            "device": self.device,
            "dtype": self.dtype,
            "schema_version": SCHEMA_VERSION,
            "status": self.status,
        }
        if self.reason:
            out["reason"] = self.reason
        for key, value in (self.metrics or {}).items():
            if key not in METRICS:
                raise KeyError(f"undeclared metric {key!r}: add it to spbench.result.METRICS")
            out[key] = value
        if self.notes:
            out.update(self.notes)
        return out

    @classmethod
    def from_extra_info(cls, info: dict[str, Any]) -> "Result":
        known = set(IDENTITY_KEYS) | set(METRICS) | {"status", "reason"}
        return cls(
            method=info["method"],
            backbone=info["backbone"],
            objective=info.get("objective", "classification"),
            batch_size=int(info["batch_size"]),
            seq_len=int(info["seq_len"]),
            device=info["device"],
            method_config=info.get("method_config", {}),
            dtype=info.get("dtype", "float32"),
            status=info.get("status", "ok"),
            reason=info.get("reason", ""),
            metrics={k: v for k, v in info.items() if k in METRICS},
            notes={k: v for k, v in info.items() if k not in known} or None,
        )
