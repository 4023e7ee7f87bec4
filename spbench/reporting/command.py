"""``spbench report``: benchmark JSON -> tables for a paper, a pull request or the terminal.

    spbench report out.json                                   overview, Markdown on stdout
    spbench report out.json --compare lora side_lora          the two side by side, B/A and deltas
    spbench report out.json --baseline full_ft --format latex --output table.tex
    spbench report out.json --format terminal --plot pareto.png   (Markdown when stdout is no terminal)

One table per (backbone, shape, dtype, objective, measured device): the predicted figures of a
case join its measured ones, but a CPU and a CUDA measurement never share a column, and files
of different ``schema_version`` are refused. Output files are written atomically.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from spbench.errors import InputError

FORMATS = ("markdown", "latex", "terminal", "csv")


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "report", help="tables (Markdown, LaTeX, terminal, CSV) and plots from benchmark JSON",
        description="Render pytest-benchmark JSON written by `pytest benchmarks/ --benchmark-json=FILE`.")
    p.add_argument("files", nargs="+", metavar="FILE", help="pytest-benchmark JSON file(s)")
    p.add_argument("--format", choices=FORMATS, default="markdown", help="default: %(default)s")
    p.add_argument("--output", "-o", metavar="PATH", help="write here (atomically) instead of stdout")
    p.add_argument("--compare", nargs=2, metavar=("A", "B"),
                   help="two methods side by side with B/A ratios (and B-A for accuracies)")
    p.add_argument("--baseline", metavar="METHOD", help="every figure also as a percentage of METHOD's")
    p.add_argument("--plot", metavar="PATH.png", help="peak memory vs accuracy (Pareto) and memory breakdown")
    p.set_defaults(func=cmd_report)


def report_args(files: list[str], **options: Any) -> argparse.Namespace:
    """The arguments of ``spbench report FILES`` with ``options`` (for callers in Python)."""
    defaults: dict[str, Any] = {"format": "markdown", "output": None, "compare": None, "baseline": None, "plot": None}
    return argparse.Namespace(files=files, **{**defaults, **options})


def render(args: argparse.Namespace) -> str:
    """The report text for ``args`` ("" for the terminal format printed straight to stdout)."""
    from spbench.reporting import render as r
    from spbench.reporting import tables
    from spbench.reporting.results import load
    from spbench.reporting.seeds import merge_over_seeds
    from spbench.reporting.sweep import trial_tables

    if args.compare and args.baseline:
        raise InputError("--compare and --baseline are separate views; pass one of them")
    sources, records = load(args.files)
    rows = merge_over_seeds(records)  # runs repeated over seeds: one row, mean ± std (n)
    if args.plot:
        from spbench.reporting.plot import plot

        plot(rows, args.plot)
    if args.format == "csv":
        if args.compare:
            return r.csv_compare(tables.compare_pairs(rows, *args.compare))
        base = tables.baseline_rows(rows, args.baseline) if args.baseline else None
        return r.csv_rows(rows, base)
    report = (tables.compare(sources, rows, *args.compare) if args.compare
              else tables.overview(sources, rows, args.baseline))
    if not args.compare:
        report.tables += trial_tables(records)  # a sweep's studies: every trial, the best configuration
    if args.format == "markdown":
        return r.markdown(report)
    if args.format == "latex":
        return r.latex(report)
    if args.output:
        return r.terminal_text(report)
    if not sys.stdout.isatty():
        # A log file, a pipe, CI: rich would squeeze every table to 80 columns, folding headers
        # letter by letter. Markdown reads at any width.
        return r.markdown(report)
    r.terminal(report)
    return ""


def cmd_report(args: argparse.Namespace) -> int:
    from spbench.reporting.results import write_atomic

    text = render(args)
    if args.output:
        write_atomic(args.output, text)
        print(f"wrote {args.output}", file=sys.stderr)
    elif text:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    if args.plot:
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0
