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
from spbench.options import Options, add_options


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("spbench")
    add_options(group.addoption)  # the options of `spbench run` too, declared once (spbench.options)
    group.addoption("--rounds", type=int, default=3, help="timed rounds per step case")
    group.addoption("--deadline", type=float, default=0.0,
                    help="Unix time after which remaining cases are skipped as over budget (0: none)")
    group.addoption("--report-records", type=int, default=10_000,
                    help="test_report_speed.py: synthetic records in the report (default: %(default)s)")


def options_of(config: pytest.Config) -> Options:
    return Options.read(config.getoption)


def accuracy_asked(config: pytest.Config) -> bool:
    """``-m accuracy``, or an option only accuracy cases read."""
    options = options_of(config)
    return "accuracy" in (config.getoption("-m") or "") or options.argv(accuracy=True) != options.argv(accuracy=False)


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
