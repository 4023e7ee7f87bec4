"""pytest-benchmark cases over the registry: methods x backbones x shapes.

    pytest benchmarks/ --benchmark-json=out.json                 # the default CPU matrix
    pytest benchmarks/ --methods lora,side_lora --backbones roberta-base --shapes 8x256
    pytest benchmarks/test_memory.py --set r=16                  # predicted figures only

test_memory.py: deterministic predicted figures (fake tensors, CUDA emulated), any size.
test_step.py:   the real step on --device: measured peak and median step time.
test_inference.py: the deployed model (LoRA merged, side networks kept, ...): its size, and
                its no-grad forward against the untouched backbone, predicted and on --device.
Our metrics go into each benchmark's ``extra_info``; machine info gets torch/CUDA/GPU.
"""

from __future__ import annotations

import time

import pytest

from spbench.errors import InputError
from spbench.options import DEFAULT_ACCURACY_SHAPE, DEFAULT_BACKBONES, DEFAULT_SHAPES, Options


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("spbench")
    group.addoption("--methods", default="", help="comma-separated registry keys (default: all)")
    group.addoption("--backbones", default="",
                    help=f"comma-separated (default: memory {DEFAULT_BACKBONES['memory']}; "
                         f"step {DEFAULT_BACKBONES['step']}; accuracy {DEFAULT_BACKBONES['accuracy']})")
    group.addoption("--shapes", default=DEFAULT_SHAPES, help="BATCHxSEQ list, e.g. 16x128,32x256")
    group.addoption("--device", default="cpu", help="cpu | cuda | cuda:N (step cases)")
    group.addoption("--dtypes", default="float32",
                    help="float32,bfloat16 (autocast),bf16-weights (half weights: methods where sound)")
    group.addoption("--grad-checkpointing", default="",
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
    group.addoption("--eval-every", type=int, default=0, help="accuracy: score the validation split every N steps, keep the best (dev is scored once, at the end)")
    group.addoption("--seed", type=int, default=0, help="accuracy: training seed (weights, dropout, data order)")


def options_of(config: pytest.Config) -> Options:
    return Options(
        methods=config.getoption("--methods"), backbones=config.getoption("--backbones"),
        shapes=config.getoption("--shapes"), dtypes=config.getoption("--dtypes"),
        objective=config.getoption("--objective"), device=config.getoption("--device"),
        grad_checkpointing=config.getoption("--grad-checkpointing"),
        sets=tuple(config.getoption("--set")), budget=config.getoption("--budget"),
        accuracy_shape=config.getoption("--accuracy-shape"), sst2_dir=config.getoption("--sst2-dir"))


def accuracy_asked(config: pytest.Config) -> bool:
    return ("accuracy" in (config.getoption("-m") or "")
            or any(config.getoption(o) for o in ("--sst2-dir", "--budget", "--accuracy-shape")))


CASES = pytest.StashKey[dict]()


def pytest_configure(config: pytest.Config) -> None:
    """Every option checked here, before collection: one line, no case run (spbench.options)."""
    kinds = ("memory", "step", "accuracy") if accuracy_asked(config) else ("memory", "step")
    try:
        config.stash[CASES] = options_of(config).validate(kinds)
    except InputError as exc:
        raise pytest.UsageError(str(exc)) from None


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    validated = metafunc.config.stash[CASES]
    for kind in ("memory", "step", "accuracy"):
        if f"{kind}_case" in metafunc.fixturenames:
            # Accuracy cases not asked for are only skipped: no need to check them.
            cases = validated.get(kind) or options_of(metafunc.config).cases(kind, validate=False)
            metafunc.parametrize(f"{kind}_case", cases, ids=[c.id for c in cases])


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
