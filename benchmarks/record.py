"""Shared by the benchmark modules: run a case's measurement as a data point, never a crash.

A case that fails (or runs out of memory) is recorded with ``status`` and ``reason`` in its
``extra_info`` and then reported to pytest as failed (an OOM as skipped), so the JSON keeps
the data point and the rest of the matrix runs on.

pytest-benchmark leaves out of its JSON every benchmark whose ``pedantic`` target (or setup)
raised, so :func:`pedantic` catches inside the target, lets the fixture finish, and raises
the failure after; :func:`guarded` then records it.
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


def pedantic(benchmark: Any, target: Callable[..., Any], setup: Callable[[], Any] | None = None,
             **options: Any) -> Any:
    """``benchmark.pedantic(target, setup=setup, **options)``, but a failure of ``target`` or
    ``setup`` is raised only after pytest-benchmark has finished (so it keeps the entry);
    rounds after a failure do nothing."""
    failures: list[BaseException] = []

    def safe_setup() -> Any:
        if not failures:
            try:
                return setup() if setup is not None else None
            except Exception as exc:
                failures.append(exc)
        return None

    def safe_target(*args: Any, **kwargs: Any) -> Any:
        if failures:
            return None
        try:
            return target(*args, **kwargs)
        except Exception as exc:
            failures.append(exc)
            return None

    out = benchmark.pedantic(safe_target, setup=safe_setup if setup is not None else None, **options)
    if failures:
        raise failures[0]
    return out


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
