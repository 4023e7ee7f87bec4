"""What a sweep is: the fixed case and training setup, the search space, the seeds, the storage.

A study is named after everything that makes its trials comparable (method, backbone, shape,
objective, dtype, ``--set``, the training budget and setup, single- or multi-objective), so
one storage holds many studies: a quarter-epoch grid and a one-epoch seed study of the same
method live side by side. Trials are keyed by their resolved configuration (the case, every
hyperparameter, the training setup) and seed: the key decides "this already ran", whichever
sampler, worker or machine produced the trial.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from spbench.case import Case
from spbench.errors import InputError
from spbench.result import SETUP_KEYS, identity_key
from spbench.sweep.space import Param, grid_size
from spbench.train import DEFAULT_CLIP, DEFAULT_CPU_BUDGET, DEFAULT_WARMUP

JOURNAL_NAME = "sweep.journal"
SAMPLERS = ("auto", "grid", "tpe", "nsga2")
PRUNERS = ("none", "halving", "hyperband")  # spbench.sweep.pruning
DEFAULT_HEARTBEAT_S = 60
DEFAULT_MAX_RETRY = 3


@dataclass(frozen=True)
class Setup:
    """Everything one ``spbench sweep`` invocation fixes; every worker builds the same one."""

    case: Case  # the fixed case (``--set`` its overrides); each trial adds its searched parameters
    params: tuple[Param, ...]
    seeds: tuple[int, ...] = (0,)
    budget: str = DEFAULT_CPU_BUDGET
    sampler: str = "grid"  # grid | tpe | nsga2 (resolved from "auto")
    trials: int | None = None  # configurations to sample (tpe / nsga2)
    pareto: bool = False
    warmup: float = DEFAULT_WARMUP
    clip: float | None = DEFAULT_CLIP
    eval_every: int = 0
    group_by_length: bool = True
    select_on: str = "validation"  # "dev" only when asked for (--select-on dev)
    pruner: str = "none"  # none | halving | hyperband (multi-fidelity: weak trials stop early)
    study: str = ""  # empty: derived (``study_name``)
    max_retry: int = DEFAULT_MAX_RETRY
    sst2_dir: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        check_ranges(trials=self.trials, warmup=self.warmup, clip=self.clip)
        if self.sampler not in SAMPLERS[1:]:
            raise InputError(f"sampler {self.sampler!r}: choose grid, tpe or nsga2")
        if self.sampler != "grid" and not self.trials:
            raise InputError(f"the {self.sampler} sampler needs --trials N (how many configurations to try)")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise InputError(f"--seeds must list distinct seeds, not {self.seeds}")
        if self.select_on not in ("validation", "dev"):
            raise InputError(f"--select-on {self.select_on!r}: choose validation or dev")
        if self.pruner not in PRUNERS:
            raise InputError(f"--pruner {self.pruner!r}: choose {', '.join(PRUNERS)}")
        if self.pruner != "none" and self.pareto:
            raise InputError("--pruner stops trials on one objective; it does not combine with --pareto")
        if self.pruner != "none" and len(self.seeds) > 1:
            raise InputError("a pruned search selects a configuration with one seed; repeat the best one "
                             "with --best-from STUDY --seeds 0,1,2")

    @property
    def configs(self) -> int:
        """Configurations the sweep will train (each once per seed)."""
        return grid_size(self.params) if self.sampler == "grid" else int(self.trials or 0)

    @property
    def units(self) -> int:
        return self.configs * len(self.seeds)

    def train_config(self) -> dict[str, Any]:
        """The training setup every trial shares (the seed is per trial): ``SETUP_KEYS``."""
        values = {"budget": self.budget, "warmup": self.warmup, "clip": self.clip, "eval_every": self.eval_every,
                  "group_by_length": self.group_by_length, "select_on": self.select_on}
        return {k: values[k] for k in SETUP_KEYS}

    def trial_case(self, params: dict[str, Any]) -> Case:
        """The Case of one configuration: the fixed case, its ``--set`` plus the trial's parameters."""
        overrides = dict(self.case.overrides)
        overrides.update({k: _text(v) for k, v in params.items()})
        return dataclasses.replace(self.case, overrides=tuple(sorted(overrides.items())))

    @property
    def study_name(self) -> str:
        if self.study:
            return self.study
        case = self.case
        parts = [case.method, _short_backbone(case.backbone), f"b{case.batch_size}", f"s{case.seq_len}"]
        if case.objective != "classification":
            parts.append(case.objective)
        if case.dtype != "float32":
            parts.append(case.dtype)
        if case.grad_checkpointing:
            parts.append("gc")
        parts += [f"{k}={v}" for k, v in case.overrides]
        parts.append(self.budget.replace("=", ""))
        if self.pareto:
            parts.append("pareto")
        if self.pruner != "none":
            parts.append(f"pruned-{self.pruner}")
        rest = {k: v for k, v in self.train_config().items() if k != "budget"}
        if rest != _default_rest():  # a non-default training setup gets its own study
            parts.append(digest(rest)[:8])
        return "-".join(parts)

    def identity(self) -> dict[str, Any]:
        """What a study is (``STUDY_KEYS``): a resumed study must match it. The searched space,
        the seeds and the number of trials may grow; none of these may change."""
        case = self.case
        return {"method": case.method, "backbone": case.backbone, "batch_size": case.batch_size,
                "seq_len": case.seq_len, "objective": case.objective, "dtype": case.dtype,
                "grad_checkpointing": case.grad_checkpointing, "device": case.device, "set": dict(case.overrides),
                "train_config": self.train_config(), "pareto": self.pareto, "pruner": self.pruner}

    def describe(self) -> dict[str, Any]:
        """Stored with the study: what it is (:meth:`identity`), what it searched and how."""
        return {**self.identity(), "seeds": list(self.seeds), "sampler": self.sampler, "trials": self.trials,
                "units": self.units, "select_on": self.select_on,
                "space": {p.name: {"space": p.describe(), "grid": list(p.grid)} for p in self.params}}

    def differences(self, stored: dict[str, Any]) -> list[str]:
        """What in ``stored`` (a study's recorded setup) this setup does not match, as
        ``key: stored, not ours``. A key the record lacks (an older spbench's) is not compared."""
        ours = json.loads(json.dumps(self.identity(), default=str))  # as the storage holds it
        out = []
        for key, value in ours.items():
            if key not in stored:
                continue
            if isinstance(value, dict) and isinstance(stored[key], dict) and key != "set":
                out += [f"{k}: {stored[key][k]}, not {v}" for k, v in value.items()
                        if k in stored[key] and stored[key][k] != v]
            elif stored[key] != value:
                out.append(f"{key}: {stored[key]}, not {value}")
        return out


def check_ranges(*, trials: int | None = None, warmup: float | None = None, clip: float | None = None,
                 workers: int | None = None) -> None:
    """The values that parse but cannot be: refused before a sweep opens its storage (``None``:
    not given). ``--clip 0`` means no clipping; a negative or non-finite one means nothing."""
    if trials is not None and trials < 1:
        raise InputError(f"--trials must be at least 1, not {trials}")
    if warmup is not None and not 0 <= warmup < 1:  # also refuses nan
        raise InputError(f"--warmup must be a share of the steps in [0, 1), not {warmup:g}")
    if clip is not None and not (math.isfinite(clip) and clip >= 0):
        raise InputError(f"--clip must be a finite max gradient norm >= 0 (0: none), not {clip:g}")
    if workers is not None:
        cores = os.cpu_count() or 1
        if not 1 <= workers <= cores:
            raise InputError(f"--workers must be between 1 and the {cores} CPU core(s) here, not {workers}")


def _default_rest() -> dict[str, Any]:
    defaults = {f.name: f.default for f in dataclasses.fields(Setup)}
    return {k: defaults[k] for k in SETUP_KEYS if k != "budget"}


def _text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return str(value)


def _short_backbone(name: str) -> str:
    return Path(name).name if os.sep in name else name.replace("/", "_")


def digest(obj: Any) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def config_key(case: Case, method_config: dict[str, Any], setup: Setup) -> str:
    """What makes two trials the same configuration (:func:`spbench.result.identity_key`: the
    case, every resolved hyperparameter, the device, the training setup; not the seed)."""
    return hashlib.sha1(identity_key(case, method_config, setup.train_config(), case.device).encode()).hexdigest()[:16]


def unit_key(config: str, seed: int) -> str:
    return f"{config}/seed={seed}"


# --- storage and study ------------------------------------------------------------------------

def open_storage(url: str | None, out: str | os.PathLike[str], heartbeat_s: int = DEFAULT_HEARTBEAT_S,
                 max_retry: int = DEFAULT_MAX_RETRY) -> Any:
    """The Optuna storage: a journal file (default ``OUT/sweep.journal``, or a path given as
    ``--storage``) or a database URL (``postgresql://...``, ``sqlite:///...``) with Optuna's
    heartbeat: a trial whose worker stops beating for ``2 x heartbeat_s`` is marked failed and
    re-queued (``RetryHeartbeatStaleTrialCallback``)."""
    import optuna

    if url and "://" in url:
        engine = {"pool_pre_ping": True} if url.startswith(("postgresql", "mysql")) else {}
        try:
            return optuna.storages.RDBStorage(
                url, engine_kwargs=engine, heartbeat_interval=heartbeat_s, grace_period=2 * heartbeat_s,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry))
        except ImportError as exc:
            raise InputError(f"--storage {_redact(url)}: its database driver is missing ({exc})") from None
        except Exception as exc:  # sqlalchemy's OperationalError and friends: name the server's answer
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputError(f"--storage {_redact(url)}: cannot open the database: {first}") from None
    path = Path(url) if url else Path(out) / JOURNAL_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock

    if path.exists():
        if not path.is_file():
            raise InputError(f"--storage {path}: not a file (a journal file path or a database URL)")
        with _journal_lock(JournalFileSymlinkLock(str(path))):  # Optuna's own lock: no append is under way
            repair_journal(path)
    return optuna.storages.JournalStorage(JournalFileBackend(str(path)))


# Optuna writes each journal record as one compact JSON object, its op code first.
_JOURNAL_START = b'{"op_code":'


@contextlib.contextmanager
def _journal_lock(lock: Any) -> Iterator[None]:
    lock.acquire()
    try:
        yield
    finally:
        lock.release()


def repair_journal(path: Path) -> None:
    """Make an Optuna journal file safe to append to, or refuse it.

    Optuna appends whole lines; a crash mid-append leaves a last line cut short, and the next
    append would land on it, leaving a line no reader can parse. That cut line is dropped here
    (a warning says how many bytes). A damaged line before the last is an error naming it, and
    a file that does not start as a journal is refused untouched (a wrong ``--storage``)."""
    data = path.read_bytes()
    if not data:
        return
    lines = data.splitlines(keepends=True)
    first = _journal_record(lines[0])
    if first is None or "op_code" not in first:
        torn_journal = len(lines) == 1 and not data.endswith(b"\n") and (
            data.startswith(_JOURNAL_START) or _JOURNAL_START.startswith(data))
        if not torn_journal:
            raise InputError(f"--storage {path}: not an Optuna journal (its first line is {_preview(lines[0])}); "
                             "name a new file, or a journal a sweep wrote")
    for number, line in enumerate(lines[:-1], start=1):
        if _journal_record(line) is None:
            raise InputError(f"{path}: line {number} of {len(lines)} is damaged ({_preview(line)}), not a journal "
                             "record; restore the file from a copy, or move it aside to start the sweep afresh")
    last = lines[-1]
    if _journal_record(last) is not None:
        return
    keep = len(data) - len(last)
    os.truncate(path, keep)
    print(f"spbench sweep: warning: {path}: its last line was cut short (a write interrupted by a crash); "
          f"dropped those {len(last)} bytes ({_preview(last)}), kept {len(lines) - 1} whole line(s)",
          file=sys.stderr, flush=True)


def _journal_record(line: bytes) -> dict[str, Any] | None:
    """The record of one whole journal line (ending in a newline), else None."""
    if not line.endswith(b"\n"):
        return None
    try:
        record = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return record if isinstance(record, dict) else None


def _preview(line: bytes) -> str:
    text = line.decode("utf-8", errors="replace").rstrip("\n")
    return repr(text if len(text) <= 40 else text[:37] + "...")


def _redact(url: str) -> str:
    """A URL without its password, for messages."""
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if not at or ":" not in creds:
        return url
    return f"{scheme}{sep}{creds.split(':')[0]}:***@{host}"


def make_sampler(setup: Setup) -> Any:
    import optuna

    from spbench.sweep.space import grid_of

    if setup.sampler == "grid":

        class GridSampler(optuna.samplers.GridSampler):
            """Optuna's grid sampler without its stop-when-exhausted hook: the worker loop decides
            when a sweep ends (it waits for queued seeds and re-queued trials), and that hook
            raises KeyError('grid_id') on trials queued with ``enqueue_trial``."""

            def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
                pass

        return GridSampler(grid_of(setup.params))
    if setup.sampler == "tpe":
        # constant_liar: parallel workers see each other's running trials, as Optuna advises
        return optuna.samplers.TPESampler(constant_liar=True, multivariate=len(setup.params) > 1)
    return optuna.samplers.NSGAIISampler(population_size=max(2, min(50, int(setup.trials or 2))))


def open_study(setup: Setup, storage: Any) -> Any:
    """Create or load the study; refuse one that optimises other objectives."""
    import optuna

    from spbench.sweep.pruning import make_pruner

    directions = ["maximize", "minimize"] if setup.pareto else ["maximize"]
    study = optuna.create_study(study_name=setup.study_name, storage=storage, sampler=make_sampler(setup),
                                pruner=make_pruner(setup), directions=directions, load_if_exists=True)
    have = [d.name.lower() for d in study.directions]
    if have != directions:
        raise InputError(f"study {setup.study_name!r} optimises {', '.join(have)}, not {', '.join(directions)}; "
                         "name another with --study")
    stored = study.user_attrs.get("spbench_setup")
    if stored is None:  # new, or made before studies recorded what they are: record it
        study.set_user_attr("spbench_setup", setup.describe())
        return study
    differ = setup.differences(stored)
    if differ:
        raise InputError(f"study {setup.study_name!r} was made with another setup ({'; '.join(differ)}): resuming "
                         "it would report its results as this run's; name another with --study, or leave --study "
                         "out to derive one")
    return study
