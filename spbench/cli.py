"""spbench command line: list | estimate | run | report | check.

    spbench list                                    methods, backbones, objectives
    spbench estimate --method lora --backbone roberta-large --batch-size 16 --seq-len 128
    spbench estimate --method lora --backbone roberta-large --seq-len 128 --fit 8GiB
    spbench run                                     CPU benchmark matrix, then its report
    spbench report out.json --compare lora side_lora
    spbench check current.json --baseline benchmarks/baselines/cpu-matrix.json

Heavy imports (torch, transformers) happen inside the commands, so --help and list are fast.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from typing import Any, Callable, Sequence

EXIT_USAGE = 2


class CliError(Exception):
    """A user-facing error: printed as one line, exit code 2."""


def parse_overrides(items: Sequence[str] | None) -> tuple[tuple[str, str], ...]:
    """``["r=16", "scope=targets"]`` -> ``(("r", "16"), ("scope", "targets"))``."""
    out = []
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise CliError(f"--set expects key=value, got {item!r}")
        out.append((key.strip(), value.strip()))
    return tuple(out)


def add_case_arguments(p: argparse.ArgumentParser, method_required: bool = True) -> None:
    p.add_argument("--method", required=method_required, help="registry key, see `spbench list`")
    p.add_argument("--backbone", default="distilbert-base",
                   help="registry key, local checkpoint folder or hub id (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=16, help="default: %(default)s")
    p.add_argument("--seq-len", type=int, default=128, help="default: %(default)s")
    p.add_argument("--objective", default="classification", help="classification | prompt")
    p.add_argument("--dtype", default="float32", help="float32 | bfloat16 (autocast) | float16")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", default=[],
                   help="method hyperparameter, repeatable (e.g. --set r=16 --set scope=targets)")


def cmd_list(args: argparse.Namespace) -> int:
    from spbench import backbones, methods, objectives

    rows = [("method", n, methods.get(n).summary) for n in methods.names()]
    rows += [("backbone", n, d) for n, d in backbones.describe()]
    rows += [("objective", n, "") for n in objectives.names()]
    if args.json:
        print(json.dumps([{"kind": k, "name": n, "summary": s} for k, n, s in rows], indent=2))
        return 0
    from tabulate import tabulate

    print(tabulate(rows, headers=["kind", "name", "what"], tablefmt="simple"))
    return 0


def _case(args: argparse.Namespace, batch_size: int | None = None) -> Any:
    from spbench.case import Case

    case = Case(method=args.method, backbone=args.backbone,
                batch_size=batch_size if batch_size is not None else args.batch_size,
                seq_len=args.seq_len, objective=args.objective, device="cpu", dtype=args.dtype,
                overrides=parse_overrides(args.set))
    case.validate()
    return case


def cmd_estimate(args: argparse.Namespace) -> int:
    from spbench.units import format_bytes, parse_bytes

    if args.fit:
        budget = parse_bytes(args.fit)
        return _fit(args, budget)
    from spbench.case import identity
    from spbench.measure.predict import predict
    from spbench.result import METRICS, SCHEMA_VERSION

    case = _case(args)
    metrics, built = predict(case)
    info = {**identity(built), "device": "cuda (predicted)", "schema_version": SCHEMA_VERSION,
            **built.notes, **metrics}
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"{case.id}: predicted CUDA peak of one training step")
    for key, value in metrics.items():
        metric = METRICS[key]
        text = format_bytes(value) if metric.unit == "bytes" else f"{value:,}"
        print(f"  {metric.label:<44} {text:>14}   {key}")
    reached, trainable = metrics.get("params_with_grad"), metrics.get("params_trainable")
    if reached is not None and trainable is not None and reached < trainable:
        print(f"WARNING: only {reached:,} of {trainable:,} trainable parameters receive a gradient")
    return 0


def _fit(args: argparse.Namespace, budget: int) -> int:
    """Largest batch size whose predicted CUDA peak fits ``budget`` (doubling, then bisection)."""
    from spbench.case import build
    from spbench.measure.predict import predict_built
    from spbench.units import format_bytes

    cache: dict[int, int] = {}

    def peak(batch: int) -> int:
        if batch not in cache:
            built, _ = build(_case(args, batch_size=batch))
            cache[batch] = predict_built(built)["predicted_cuda_peak_bytes"]
            print(f"  batch {batch:>5}: {format_bytes(cache[batch])}", file=sys.stderr)
        return cache[batch]

    if peak(1) > budget:
        print(f"even batch size 1 needs {format_bytes(peak(1))} > {format_bytes(budget)}")
        return 1
    low, high = 1, 2
    while peak(high) <= budget:
        low, high = high, high * 2
        if high > 1 << 16:
            break
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if peak(mid) <= budget else (low, mid)
    print(f"largest batch size that fits {format_bytes(budget)}: {low} "
          f"(predicted peak {format_bytes(peak(low))})")
    if args.json:
        print(json.dumps({"fit_bytes": budget, "batch_size": low, "predicted_cuda_peak_bytes": peak(low)}))
    return 0


# Subcommands that live in their own modules: each provides add_parser(subparsers).
_MODULE_COMMANDS = ("spbench.runner", "spbench.report", "spbench.check")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spbench",
        description="Benchmark memory, time and accuracy of selective parameter updating "
                    "(full FT, LoRA, Side-LoRA, LST, k-LST, MeZO, ...) on transformer encoders.",
        epilog="Memory figures: 'predicted' = a fake-tensor step with CUDA's allocator and kernels "
               "emulated (deterministic, no GPU needed); 'measured' = the real step on the device.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("list", help="registered methods, backbones and objectives")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list)
    p = sub.add_parser("estimate", help="predicted CUDA peak memory and breakdown of one training step",
                       description="Predict one steady-state training step's CUDA peak memory, "
                                   "its breakdown, parameter counts and FLOPs, without a GPU.")
    add_case_arguments(p)
    p.add_argument("--json", action="store_true", help="one JSON object with DESIGN.md's keys")
    p.add_argument("--fit", metavar="SIZE", help="answer the largest batch size whose peak fits SIZE (e.g. 8GiB)")
    p.set_defaults(func=cmd_estimate)
    for name in _MODULE_COMMANDS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    import os
    import warnings

    if not os.environ.get("SPBENCH_WARNINGS"):  # library deprecation chatter is not for users
        warnings.simplefilter("ignore")
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] | None = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return func(args)
    except (CliError, KeyError, ValueError, FileNotFoundError, RuntimeError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"spbench {args.command}: error: {message}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
