"""The options of a benchmark matrix, checked once and up front, the same way everywhere.

``spbench run`` (before it starts pytest), ``pytest benchmarks/`` (its conftest, before
collection) and ``spbench estimate`` all turn their option strings into cases here, so a bad
value is one line naming the option, exit code 2 (a usage error in pytest), before any work:

    Options(methods="lora,side_lora", backbones="roberta-base", shapes="8x256,16x128",
            dtypes="float32,bfloat16", grad_checkpointing="off,on", sets=("r=16",)).cases("memory")

Checked: every method, backbone (an unreadable checkpoint or an uncached hub id included),
objective, dtype and device; every shape, also against each backbone's positions; every
``--set`` key belongs to at least one selected method (did-you-mean otherwise) and its value
parses for every method that has it and lies in its field's domain; the accuracy budget,
shape and SST-2 folder.

Each option is declared once, in :data:`RUN_OPTIONS` (flag, default, type, domain, help): the
same declaration adds it to ``spbench run``'s parser and to the pytest plugin's
(``benchmarks/conftest.py``), reads it back from either (:meth:`Options.read`) and writes it
into the pytest command line ``spbench run`` starts (:meth:`Options.argv`), as
pytest-benchmark's ``add_global_options`` serves its plugin and its own command line. The
sweep and ``spbench estimate`` add the options they share (``--set``, ``--objective``, ...)
from the same table.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass
from typing import Any, Callable

from spbench.case import Case
from spbench.domains import Domain, at_least
from spbench.errors import InputError
from spbench.overrides import parse_overrides

KINDS = ("memory", "step", "accuracy")
DEFAULT_BACKBONES = {"memory": "distilbert-base,roberta-large", "step": "distilbert-base", "accuracy": "minilm-l6"}
DEFAULT_SHAPES = "16x128"
DEFAULT_ACCURACY_SHAPE = "32x64"


def split(text: str) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]``."""
    return [s.strip() for s in (text or "").split(",") if s.strip()]


def parse_shapes(text: str, option: str = "--shapes") -> list[tuple[int, int]]:
    """``"16x128,32x256"`` -> ``[(16, 128), (32, 256)]``."""
    out = []
    for item in split(text):
        b, sep, s = item.partition("x")
        if not sep or not b.strip().isdigit() or not s.strip().isdigit():
            raise InputError(f"{option} wants BATCHxSEQ items like 16x128, got {item!r}")
        out.append((int(b), int(s)))
    if not out:
        raise InputError(f"{option} is empty; give BATCHxSEQ items like 16x128")
    return out


def method_overrides(names: list[str], sets: tuple[str, ...] | list[str]) -> dict[str, tuple[tuple[str, str], ...]]:
    """Each method's share of the ``--set`` pairs (a key applies to every method that has it).

    A key no selected method has is an error (with did-you-mean), never silently dropped; a
    value is parsed by every method that has the key.
    """
    from spbench import methods

    pairs = parse_overrides(list(sets))
    fields = {n: {f.name for f in dataclasses.fields(methods.get(n))} for n in names}
    known = set().union(*fields.values()) if fields else set()
    for key, _ in pairs:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=3, cutoff=0.4)
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
            where = (f"method {names[0]!r} has no hyperparameter {key!r}.{hint} Its" if len(names) == 1 else
                     f"no hyperparameter {key!r} in any selected method ({', '.join(names)}).{hint} Their")
            raise InputError(f"--set {key}: {where} hyperparameters: {', '.join(sorted(known))}")
    out = {n: tuple((k, v) for k, v in pairs if k in fields[n]) for n in names}
    for name, own in out.items():
        for key, value in own:  # every value typed, for every method that takes it
            try:
                methods.get(name).from_overrides({key: value})
            except InputError as exc:
                raise InputError(f"--set {key}={value} ({name}): {exc}") from None
    return out


def parse_switches(text: str, option: str) -> list[bool]:
    """``"off"`` (also the default, ""), ``"on"`` or ``"off,on"`` -> the values to run."""
    values = {"off": False, "on": True}
    items = split(text) or ["off"]
    bad = [v for v in items if v not in values]
    if bad:
        raise InputError(f"{option} wants off, on or off,on, got {text!r}")
    return list(dict.fromkeys(values[v] for v in items))


def levers(name: str, dtype: str, checkpointing: list[bool]) -> list[bool]:
    """The checkpointing values method ``name`` runs at ``dtype``: a lever only where it applies
    (half-precision weights, gradient checkpointing), so a matrix stays a product of options."""
    from spbench import methods
    from spbench.case import WEIGHT_DTYPES

    cls = methods.get(name)
    if dtype in WEIGHT_DTYPES and not cls.supports_half_weights:
        return []
    return checkpointing if cls.supports_grad_checkpointing else [False]


def check_device(device: str) -> None:
    """A device torch can name, and CUDA only where there is one."""
    import torch

    try:
        dev = torch.device(device)
    except RuntimeError:
        raise InputError(f"--device {device!r} is not a device; write cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {device}: no CUDA device is available here")
    if dev.type not in ("cpu", "cuda"):
        raise InputError(f"--device {device!r}: spbench measures on cpu or cuda")


def check_cases(cases: list[Case]) -> None:
    """Each case's own checks (``Case.validate``: names, shape, dtype, hyperparameters, the
    backbone's positions) and each device once."""
    for device in sorted({c.device for c in cases} - {"cpu"}):
        check_device(device)
    for case in cases:
        case.validate()


@dataclass(frozen=True)
class Option:
    """One run option: its flag, default, type, domain, help, and whether only accuracy cases read it."""

    flag: str
    help: str
    default: Any = ""
    type: type = str
    domain: Domain | None = None
    repeat: bool = False  # given once per value (``--set r=16 --set lr=1e-3``)
    metavar: str | None = None
    accuracy: bool = False  # passed on to pytest only by an accuracy run (it selects accuracy cases)
    field: str = ""  # the Options field (default: the flag's dest)

    @property
    def dest(self) -> str:
        return self.flag[2:].replace("-", "_")

    @property
    def name(self) -> str:
        return self.field or self.dest

    def add(self, add_argument: Callable[..., Any], **changes: Any) -> None:
        """Declare it through ``add_argument``: argparse's ``add_argument`` or pytest's ``addoption``."""
        kwargs: dict[str, Any] = {"default": [] if self.repeat else self.default, "help": self.help}
        if self.repeat:
            kwargs["action"] = "append"
        if self.type is not str:
            kwargs["type"] = self.type
        if self.metavar:
            kwargs["metavar"] = self.metavar
        add_argument(self.flag, **{**kwargs, **changes})

    def check(self, value: Any) -> None:
        why = self.domain.why_not(value) if self.domain is not None else ""
        if why:
            raise InputError(f"{self.flag} {why}")

    def argv(self, value: Any) -> list[str]:
        """The arguments that give ``value`` on a command line (none for the default)."""
        if self.repeat:
            return [f"{self.flag}={v}" for v in value]
        return [] if value is None or value == self.default else [f"{self.flag}={value}"]


RUN_OPTIONS: tuple[Option, ...] = (
    Option("--methods", "comma-separated registry keys (default: all)"),
    Option("--backbones", f"comma-separated backbones (default: memory {DEFAULT_BACKBONES['memory']}; "
                          f"step {DEFAULT_BACKBONES['step']}; accuracy {DEFAULT_BACKBONES['accuracy']})"),
    Option("--shapes", f"BATCHxSEQ list, e.g. 16x128,32x256 (default: {DEFAULT_SHAPES})"),
    Option("--dtypes", "float32 (default), bfloat16 (autocast), bf16-weights (half weights: methods where sound)"),
    Option("--grad-checkpointing", "activation checkpointing: off (default), on, or off,on (both, where it "
                                   "applies: methods whose backward goes through the backbone)", metavar="off,on"),
    Option("--objective", "classification (default) | prompt"),
    Option("--device", "cpu | cuda | cuda:N: where the measured step cases run and the accuracy cases train", default="cpu"),
    Option("--set", "method hyperparameter for every selected method that has it, repeatable "
                    "(e.g. --set r=16 --set scope=targets)", repeat=True, metavar="KEY=VALUE", field="sets"),
    Option("--sst2-dir", "SST-2 folder (else $SPBENCH_SST2_DIR, else the hub)", default=None, accuracy=True),
    Option("--budget", "accuracy: examples=N | steps=N | epochs=X (default: examples=8000)", accuracy=True),
    Option("--accuracy-shape", f"accuracy: BATCHxMAX_LEN (default: {DEFAULT_ACCURACY_SHAPE})", accuracy=True),
    Option("--seed", "accuracy: training seed (weights, dropout, data order; default: 0)", default=0, type=int,
           domain=at_least(0), accuracy=True),
    Option("--eval-every", "accuracy: score the validation split every N steps, keep the best (dev is scored "
                           "once, at the end; default: 0, never)", default=0, type=int, domain=at_least(0),
           accuracy=True),
)
OPTION = {o.name: o for o in RUN_OPTIONS}


def add_options(add_argument: Callable[..., Any], names: Any = None, **changes: dict[str, Any]) -> None:
    """Declare the run options ``names`` (default: all) through ``add_argument``; ``changes``
    maps an option's name to keyword changes (a front end's own default or help)."""
    for option in RUN_OPTIONS:
        if names is None or option.name in names:
            option.add(add_argument, **changes.get(option.name, {}))


@dataclass(frozen=True)
class Options:
    """Option values as given (empty: the default for the kind of case); one field per
    :data:`RUN_OPTIONS` entry."""

    methods: str = ""
    backbones: str = ""
    shapes: str = ""
    dtypes: str = ""
    grad_checkpointing: str = ""  # "off" (default), "on", "off,on"
    objective: str = ""
    device: str = "cpu"
    sets: tuple[str, ...] = ()
    sst2_dir: str | None = None
    budget: str = ""
    accuracy_shape: str = ""
    seed: int = 0
    eval_every: int = 0

    @classmethod
    def read(cls, get: Callable[[str], Any]) -> "Options":
        """The options from a parsed command line: ``get(dest)`` is ``getattr(args, dest)`` for
        argparse, ``config.getoption(dest)`` for pytest."""
        values = {o.name: get(o.dest) for o in RUN_OPTIONS}
        return cls(**{k: tuple(v or ()) if OPTION[k].repeat else v for k, v in values.items()})

    def argv(self, accuracy: bool) -> list[str]:
        """These options as pytest arguments (the accuracy ones only for an accuracy run)."""
        return [a for o in RUN_OPTIONS if accuracy or not o.accuracy for a in o.argv(getattr(self, o.name))]

    def cases(self, kind: str, validate: bool = True) -> list[Case]:
        """The validated cases of ``kind`` ("memory", "step" or "accuracy"), backbone and shape
        outermost, in the order given (a budgeted run then cuts the largest cases, not methods).
        ``validate=False`` skips the per-case checks (cases that will only be skipped)."""
        from spbench import methods

        if kind not in KINDS:
            raise ValueError(f"unknown kind of case {kind!r}")
        names = split(self.methods) or methods.names()
        for name in names:
            methods.get(name)  # did-you-mean
        own = method_overrides(names, self.sets)
        backbones = split(self.backbones) or split(DEFAULT_BACKBONES[kind])
        if kind == "accuracy":
            shapes = parse_shapes(self.accuracy_shape or DEFAULT_ACCURACY_SHAPE, "--accuracy-shape")[:1]
            dtypes = ["float32"]
        else:
            shapes = parse_shapes(self.shapes or DEFAULT_SHAPES)
            dtypes = split(self.dtypes) or ["float32"]
        checkpointing = parse_switches(self.grad_checkpointing, "--grad-checkpointing") if kind != "accuracy" else [False]
        device = "cpu" if kind == "memory" else self.device  # memory cases are predicted (fake tensors)
        cases = [Case(name, backbone, batch, seq, objective=self.objective or "classification", device=device,
                      dtype=dtype, grad_checkpointing=gc, overrides=own[name])
                 for backbone in backbones for batch, seq in shapes for dtype in dtypes for name in names
                 for gc in levers(name, dtype, checkpointing)]
        if validate:
            check_cases(cases)
        return cases

    def check_accuracy(self) -> None:
        """The accuracy options: budget, shape (with the cases) and the SST-2 folder's files."""
        from pathlib import Path

        from spbench.data import find_split_file, sst2_dir
        from spbench.train import Budget

        if self.budget:
            Budget.parse(self.budget)
        self.cases("accuracy")
        folder = sst2_dir(self.sst2_dir)
        if folder is not None:
            path = Path(folder).expanduser()
            if not path.is_dir():
                raise InputError(f"--sst2-dir {folder}: {'not a folder' if path.exists() else 'no such folder'}")
            for split_name in ("train", "dev"):
                try:
                    find_split_file(path, split_name)
                except FileNotFoundError as exc:
                    raise InputError(str(exc)) from None

    def validate(self, kinds: tuple[str, ...] | list[str]) -> dict[str, Any]:
        """Every option the given kinds of case use; their cases by kind."""
        for option in RUN_OPTIONS:  # the typed options' domains (the others are parsed below)
            option.check(getattr(self, option.name))
        out: dict[str, Any] = {}
        for kind in kinds:
            if kind == "accuracy":
                self.check_accuracy()
            out[kind] = self.cases(kind)
        return out
