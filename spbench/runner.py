"""``spbench run``: the benchmark matrix through pytest-benchmark, then its report.

    spbench run                          # default CPU matrix -> out/cpu.json, out/report.md
    spbench run --methods lora,side_lora --backbones roberta-base --shapes 8x256
    spbench run --accuracy               # SST-2 accuracy cases (minutes per method)

It runs ``pytest benchmarks/...`` from a clone of the repository (the benchmark cases live
there, not in the installed package) and renders the JSON with ``spbench report``. The JSON
is written under a temporary name and renamed only when pytest finished, so an interrupted
run leaves no half-written file.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from spbench.errors import InputError


def find_benchmarks(explicit: str | None = None) -> Path:
    """The benchmarks/ folder: --benchmarks, ./benchmarks, or the one beside the package."""
    candidates = [Path(explicit)] if explicit else [
        Path.cwd() / "benchmarks", Path(__file__).resolve().parent.parent / "benchmarks",
    ]
    for path in candidates:
        if (path / "conftest.py").is_file():
            return path
    raise InputError("no benchmarks/ folder found: run from a clone of spbench or pass --benchmarks PATH")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run", help="run the benchmark matrix (pytest-benchmark), then render its report",
        description="Run the benchmark cases with pytest-benchmark and render the report. Defaults: every "
                    "registered method; predicted memory on distilbert-base and roberta-large, measured "
                    "step on distilbert-base, batch 16 x seq 128, on the CPU.")
    p.add_argument("--out", default="out", help="output folder (default: %(default)s)")
    p.add_argument("--name", default="", help="file stem (default: cpu, cuda or accuracy)")
    p.add_argument("--methods", default="", help="comma-separated registry keys (default: all)")
    p.add_argument("--backbones", default="", help="comma-separated backbones (default: per case kind)")
    p.add_argument("--shapes", default="", help="BATCHxSEQ list (default: 16x128)")
    p.add_argument("--device", default="cpu", help="device of the measured step cases")
    p.add_argument("--dtypes", default="", help="float32,bfloat16 (autocast),bf16-weights (half weights)")
    p.add_argument("--grad-checkpointing", default="", metavar="off,on",
                   help="activation checkpointing: off (default), on, or off,on (both, where it applies)")
    p.add_argument("--objective", default="", help="classification (default) | prompt")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="method hyperparameter")
    p.add_argument("--memory-only", action="store_true", help="predicted figures only (fast, deterministic)")
    p.add_argument("--accuracy", action="store_true", help="SST-2 accuracy cases instead (see README for the budget)")
    p.add_argument("--sst2-dir", default=None, help="SST-2 folder (else $SPBENCH_SST2_DIR, else the hub)")
    p.add_argument("--budget", default="", help="accuracy: examples=N | steps=N | epochs=N (default: examples=8000)")
    p.add_argument("--accuracy-shape", default="", help="accuracy: BATCHxMAXLEN (default: 32x64)")
    p.add_argument("--seed", default="", help="accuracy: training seed (default: 0)")
    p.add_argument("--benchmarks", default=None, help="path of the benchmarks/ folder")
    p.add_argument("--format", default="markdown", help="report format written to OUT (default: %(default)s)")
    p.set_defaults(func=run)


def pytest_command(args: argparse.Namespace, bench: Path, json_path: Path) -> list[str]:
    if args.accuracy:
        targets = [str(bench / "test_accuracy.py"), "-m", "accuracy"]
    elif args.memory_only:
        targets = [str(bench / "test_memory.py")]
    else:
        targets = [str(bench / "test_memory.py"), str(bench / "test_step.py")]
    cmd = [sys.executable, "-m", "pytest", *targets, f"--benchmark-json={json_path}",
           "-p", "no:cacheprovider", "-q", "--benchmark-columns=median", "-W", "ignore"]
    for option in ("methods", "backbones", "shapes", "dtypes", "objective", "grad_checkpointing"):
        value = getattr(args, option)
        if value:
            cmd.append(f"--{option.replace('_', '-')}={value}")
    if args.device != "cpu":
        cmd.append(f"--device={args.device}")
    for item in args.set:
        cmd.append(f"--set={item}")
    if args.accuracy:
        for option in ("sst2_dir", "budget", "accuracy_shape", "seed"):
            value = getattr(args, option)
            if value:
                cmd.append(f"--{option.replace('_', '-')}={value}")
    return cmd


def run(args: argparse.Namespace) -> int:
    from spbench.reporting.command import cmd_report, report_args

    bench = find_benchmarks(args.benchmarks)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = args.name or ("accuracy" if args.accuracy else "cuda" if args.device.startswith("cuda") else "cpu")
    final, partial = out / f"{stem}.json", out / f".{stem}.json.partial"
    cmd = pytest_command(args, bench, partial)
    print("$ " + " ".join(cmd), flush=True)
    code = subprocess.call(cmd, cwd=bench.parent)
    if not partial.is_file():
        raise InputError(f"pytest exited with {code} and wrote no results")
    partial.replace(final)
    suffix = {"markdown": "md", "latex": "tex", "csv": "csv", "terminal": "txt"}.get(args.format, "md")
    report = out / f"{stem}-report.{suffix}"
    cmd_report(report_args([str(final)], format=args.format, output=str(report)))
    cmd_report(report_args([str(final)], format="terminal"))
    print(f"\nresults: {final}\nreport:  {report}")
    # pytest's own code says whether every case ran; failed cases are data points in the JSON.
    return code
