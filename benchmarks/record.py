"""Shared by the benchmark modules: run a case's measurement as a data point, never a crash.

A case that fails (or runs out of memory) is recorded with ``status`` and ``reason`` in its
``extra_info`` and then reported to pytest as failed (an OOM as skipped), so the JSON keeps
the data point and the rest of the matrix runs on.
"""

from __future__ import annotations

import traceback
from typing import Any, Callable

import pytest

from spbench.case import Case
from spbench.result import Result


def record(benchmark: Any, result: Result) -> None:
    """Store ``result`` as the benchmark's extra_info."""
    benchmark.extra_info.update(result.to_extra_info())


def record_failure(benchmark: Any, case: Case, device: str, exc: BaseException) -> None:
    oom = "out of memory" in str(exc).lower() or type(exc).__name__ == "OutOfMemoryError"
    status = "oom" if oom else "failed"
    reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
    record(benchmark, Result.of(case, device, status=status, reason=reason))
    if not getattr(benchmark, "_mode", None):
        benchmark.pedantic(lambda: None, rounds=1)  # so pytest-benchmark keeps the data point
    if oom:
        pytest.skip(f"{case.id}: {reason}")
    pytest.fail(f"{case.id}: {reason}\n{''.join(traceback.format_exception(exc))}")


def guarded(benchmark: Any, case: Case, device: str, body: Callable[[], None]) -> None:
    try:
        body()
    except Exception as exc:  # the data point is the failure
        record_failure(benchmark, case, device, exc)
