"""``spbench report``: benchmark JSON -> tables for a paper, a pull request or the terminal.

    spbench report out.json                                   overview, Markdown on stdout
    spbench report out.json --compare lora side_lora          the two side by side, B/A and deltas
    spbench report out.json --baseline full_ft --format latex --output table.tex
    spbench report out.json --format terminal --plot pareto.png   (Markdown when stdout is no terminal)
    spbench report reference/*-best-3seeds.json matrix.json --claims    the team's claims, one verdict each

One table per (backbone, shape, dtype, objective, measured device): the predicted figures of a
case join its measured ones, but a CPU and a CUDA measurement never share a column, and a
figure is never compared across schema versions that gave it different meanings
(``spbench.result.SCHEMA_CHANGES``). Cases measured on a CUDA device are also shown beside
their prediction, with the error of each figure (:mod:`spbench.reporting.prediction`).
Output files are written atomically.
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
    p.add_argument("--claims", action="store_true",
                   help="the research team's claims checked against these files (the reference's three-seed "
                        "studies and a benchmark matrix): Markdown, one row per claim with a verdict")
    p.set_defaults(func=cmd_report)


def report_args(files: list[str], **options: Any) -> argparse.Namespace:
    """The arguments of ``spbench report FILES`` with ``options`` (for callers in Python)."""
    defaults: dict[str, Any] = {"format": "markdown", "output": None, "compare": None, "baseline": None, "plot": None,
                                "claims": False}
    return argparse.Namespace(files=files, **{**defaults, **options})


def render(args: argparse.Namespace) -> str:
    """The report text for ``args`` ("" for the terminal format printed straight to stdout)."""
    from spbench.reporting import render as r
    from spbench.reporting import tables
    from spbench.reporting.prediction import prediction_tables
    from spbench.reporting.results import load, refuse_overwriting
    from spbench.reporting.seeds import merge_over_seeds
    from spbench.reporting.sweep import trial_tables

    if args.compare and args.baseline:
        raise InputError("--compare and --baseline are separate views; pass one of them")
    refuse_overwriting({"--output": args.output, "--plot": args.plot}, args.files)
    sources, records = load(args.files)
    if args.claims:
        if args.compare or args.baseline or args.plot or args.format != "markdown":
            raise InputError("--claims is its own Markdown view: pass it without --compare, --baseline, --plot, --format")
        from spbench.reporting.claims import claims_markdown

        return claims_markdown(records, sources)
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
        report.tables += prediction_tables(records)  # cases measured on CUDA beside their prediction
    report.title += selection_warning(records)
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


def selection_warning(records: list[Any]) -> str:
    """A title suffix when any accuracy run selected on the split it reports (dev): older
    results, or ``--select-on dev``. "" when every run selected on its validation split."""
    on_dev = sum(1 for rec in records if "sst2_accuracy" in rec.result.metrics and rec.result.train_config is not None
                 and rec.result.train_config.get("select_on", "dev") == "dev"
                 and (rec.result.train_config.get("eval_every") or (rec.result.notes.get("sweep") or {})))
    return f" (SELECTED ON DEV: {on_dev} run(s) chose a configuration or checkpoint on the reported split)" \
        if on_dev else ""


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
