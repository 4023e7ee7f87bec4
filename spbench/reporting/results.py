"""pytest-benchmark JSON -> validated records -> one row per case, grouped for tables.

A benchmark run writes two records per case: ``test_memory`` (device ``PREDICTED``: the
deterministic predicted figures) and ``test_step`` (device "cpu"/"cuda": measured peak and
step time); accuracy cases add a third. :func:`merge_rows` joins the records of one case
into one row *per measured device*, so a CPU and a CUDA measurement never share a column.
A figure is never compared across schema versions that gave it different meanings (STYLE rule
7, ``spbench.result.mixed_meanings``); figures whose meaning did not change are.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from spbench.case import Case
from spbench.errors import InputError
from spbench.result import CASE_FIELDS, METRICS, PREDICTED, REQUIRED_KEYS, Result, identity_key, mixed_meanings


@dataclass(frozen=True)
class Source:
    """One input file and the machine / commit it says it ran on."""

    path: str
    machine: str
    commit: str
    datetime: str


@dataclass(frozen=True)
class Record:
    """One benchmark entry of one file, as a Result."""

    source: str
    name: str
    result: Result

    @property
    def case_id(self) -> str:
        return self.result.case_id

    @property
    def schema_version(self) -> int:
        return self.result.schema_version


def _describe_machine(info: dict[str, Any]) -> str:
    cpu = info.get("cpu") or {}
    parts = [cpu.get("brand_raw") or info.get("machine") or "machine not recorded"]
    if cpu.get("count"):
        parts[0] += f" ({cpu['count']} cores)"
    if info.get("gpu_name"):
        parts.append(str(info["gpu_name"]))
    for key, name in (("torch_version", "torch"), ("transformers_version", "transformers")):
        if info.get(key):
            parts.append(f"{name} {info[key]}")
    return ", ".join(parts)


def read_json(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The parsed document of a pytest-benchmark JSON, or a :class:`InputError` saying what is wrong."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such file")
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"{p}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None
    except UnicodeDecodeError:
        raise InputError(f"{p}: not a text file (expected pytest-benchmark JSON)") from None
    except OSError as exc:
        raise InputError(f"{p}: cannot read ({exc.strerror or exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("benchmarks"), list):
        raise InputError(f"{p}: not a pytest-benchmark JSON (no 'benchmarks' list); "
                       f"write one with: pytest benchmarks/ --benchmark-json={p.name}")
    if not doc["benchmarks"]:
        raise InputError(f"{p}: the benchmark list is empty (no case ran or every case was deselected)")
    for key, kind in (("machine_info", dict), ("commit_info", dict), ("datetime", str)):
        if doc.get(key) is not None and not isinstance(doc[key], kind):
            raise InputError(f"{p}: {key} is {doc[key]!r:.40}, not {'an object' if kind is dict else 'a string'}")
    cpu = (doc.get("machine_info") or {}).get("cpu")
    if cpu is not None and not isinstance(cpu, dict):
        raise InputError(f"{p}: machine_info.cpu is {cpu!r:.40}, not an object")
    return doc


def records_of(doc: dict[str, Any], source: str) -> list[Record]:
    out = []
    for i, bench in enumerate(doc["benchmarks"]):
        name = bench.get("name", f"#{i}") if isinstance(bench, dict) else f"#{i}"
        info = bench.get("extra_info") if isinstance(bench, dict) else None
        missing = [k for k in REQUIRED_KEYS if not isinstance(info, dict) or k not in info]
        if missing:
            raise InputError(f"{source}: benchmark {name!r} carries no spbench result "
                           f"(extra_info lacks {', '.join(missing)}); is this a run of benchmarks/?")
        try:
            result = Result.from_extra_info(info, name)
        except (TypeError, ValueError) as exc:
            raise InputError(f"{source}: benchmark {name!r}: {exc}") from None
        out.append(Record(source, name, result))
    return out


def load(paths: Iterable[str | os.PathLike[str]]) -> tuple[list[Source], list[Record]]:
    """Read every file; refuse a mix of schema versions (within or across files). A file given
    twice is read once and a run found twice counts once (a warning names them), so no seed is
    averaged twice."""
    sources, records = [], []
    read: list[str] = []
    duplicates: list[str] = []
    for path in paths:
        again = next((p for p in read if same_file(p, path)), None)
        if again is not None:
            duplicates.append(f"{path} (the file {again} again)")
            continue
        read.append(str(path))
        doc = read_json(path)
        commit = doc.get("commit_info") or {}
        cid = str(commit.get("id") or "")[:10]
        sources.append(Source(str(path), _describe_machine(doc.get("machine_info") or {}),
                              cid + (" (dirty)" if commit.get("dirty") else ""), str(doc.get("datetime", ""))))
        records += records_of(doc, str(path))
    records = _once(records, duplicates)
    if duplicates:
        shown = "; ".join(duplicates[:3]) + (f"; and {len(duplicates) - 3} more" if len(duplicates) > 3 else "")
        print(f"spbench: warning: {len(duplicates)} duplicate(s) counted once: {shown}", file=sys.stderr)
    schema_version(records)
    return sources, records


def _once(records: list[Record], duplicates: list[str]) -> list[Record]:
    """``records`` with each training run once, a run being its identity, training setup and
    seed: the same run twice is dropped (named in ``duplicates``), one seed with two different
    results is refused, as no mean over seeds can hold both. Other records (a benchmark step,
    a prediction) count nothing: identical copies merge into one row as they are."""
    kept: dict[str, Record] = {}
    out = []
    for rec in records:
        res = rec.result
        seed = (res.train_config or {}).get("seed")
        if seed is None:
            out.append(rec)
            continue
        key = json.dumps([res.key(), seed])
        first = kept.get(key)
        if first is None:
            kept[key] = rec
            out.append(rec)
        elif _run_key(first.result) == _run_key(res):
            where = f"twice in {rec.source}" if first.source == rec.source else f"in {rec.source}, as in {first.source}"
            duplicates.append(f"{_what_run(rec)} {where}")
        else:
            raise InputError(f"{_what_run(rec)} has two different results ({first.source}: {first.name!r}, "
                             f"{rec.source}: {rec.name!r}); keep one run per seed, or report them separately")
    return out


def _what_run(rec: Record) -> str:
    seed = (rec.result.train_config or {}).get("seed")
    return f"case {rec.case_id} on {rec.result.device}" + (f" seed {seed}" if seed is not None else "")


def _run_key(res: Result) -> str:
    """What one run measured: its status, figures and training record (not its notes or name)."""
    return json.dumps([res.status, res.reason, res.metrics, res.train_config, res.stages, res.best_step,
                       res.predictions], sort_keys=True, default=str)


def schema_version(records: list[Record]) -> int:
    """The newest schema version of ``records``; a clear error when they would compare a figure
    across versions that gave it different meanings."""
    why = mixed_meanings([(r.source, r.result) for r in records])
    if why:
        raise InputError(f"{why}; re-run the older cases or report them separately")
    return max(r.schema_version for r in records)


@dataclass
class Row:
    """One case on one measured device (``device`` None: predicted figures only)."""

    case: Case
    method_config: dict[str, Any]
    device: str | None
    case_id: str
    metrics: dict[str, float] = field(default_factory=dict)
    status: dict[str, str] = field(default_factory=dict)  # record device -> "ok" | "oom" | "failed"
    reasons: dict[str, str] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)
    train_config: dict[str, Any] | None = None
    stages: list[dict[str, Any]] | None = None
    best_step: int | None = None
    label: str = ""
    spread: dict[str, tuple[float | None, int]] = field(default_factory=dict)  # over seeds: (std, n) (seeds.py)
    interval: dict[str, tuple[float, float]] = field(default_factory=dict)  # 95% over dev examples (stats.py)
    correct: Any = None  # (seeds x dev examples) 0/1 array, for paired comparisons (stats.py)

    def __getattr__(self, name: str) -> Any:  # row.method, row.backbone, ...: the case's fields
        if name in CASE_FIELDS:
            return getattr(self.case, name)
        raise AttributeError(name)

    @property
    def ok(self) -> bool:
        return all(s == "ok" for s in self.status.values())

    @property
    def status_text(self) -> str:
        if self.ok:
            return "ok"
        return ", ".join(f"{_kind(d)} {s}" for d, s in sorted(self.status.items()) if s != "ok")

    @property
    def group(self) -> tuple[Any, ...]:
        """What one table shares: every identity field but the method and its levers (which the
        row's label shows: ``full_ft+gc`` beside ``full_ft``), and the measured device."""
        base = self.case.without_levers()
        return (*(_key(getattr(base, k)) for k in CASE_FIELDS if k != "method"), self.device or "")


def _kind(device: str) -> str:
    return "predicted" if device == PREDICTED else f"measured ({device})"


def _key(value: Any) -> Any:
    return value if isinstance(value, (str, int, float, bool, type(None))) else json.dumps(value, sort_keys=True)


def _config_key(config: dict[str, Any]) -> str:
    return json.dumps(config, sort_keys=True, default=str)


def _is_training_run(rec: Record) -> bool:
    return any(k in rec.result.metrics for k in ("sst2_accuracy", "train_steps"))


def _merge_into(row: Row, rec: Record) -> None:
    res = rec.result
    for key, value in res.metrics.items():
        if key in row.metrics and row.metrics[key] != value and _is_training_run(rec):
            # An SST-2 run measures its peak at its own (dynamically padded) shapes: the
            # benchmark step keeps the column, the run's figure is shown as a note.
            row.notes[f"{key} in the SST-2 training run"] = value
            continue
        if key in row.metrics and row.metrics[key] != value:
            raise InputError(f"case {rec.case_id} has two values of {key} on {res.device} "
                             f"({row.metrics[key]} and {value}, the latter in {rec.source}); "
                             "report one run per case, or the runs in separate reports")
        row.metrics[key] = value
    row.status[res.device] = res.status
    if res.reason:
        row.reasons[res.device] = res.reason
    row.notes.update(res.notes)
    for key in ("train_config", "stages", "best_step"):
        if getattr(res, key) is not None:
            setattr(row, key, getattr(res, key))


def merge_rows(records: list[Record]) -> list[Row]:
    """One row per (case, measured device); predicted figures join every measured row of their case."""
    cases: dict[str, dict[str, list[Record]]] = {}  # configuration -> device -> records
    by_id: dict[str, str] = {}
    unknown = []  # records without a method_config (a case that failed before recording it)
    for rec in records:
        r = rec.result
        if not r.method_config:
            unknown.append(rec)
            continue
        key = identity_key(r.case, r.method_config)
        cases.setdefault(key, {}).setdefault(r.device, []).append(rec)
        by_id.setdefault(r.case_id, key)
    configs_of: dict[str, list[str]] = {}  # the case alone -> its configurations
    for key in cases:
        first = next(iter(cases[key].values()))[0].result
        configs_of.setdefault(identity_key(first.case, {}), []).append(key)
    for rec in unknown:  # joins its case's row (same case id, else the case's only configuration)
        r = rec.result
        alone = identity_key(r.case, {})
        same_case = configs_of.get(alone, [])
        key = by_id.get(r.case_id) or (same_case[0] if len(same_case) == 1 else alone)
        cases.setdefault(key, {}).setdefault(r.device, []).append(rec)
    rows = []
    for by_device in cases.values():
        predicted = by_device.pop(PREDICTED, [])
        for device in sorted(by_device) or [None]:
            records_here = predicted + (by_device[device] if device else [])
            first = next((rec.result for rec in records_here if rec.result.method_config), records_here[0].result)
            row = Row(first.case, first.method_config, device, first.case_id)
            measured = sorted(by_device[device] if device else [], key=_is_training_run)
            for rec in predicted + measured:
                _merge_into(row, rec)
            rows.append(row)
    _label(rows)
    return sorted(rows, key=lambda row: (row.group, row.method, row.case.levers, _config_key(row.method_config)))


def _label(rows: list[Row]) -> None:
    """Name rows by method, plus the hyperparameters that tell its configurations apart."""
    configs: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if row.method_config:  # an unrecorded configuration tells nothing apart
            configs.setdefault(row.method, []).append(row.method_config)
    differs = {method: sorted(k for k in {k for c in seen for k in c}
                              if len({_config_key({"v": c.get(k)}) for c in seen}) > 1)
               for method, seen in configs.items()}  # once per method: linear in the rows
    for row in rows:
        if not row.method_config and row.method in configs:
            row.label = f"{row.method} (configuration not recorded)"
            continue
        differing = differs.get(row.method, [])
        extra = ", ".join(f"{k}={_short(row.method_config.get(k))}" for k in differing)
        name = "+".join((row.method, *row.case.levers))
        row.label = f"{name} ({extra})" if extra else name


def _short(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "+".join(map(str, value)) or "[]"
    return str(value)


def groups(rows: list[Row]) -> list[tuple[str, list[Row]]]:
    """Rows split by (backbone, shape, dtype, objective, measured device), each with a title."""
    out: dict[tuple[Any, ...], list[Row]] = {}
    for row in rows:
        out.setdefault(row.group, []).append(row)
    return [(group_title(rs[0]), rs) for rs in out.values()]


def group_title(row: Row) -> str:
    """backbone, shape, dtype, a non-default objective, any other non-default Case field, device
    (levers are in the rows' labels)."""
    case = row.case.without_levers()
    dtype = f"{case.dtype} autocast" if case.autocast_dtype else case.dtype  # "+bf16-weights" rows: their label
    parts = [case.backbone, f"batch {case.batch_size} x seq {case.seq_len}", dtype]
    if case.objective != "classification":
        parts.append(f"{case.objective} objective")
    shown = {"method", "backbone", "batch_size", "seq_len", "dtype", "objective"}
    defaults = {f.name: f.default for f in dataclasses.fields(Case)}
    parts += [f"{k}={getattr(case, k)}" for k in CASE_FIELDS
              if k not in shown and getattr(case, k) != defaults[k]]
    parts.append(f"measured on {row.device}" if row.device else "predicted only")
    return ", ".join(parts)


def same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Whether two paths name one file: the same resolved path, or (both existing) one inode,
    as a hard link or a bind mount make."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet)
        return Path(a).resolve() == Path(b).resolve()


def refuse_overwriting(outputs: dict[str, str | None], inputs: Iterable[str | os.PathLike[str]]) -> None:
    """Refuse an output (``{option: path}``) that is one of the inputs or another output: the
    write would destroy what is being read, or one output would replace the other."""
    # /dev/null, /dev/stdout and other special files are written through, never replaced
    given = [(option, path) for option, path in outputs.items()
             if path and not (Path(path).exists() and not Path(path).is_file())]
    for option, path in given:
        clash = next((str(p) for p in inputs if same_file(path, p)), None)
        if clash is not None:
            raise InputError(f"{option} {path} is the input {clash}: writing it would destroy it; "
                             "write somewhere else")
    for i, (option, path) in enumerate(given):
        for other, other_path in given[i + 1:]:
            if same_file(path, other_path):
                raise InputError(f"{option} and {other} both name {path}: one would replace the other")


def write_atomic(path: str | os.PathLike[str], data: str | bytes) -> None:
    """Write via a temporary file in the same folder and a rename: never a half-written file."""
    target = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    if target.exists() and not target.is_file():  # /dev/null, /dev/stdout, a pipe: never replace it
        try:
            with open(target, "wb") as fh:
                fh.write(payload)
        except OSError as exc:
            raise InputError(f"cannot write {target}: {exc.strerror or exc}") from None
        return
    blocking = next((p for p in target.parents if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise InputError(f"cannot write {target}: {blocking} is a file, not a folder")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise InputError(f"cannot write {target}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a report is an ordinary file
        os.replace(tmp, target)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise InputError(f"cannot write {target}: {exc.strerror or exc}") from None
        raise
