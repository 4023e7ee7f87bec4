"""What a case measured: the metric contract and the one result shape, shared by benchmarks,
report and check.

Every metric is declared once here with its unit and direction; the reporter scales units
and marks the best value from this table alone. A key that was not measured is absent from a
result, never 0 as a stand-in.

A :class:`Result` is made from its :class:`~spbench.case.Case` by :meth:`Result.of` and travels
as one flat JSON object (a benchmark's ``extra_info``): the case's identity fields, then
status, metrics, training configuration and notes. Its identity keys are derived from the
Case's fields here and nowhere else.

Bump ``SCHEMA_VERSION`` whenever measuring code changes what a number means, and say in
:data:`SCHEMA_CHANGES` which figures changed and why: ``report`` and ``check`` refuse to compare
a figure across versions that gave it different meanings (:func:`mixed_meanings`), and accept
the others (an accuracy measured by version 1 means what version 2's does).
tests/test_schema.py fails when a deterministic figure changes without a bump.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import typing
from dataclasses import dataclass, field
from typing import Any

from spbench.case import Case
from spbench.errors import InputError

SCHEMA_VERSION = 2
PREDICTED = "predicted-cuda"  # the device of predicted figures (a fake-tensor step with CUDA emulated)


@dataclass(frozen=True)
class Metric:
    key: str
    unit: str  # "bytes", "s", "flops", "count", "ratio", "factor" (x of a baseline), "J"
    higher_is_better: bool | None  # None: describes the run, neither better nor worse
    label: str
    deterministic: bool = False  # the same on every machine: gated by ``spbench check``

    def impossible(self, value: float) -> str:
        """Why a finite ``value`` cannot be a figure of this metric ("" when it can): every unit
        counts up from 0, and a ratio (accuracy, F1) ends at 1. NaN and infinity are left to
        the reader (``spbench check`` fails them as not finite)."""
        if not math.isfinite(value):
            return ""
        if self.unit == "ratio":
            return "" if 0 <= value <= 1 else "outside [0, 1] (a ratio, not a percentage)"
        return f"below 0 ({self.unit} cannot be negative)" if value < 0 else ""


METRICS: dict[str, Metric] = {
    m.key: m
    for m in [
        Metric("peak_bytes", "bytes", False, "peak memory (measured)"),
        Metric("reserved_peak_bytes", "bytes", False, "reserved peak (CUDA)"),
        Metric("nvml_used_bytes", "bytes", False, "NVML used (CUDA)"),
        Metric("predicted_cuda_peak_bytes", "bytes", False, "peak memory (predicted CUDA)", True),
        Metric("predicted_inference_peak_bytes", "bytes", False, "no-grad forward peak (predicted)", True),
        # Simulated caching allocator on the step's allocation trace; not gated by the CI
        # baseline (deterministic=False), which predates them.
        Metric("predicted_cuda_reserved_bytes", "bytes", False, "reserved peak (predicted CUDA)"),
        Metric("predicted_cuda_device_bytes", "bytes", False, "device total: reserved + context (predicted)"),
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
        Metric("energy_step_j", "J", False, "energy per step"),
        # The deployed model (spbench.measure.inference): LoRA merged, side networks kept, ...
        Metric("deploy_bytes", "bytes", False, "deployable size (safetensors)", True),
        Metric("params_deploy_extra", "count", False, "deployed parameters beyond the backbone", True),
        Metric("predicted_deploy_inference_peak_bytes", "bytes", False, "inference peak (predicted CUDA)", True),
        Metric("predicted_inference_overhead", "factor", False, "inference peak / backbone's (predicted)", True),
        Metric("inference_peak_bytes", "bytes", False, "inference peak (measured)"),
        Metric("inference_time_s", "s", False, "inference time"),
        Metric("inference_peak_overhead", "factor", False, "inference peak / backbone's (measured)"),
        Metric("inference_time_overhead", "factor", False, "inference time / backbone's"),
        Metric("sst2_accuracy", "ratio", True, "SST-2 dev accuracy"),
        Metric("sst2_f1", "ratio", True, "SST-2 dev F1"),
        Metric("val_accuracy", "ratio", True, "validation accuracy (selection split)"),
        Metric("train_examples", "count", None, "training examples"),
        Metric("train_steps", "count", None, "training steps"),
        Metric("train_time_s", "s", False, "training time"),
        Metric("train_energy_j", "J", False, "training energy"),
    ]
}

# The changelog of SCHEMA_VERSION: each version, why it was bumped, and the figures whose meaning
# it changed (a figure of a version-v result means what it meant at the latest change <= v).
_PREDICTED_MEMORY = frozenset(k for k, m in METRICS.items() if m.unit == "bytes" and k.startswith(("predicted_", "mem_")))
SCHEMA_CHANGES: dict[int, tuple[str, frozenset[str]]] = {
    1: ("the metric contract (DESIGN.md)", frozenset(METRICS)),
    2: ("predicted memory emulates CUDA's dropout (the fused native_dropout: a bool mask saved for backward, "
        "not CPU's noise tensor) and CUDA's autocast op policy (norms, softmax, sums, losses in float32); "
        "accuracy, parameter counts, FLOPs and measured figures unchanged", _PREDICTED_MEMORY),
}


def meaning(key: str, version: int) -> int:
    """The schema version whose meaning figure ``key`` of a version-``version`` result carries
    (a version newer than this code knows is its own)."""
    if not 1 <= version <= SCHEMA_VERSION:
        return version
    return max((v for v, (_, keys) in SCHEMA_CHANGES.items() if v <= version and key in keys), default=version)


def mixed_meanings(results: list[tuple[str, "Result"]]) -> str:
    """Why the figures of ``(source, result)`` pairs cannot be compared, in one line ("" when
    they can): the first figure that two schema versions gave different meanings."""
    seen: dict[str, dict[int, dict[int, set[str]]]] = {}  # figure -> meaning -> version -> sources
    for source, result in results:
        for key in result.metrics:
            version = result.schema_version
            seen.setdefault(key, {}).setdefault(meaning(key, version), {}).setdefault(version, set()).add(source)
    for key in (k for k in METRICS if len(seen.get(k, {})) > 1):
        by_version = {v: s for per in seen[key].values() for v, s in per.items()}
        listing = "; ".join(f"schema_version {v} in {', '.join(sorted(by_version[v]))}" for v in sorted(by_version))
        newest = max(seen[key])
        why = SCHEMA_CHANGES[newest][0].split(";")[0] if newest in SCHEMA_CHANGES else "a newer spbench"
        return (f"refusing to compare {key} measured by different code ({listing}): version {newest} changed "
                f"its meaning ({why})")
    return ""


# What ran: every Case field but overrides (typed in method_config) and device (a result's own).
CASE_FIELDS = tuple(f.name for f in dataclasses.fields(Case) if f.name not in ("overrides", "device"))
# The training setup a run shares with the other seeds of its configuration (``train_config``
# bar the seed and what follows from the case or the method: max_len, lr_schedule, validation).
SETUP_KEYS = ("budget", "warmup", "clip", "eval_every", "group_by_length", "select_on")
# Case fields every identity names; a field added later is named only off its default, so a
# configuration recorded before it existed keeps its identity (and a sweep its trial keys).
_FIRST_FIELDS = ("method", "backbone", "batch_size", "seq_len", "objective", "dtype")
IDENTITY_KEYS = (*CASE_FIELDS, "method_config", "device", "schema_version", "case_id")
TRAINING_KEYS = ("train_config", "stages", "best_step", "predictions")
# What a record must carry to be read at all (older records lack the newer Case fields).
REQUIRED_KEYS = ("method", "backbone", "batch_size", "seq_len", "device", "schema_version")


# The JSON types of the keys that are not Case fields (those take Case's annotations).
_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "method_config": (dict,), "device": (str,), "case_id": (str,), "schema_version": (int,),
    "status": (str,), "reason": (str,), "train_config": (dict, type(None)), "stages": (list, type(None)),
    "best_step": (int, type(None)), "predictions": (dict, type(None)),
}
_JSON_NAMES = {dict: "an object", list: "a list", str: "a string", int: "an integer", float: "a number",
               bool: "true or false", type(None): "null"}


def identity_key(case: Case, method_config: dict[str, Any], train_config: dict[str, Any] | None = None,
             device: str | None = None) -> str:
    """A configuration's identity, the one every grouping uses (report rows, seeds folded into
    one row, a sweep's configurations and its trial keys): the case's fields, its resolved
    hyperparameters, with ``train_config`` the training setup (:data:`SETUP_KEYS`; the seed is
    what tells the runs of one configuration apart), with ``device`` where it ran.

    A JSON text, so equal identities compare and hash equal.
    """
    defaults = _case_defaults()
    doc: dict[str, Any] = {k: getattr(case, k) for k in CASE_FIELDS
                           if k in _FIRST_FIELDS or getattr(case, k) != defaults[k]}
    doc["method_config"] = method_config
    if device is not None:
        doc["device"] = device
    if train_config is not None:
        doc["train"] = {k: train_config.get(k) for k in SETUP_KEYS}
    return json.dumps(doc, sort_keys=True, default=str)


@functools.cache
def _case_defaults() -> dict[str, Any]:
    return {f.name: f.default for f in dataclasses.fields(Case)}


@functools.cache
def _case_hints() -> dict[str, Any]:
    """Case's field annotations, resolved once (``get_type_hints`` evaluates every string anew)."""
    return typing.get_type_hints(Case)


def check_types(info: dict[str, Any]) -> None:
    """Every identity, status and training key of one ``extra_info`` has its JSON type (an
    integer is not a bool or a float, though older records' strings of digits pass); metrics
    are numbers."""
    hints = _case_hints()
    expected = {**{k: (hints[k],) for k in CASE_FIELDS if isinstance(hints[k], type)}, **_FIELD_TYPES}
    for key, types in expected.items():
        if key not in info:
            continue
        value = info[key]
        if int in types and isinstance(value, str) and value.strip().isdigit():
            continue  # an integer written as digits (older records): read as the integer
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
            raise InputError(f"{key} is {shown}, not {' or '.join(_JSON_NAMES.get(t, t.__name__) for t in types)}")
    for i, stage in enumerate(info.get("stages") or []):
        if not isinstance(stage, dict):
            raise InputError(f"stages[{i}] is {stage!r:.40}, not an object")
    for key in sorted(METRICS.keys() & info.keys()):
        if not isinstance(info[key], (int, float)) or isinstance(info[key], bool):
            raise InputError(f"{key} is {info[key]!r:.40}, not a number")
        why = METRICS[key].impossible(info[key])
        if why:
            raise InputError(f"{key} is {info[key]!r}, {why}")


@dataclass
class Result:
    """One case's identity, status and metrics (the ``extra_info`` of a benchmark).

    ``device`` is where it was measured (``case.device``), or :data:`PREDICTED`. Accuracy
    runs add their training configuration, per-stage figures and best checkpoint step.
    """

    case: Case
    method_config: dict[str, Any]
    device: str
    case_id: str
    status: str = "ok"  # "ok" | "oom" | "failed" | "skipped" | "pruned" | "collapsed" (trained to one class)
    reason: str = ""
    metrics: dict[str, float | int] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)  # flags such as "mlm_head_untrained"
    train_config: dict[str, Any] | None = None
    stages: list[dict[str, Any]] | None = None  # a multi-stage run's per-stage figures
    best_step: int | None = None  # the restored checkpoint's step (with eval_every)
    # per-example dev predictions of a finished run: {"split", "examples", "sha256" of the
    # examples, "labels", "predicted"} (labels and predictions as strings of digits)
    predictions: dict[str, Any] | None = None
    schema_version: int = SCHEMA_VERSION

    @classmethod
    def of(cls, case: Case, device: str | None = None, *, status: str = "ok", reason: str = "",
           metrics: dict[str, Any] | None = None, notes: dict[str, Any] | None = None,
           train_config: dict[str, Any] | None = None, stages: list[dict[str, Any]] | None = None,
           best_step: int | None = None, predictions: dict[str, Any] | None = None) -> "Result":
        """The result of ``case`` measured on ``device`` (default ``case.device``).

        Raises KeyError for a metric not declared in :data:`METRICS`.
        """
        for key in metrics or {}:
            if key not in METRICS:
                raise KeyError(f"undeclared metric {key!r}: add it to spbench.result.METRICS")
        try:
            config = case.method_config()
        except InputError:  # the case failed on its bad configuration: say so, keep the point
            config = {}
        return cls(case, config, case.device if device is None else device, case.id, status, reason,
                   dict(metrics or {}), dict(notes or {}), train_config, stages, best_step,
                   predictions)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def key(self, setup: bool = True, device: bool = True) -> str:
        """This result's configuration (:func:`identity_key`): with its training setup (a training
        run's; None for a benchmark step or a prediction) and the device it ran on."""
        keys = self.__dict__.setdefault("_keys", {})  # a report asks each record several times
        if (setup, device) not in keys:
            keys[setup, device] = identity_key(self.case, self.method_config, self.train_config if setup else None,
                                               self.device if device else None)
        return keys[setup, device]

    def identity(self) -> dict[str, Any]:
        return {**{k: getattr(self.case, k) for k in CASE_FIELDS}, "method_config": self.method_config,
                "device": self.device, "schema_version": self.schema_version, "case_id": self.case_id}

    def to_extra_info(self) -> dict[str, Any]:
        out = {**self.identity(), "status": self.status}
        if self.reason:
            out["reason"] = self.reason
        out.update(self.metrics)
        out.update({k: getattr(self, k) for k in TRAINING_KEYS if getattr(self, k) is not None})
        out.update(self.notes)
        return out

    @classmethod
    def from_extra_info(cls, info: dict[str, Any], name: str = "") -> "Result":
        """Read one ``extra_info`` back (records of older spbench included: a Case field they
        lack takes its default; ``case_id`` falls back to the benchmark's ``name``).

        Raises InputError naming the first field whose JSON type is wrong.
        """
        check_types(info)
        hints = _case_hints()
        fields = {key: int(info[key]) if hints[key] is int else info[key] for key in CASE_FIELDS if key in info}
        if info["device"] != PREDICTED:
            fields["device"] = info["device"]
        known = set(IDENTITY_KEYS) | set(METRICS) | set(TRAINING_KEYS) | {"status", "reason"}
        return cls(
            case=Case(**fields),
            method_config=info.get("method_config", {}),
            device=info["device"],
            case_id=str(info.get("case_id") or name),
            status=info.get("status", "ok"),
            reason=info.get("reason", ""),
            metrics={k: v for k, v in info.items() if k in METRICS},
            notes={k: v for k, v in info.items() if k not in known},
            train_config=info.get("train_config"),
            stages=info.get("stages"),
            best_step=info.get("best_step"),
            predictions=info.get("predictions"),
            schema_version=int(info.get("schema_version", SCHEMA_VERSION)),
        )
