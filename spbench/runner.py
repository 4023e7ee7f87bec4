"""``spbench run``: the benchmark matrix through pytest-benchmark, then its report.

    spbench run                          # default CPU matrix -> out/cpu.json, out/report.md
    spbench run --methods lora,side_lora --backbones roberta-base --shapes 8x256
    spbench run --accuracy               # SST-2 accuracy cases (minutes per method)

It runs ``pytest benchmarks/...`` from a clone of the repository (the benchmark cases live
there, not in the installed package) and renders the JSON with ``spbench report``. The JSON
is written under a temporary name and renamed only when pytest finished, so an interrupted
run leaves no half-written file. SIGINT, SIGTERM and SIGHUP are passed on to pytest (a second
one kills it); once it has exited, the temporary file is removed and the run exits with
128 + the signal's number.
"""

from __future__ import annotations

import argparse
import functools
import signal
import subprocess
import sys
from pathlib import Path
from types import FrameType, TracebackType

from spbench.errors import InputError
from spbench.options import Options, add_options
from spbench.reporting.command import FORMATS


def find_benchmarks(explicit: str | None = None) -> Path:
    """The benchmarks/ folder: --benchmarks, ./benchmarks, or the one beside the package."""
    candidates = [Path(explicit)] if explicit else [
        Path.cwd() / "benchmarks", Path(__file__).resolve().parent.parent / "benchmarks",
    ]
    for path in candidates:
        if (path / "conftest.py").is_file():
            return path
    raise InputError("no benchmarks/ folder found: run from a clone of spbench or pass --benchmarks PATH")


class Interrupted(BaseException):
    """A signal stopped the run (a BaseException, like KeyboardInterrupt: cleanup runs, no
    handler mistakes it for an error of the input)."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum


class Signals:
    """Within: SIGINT, SIGTERM and SIGHUP raise :class:`Interrupted` (so ``finally`` blocks
    remove temporary files), or, while :meth:`call` runs a child, are passed on to it."""

    CAUGHT = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self) -> None:
        self.child: subprocess.Popen[bytes] | None = None
        self.received: list[int] = []
        self._previous: dict[int, object] = {}

    def __enter__(self) -> "Signals":
        self._previous = {s: signal.signal(s, self._handle) for s in self.CAUGHT}
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received.append(signum)
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(signum if len(self.received) == 1 else signal.SIGKILL)
            return
        raise Interrupted(signum)

    def call(self, cmd: list[str], cwd: Path) -> int:
        """Run ``cmd`` and wait for it; raise :class:`Interrupted` once it has exited if a signal came.

        The child gets a session of its own, so a Ctrl-C in the terminal reaches it once,
        through this process, rather than twice.
        """
        self.child = subprocess.Popen(cmd, cwd=cwd, start_new_session=True)
        try:
            code = self.child.wait()
        finally:
            if self.child.poll() is None:  # an error of our own: never leave pytest running behind
                self.child.kill()
                self.child.wait()
            self.child = None
        if self.received:
            raise Interrupted(self.received[0])
        return code


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run", help="run the benchmark matrix (pytest-benchmark), then render its report",
        description="Run the benchmark cases with pytest-benchmark and render the report. Defaults: every "
                    "registered method; predicted memory and deployed inference on distilbert-base and "
                    "roberta-large, measured step and deployed inference on distilbert-base, batch 16 x seq "
                    "128, on the CPU.")
    p.add_argument("--out", default="out", help="output folder (default: %(default)s)")
    p.add_argument("--name", default="", help="file stem (default: cpu, cuda or accuracy)")
    p.add_argument("--memory-only", action="store_true", help="predicted figures only (fast, deterministic)")
    p.add_argument("--accuracy", action="store_true", help="SST-2 accuracy cases instead (see README for the budget)")
    add_options(p.add_argument)  # the options pytest benchmarks/ takes too, declared once
    p.add_argument("--benchmarks", default=None, help="path of the benchmarks/ folder")
    p.add_argument("--format", default="markdown", choices=FORMATS,
                   help="report format written to OUT (default: %(default)s)")
    p.set_defaults(func=run)


def pytest_command(args: argparse.Namespace, bench: Path, json_path: Path) -> list[str]:
    if args.accuracy:
        targets = [str(bench / "test_accuracy.py"), "-m", "accuracy"]
    elif args.memory_only:
        targets = [str(bench / "test_memory.py"), f"{bench / 'test_inference.py'}::test_inference_predicted"]
    else:
        targets = [str(bench / "test_memory.py"), str(bench / "test_step.py"), str(bench / "test_inference.py")]
    cmd = [sys.executable, "-m", "pytest", *targets, f"--benchmark-json={json_path}",
           "-p", "no:cacheprovider", "-q", "--benchmark-columns=median", "-W", "ignore"]
    cmd += Options.read(functools.partial(getattr, args)).argv(accuracy=args.accuracy)
    return cmd


def check_options(args: argparse.Namespace) -> None:
    """Every option, before pytest starts (the same checks as benchmarks/conftest.py makes)."""
    import os

    if args.name and (os.sep in args.name or args.name.startswith(".")):
        raise InputError(f"--name {args.name!r}: a file stem, without '{os.sep}' or a leading '.'")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: is a file; --out names a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"--out {out}: cannot create the folder ({exc.strerror or exc})") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise InputError(f"--out {out}: the folder is not writable")
    kinds = ("accuracy",) if args.accuracy else ("memory",) if args.memory_only else ("memory", "step")
    Options.read(functools.partial(getattr, args)).validate(kinds)


def run(args: argparse.Namespace) -> int:
    bench = find_benchmarks(args.benchmarks)
    check_options(args)
    out = Path(args.out)
    stem = args.name or ("accuracy" if args.accuracy else "cuda" if args.device.startswith("cuda") else "cpu")
    final, partial = out / f"{stem}.json", out / f".{stem}.json.partial"
    cmd = pytest_command(args, bench, partial)
    print("$ " + " ".join(cmd), flush=True)
    kept: Path | None = None
    with Signals() as signals:
        try:
            code = signals.call(cmd, bench.parent)
            kept = _keep_or_replace(partial, final, code)
            return _report(args, out, kept, code)
        except Interrupted as exc:
            done = f"this run's results are in {kept}" if kept else "pytest stopped; no results kept from this run"
            print(f"spbench run: {exc}: {done}", file=sys.stderr)
            return 128 + exc.signum
        except NoResults as exc:
            print(f"spbench run: {exc}", file=sys.stderr)
            return code or 1
        finally:
            partial.unlink(missing_ok=True)


class NoResults(Exception):
    """pytest recorded no case: nothing to keep, and nothing replaced."""


def ok_cases(path: Path) -> tuple[set[str], int] | None:
    """(names of the successful benchmark entries, number of entries) of a pytest-benchmark
    JSON; None if it is not one."""
    import json

    try:
        benchmarks = json.loads(path.read_text(encoding="utf-8")).get("benchmarks")
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(benchmarks, list):
        return None
    ok = {str(b.get("fullname") or b.get("name")) for b in benchmarks
          if isinstance(b, dict) and isinstance(b.get("extra_info"), dict) and b["extra_info"].get("status", "ok") == "ok"}
    return ok, len(benchmarks)


def _keep_or_replace(partial: Path, final: Path, code: int) -> Path:
    """Move this run's results to ``final``, unless that would lose a successful case of the
    file there (one this run lacks or failed): then they go beside it, under a timestamped name
    of their own, and it is said."""
    import time

    new = ok_cases(partial) if partial.is_file() else None
    if not new or not new[1]:
        raise NoResults(f"pytest exited with {code} and recorded no case (see its output above); "
                        f"{final if final.exists() else 'no result file'} left as it was")
    old = ok_cases(final) if final.exists() else None
    lost = old[0] - new[0] if old is not None else set()
    if lost:
        kept = final
        stamp = time.strftime("%Y%m%d-%H%M%S")
        final = final.with_name(f"{final.stem}.{stamp}.json")
        n = 1
        while final.exists():
            n += 1
            final = final.with_name(f"{kept.stem}.{stamp}-{n}.json")
        print(f"spbench run: {kept} holds {len(old[0])} successful case(s), {len(lost)} of them not in this "
              f"run's {len(new[0])} of {new[1]}: kept {kept}; this run's results are in {final}", file=sys.stderr)
    partial.replace(final)
    return final


def _report(args: argparse.Namespace, out: Path, final: Path, code: int) -> int:
    from spbench.reporting.command import cmd_report, report_args

    suffix = {"markdown": "md", "latex": "tex", "csv": "csv", "terminal": "txt"}.get(args.format, "md")
    report = out / f"{final.stem}-report.{suffix}"
    cmd_report(report_args([str(final)], format=args.format, output=str(report)))
    cmd_report(report_args([str(final)], format="terminal"))
    print(f"\nresults: {final}\nreport:  {report}")
    # pytest's own code says whether every case ran; failed cases are data points in the JSON.
    return code
