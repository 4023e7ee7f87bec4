"""pytest-benchmark cases over the registry: methods x backbones x shapes.

    pytest benchmarks/ --benchmark-json=out.json                 # the default CPU matrix
    pytest benchmarks/ --methods lora,side_lora --backbones roberta-base --shapes 8x256
    pytest benchmarks/test_memory.py --set r=16                  # predicted figures only

test_memory.py: deterministic predicted figures (fake tensors, CUDA emulated), any size.
test_step.py:   the real step on --device: measured peak and median step time.
Our metrics go into each benchmark's ``extra_info``; machine info gets torch/CUDA/GPU.
"""

from __future__ import annotations

import time

import pytest

from spbench.case import WEIGHT_DTYPES, Case
from spbench.errors import InputError
from spbench.overrides import parse_overrides

DEFAULT_MEMORY_BACKBONES = "distilbert-base,roberta-large"
DEFAULT_STEP_BACKBONES = "distilbert-base"
DEFAULT_SHAPES = "16x128"
DEFAULT_ACCURACY_BACKBONES = "minilm-l6"
DEFAULT_ACCURACY_SHAPE = "32x64"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("spbench")
    group.addoption("--methods", default="", help="comma-separated registry keys (default: all)")
    group.addoption("--backbones", default="",
                    help=f"comma-separated (default: memory {DEFAULT_MEMORY_BACKBONES}; step {DEFAULT_STEP_BACKBONES})")
    group.addoption("--shapes", default=DEFAULT_SHAPES, help="BATCHxSEQ list, e.g. 16x128,32x256")
    group.addoption("--device", default="cpu", help="cpu | cuda | cuda:N (step cases)")
    group.addoption("--dtypes", default="float32",
                    help="float32,bfloat16 (autocast),bf16-weights (half weights: methods where sound)")
    group.addoption("--grad-checkpointing", default="off",
                    help="off,on: activation checkpointing (on: methods whose backward goes through the backbone)")
    group.addoption("--objective", default="classification", help="classification | prompt")
    group.addoption("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="method hyperparameter for every method that has it")
    group.addoption("--rounds", type=int, default=3, help="timed rounds per step case")
    group.addoption("--deadline", type=float, default=0.0,
                    help="Unix time after which remaining cases are skipped as over budget (0: none)")
    # --- accuracy cases (test_accuracy.py: SST-2 training, selected with -m accuracy) ---
    group.addoption("--sst2-dir", default=None, help="SST-2 folder (else $SPBENCH_SST2_DIR, else the hub)")
    group.addoption("--budget", default="",
                    help="accuracy training budget: examples=N | steps=N | epochs=X (default: spbench.train's)")
    group.addoption("--accuracy-shape", default="",
                    help=f"BATCHxMAX_LEN of accuracy cases (default {DEFAULT_ACCURACY_SHAPE})")
    group.addoption("--eval-every", type=int, default=0, help="accuracy: score dev every N steps, keep the best")
    group.addoption("--seed", type=int, default=0, help="accuracy: training seed (weights, dropout, data order)")


def _shapes(text: str) -> list[tuple[int, int]]:
    out = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        b, sep, s = item.partition("x")
        if not sep or not b.isdigit() or not s.isdigit():
            raise pytest.UsageError(f"--shapes wants BATCHxSEQ items like 16x128, got {item!r}")
        out.append((int(b), int(s)))
    return out


def _list(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


def cases_from_options(config: pytest.Config, kind: str) -> list[Case]:
    import dataclasses

    from spbench import methods

    method_names = _list(config.getoption("--methods")) or methods.names()
    default_bb = DEFAULT_MEMORY_BACKBONES if kind == "memory" else DEFAULT_STEP_BACKBONES
    backbone_names = _list(config.getoption("--backbones")) or _list(default_bb)
    try:
        overrides = parse_overrides(config.getoption("--set"))
        for name in method_names:
            methods.get(name)
    except InputError as exc:
        raise pytest.UsageError(str(exc)) from None
    checkpointing = _switches(config.getoption("--grad-checkpointing"))
    cases = []
    # Backbone and shape outermost, in the order given: a budgeted run (--deadline) then cuts
    # the largest cases, not whole methods.
    for backbone in backbone_names:
        for batch, seq in _shapes(config.getoption("--shapes")):
            for dtype in _list(config.getoption("--dtypes")):
                for name in method_names:
                    cls = methods.get(name)
                    fields = {f.name for f in dataclasses.fields(cls)}
                    own = tuple((k, v) for k, v in overrides if k in fields)
                    if dtype in WEIGHT_DTYPES and not cls.supports_half_weights:
                        continue  # a lever only where it applies (the matrix is a product)
                    for gc in checkpointing if cls.supports_grad_checkpointing else [False]:
                        cases.append(Case(name, backbone, batch, seq, objective=config.getoption("--objective"),
                                          device=config.getoption("--device") if kind == "step" else "cpu",
                                          dtype=dtype, grad_checkpointing=gc, overrides=own))
    return cases


def _switches(text: str) -> list[bool]:
    values = {"off": False, "on": True}
    items = _list(text)
    if not items or any(v not in values for v in items):
        raise pytest.UsageError(f"--grad-checkpointing wants off, on or off,on, got {text!r}")
    return list(dict.fromkeys(values[v] for v in items))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    for kind in ("memory", "step"):
        if f"{kind}_case" in metafunc.fixturenames:
            cases = cases_from_options(metafunc.config, kind)
            metafunc.parametrize(f"{kind}_case", cases, ids=[c.id for c in cases])
    if "accuracy_case" in metafunc.fixturenames:
        cases = accuracy_cases(metafunc.config)
        metafunc.parametrize("accuracy_case", cases, ids=[c.id for c in cases])


def accuracy_cases(config: pytest.Config) -> list[Case]:
    """Methods x backbones (default minilm-l6) at --accuracy-shape; seq_len is the max length."""
    import dataclasses

    from spbench import methods

    batch, max_len = _shapes(config.getoption("--accuracy-shape") or DEFAULT_ACCURACY_SHAPE)[0]
    try:
        classes = {n: methods.get(n) for n in _list(config.getoption("--methods")) or methods.names()}
        overrides = parse_overrides(config.getoption("--set"))
    except InputError as exc:
        raise pytest.UsageError(str(exc)) from None
    return [Case(name, backbone, batch, max_len, objective=config.getoption("--objective"),
                 overrides=tuple((k, v) for k, v in overrides if k in {f.name for f in dataclasses.fields(cls)}))
            for backbone in _list(config.getoption("--backbones")) or _list(DEFAULT_ACCURACY_BACKBONES)
            for name, cls in classes.items()]


def pytest_runtest_setup(item: pytest.Item) -> None:
    deadline = item.config.getoption("--deadline")
    if deadline and time.time() > deadline:
        pytest.skip("over the time budget (--deadline): not run")


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict) -> None:
    import torch
    import transformers

    import spbench
    from spbench.result import SCHEMA_VERSION

    machine_info["spbench_version"] = spbench.__version__
    machine_info["spbench_schema_version"] = SCHEMA_VERSION
    machine_info["torch_version"] = torch.__version__
    machine_info["transformers_version"] = transformers.__version__
    machine_info["torch_threads"] = torch.get_num_threads()
    if torch.cuda.is_available():
        machine_info["cuda_version"] = torch.version.cuda
        machine_info["gpu_name"] = torch.cuda.get_device_name()
        machine_info["gpu_memory_bytes"] = torch.cuda.get_device_properties(0).total_memory
