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
import functools
import importlib
import json
import sys
from typing import Any, Callable, Sequence

from spbench.errors import InputError

EXIT_USAGE = 2
# Errors a person can fix: one line and exit code 2. Anything else is a bug: its traceback shows.
USER_ERRORS: tuple[type[BaseException], ...] = (InputError, FileNotFoundError, NotADirectoryError)
CliError = InputError  # the old name, for code written before spbench.errors; raise InputError


def add_case_arguments(p: argparse.ArgumentParser, method_required: bool = True) -> None:
    from spbench.options import add_options

    p.add_argument("--method", required=method_required, help="registry key, see `spbench list`")
    p.add_argument("--backbone", default="distilbert-base",
                   help="registry key, local checkpoint folder or hub id (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=16, help="default: %(default)s")
    p.add_argument("--seq-len", type=int, default=128, help="default: %(default)s")
    add_options(p.add_argument, ["objective"], objective={"default": "classification"})
    p.add_argument("--dtype", default="float32",
                   help="float32 | bfloat16, float16 (autocast) | bf16-weights, fp16-weights (half-precision "
                        "weights, where sound: mezo, lst, klst)")
    p.add_argument("--grad-checkpointing", action="store_true",
                   help="recompute each backbone layer in backward instead of keeping its activations")
    add_options(p.add_argument, ["sets"], sets={"help": "method hyperparameter, repeatable (e.g. --set r=16)"})


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


def _case(args: argparse.Namespace) -> Any:
    """The case of estimate's options, checked as every front end checks them (spbench.options)."""
    from spbench.case import Case
    from spbench.options import check_cases, method_overrides

    overrides = method_overrides([args.method], args.set)[args.method]
    case = Case(method=args.method, backbone=args.backbone, batch_size=args.batch_size, seq_len=args.seq_len,
                objective=args.objective, device="cpu", dtype=args.dtype,
                grad_checkpointing=args.grad_checkpointing, overrides=overrides)
    check_cases([case])
    return case


def cmd_estimate(args: argparse.Namespace) -> int:
    try:
        return _estimate(args)
    except Exception as exc:  # --json: stdout stays one JSON document, whatever happens
        if args.json:
            print(json.dumps({"error": str(exc)}))
        raise


def _estimate(args: argparse.Namespace) -> int:
    from spbench.units import format_bytes, parse_bytes

    if args.fit_over and not args.fit:
        raise InputError("--fit-over needs --fit SIZE")
    if args.fit_on and not args.fit:
        raise InputError("--fit-on needs --fit SIZE")
    if args.snapshot and args.fit:
        raise InputError("--snapshot writes one case's step: not with --fit")
    if args.fit:
        return _fit(args, parse_bytes(args.fit))
    from spbench.measure.predict import predict
    from spbench.result import METRICS, PREDICTED, Result

    case = _case(args)
    traces: list[Any] = []
    metrics, built = predict(case, allocator=args.allocator, card=args.card, traces=traces)
    if args.snapshot:
        from spbench.measure.snapshot import write_snapshot

        write_snapshot(traces[0], args.snapshot, expandable=args.allocator == "expandable")
    if args.json:
        print(json.dumps(Result.of(case, PREDICTED, metrics=metrics, notes=built.notes).to_extra_info(), indent=2))
        return 0
    print(f"{case.id}: predicted CUDA peak of one training step "
          f"(allocator: {args.allocator}; device total = reserved + {args.card} context)")
    for key, value in metrics.items():
        metric = METRICS[key]
        text = format_bytes(value) if metric.unit == "bytes" else f"{value:,}"
        print(f"  {metric.label:<44} {text:>14}   {key}")
    reached, trainable = metrics.get("params_with_grad"), metrics.get("params_trainable")
    if reached is not None and trainable is not None and reached < trainable:
        print(f"WARNING: only {reached:,} of {trainable:,} trainable parameters receive a gradient")
    return 0


def _fit(args: argparse.Namespace, budget: int) -> int:
    """--fit: the largest batch (or, --fit-over seq-len, the longest sequence) that fits."""
    from spbench.fit import OVER, fit

    over = OVER.get(args.fit_over or "batch-size")
    if over is None:
        raise InputError(f"--fit-over takes {' or '.join(OVER)}, not {args.fit_over!r}")
    answer = fit(_case(args), budget, over, on_probe=lambda p: print(p.line(over), file=sys.stderr),
                 on=args.fit_on or "device", allocator=args.allocator, card=args.card)
    print(json.dumps(answer.to_json(), indent=2) if args.json else "\n".join(answer.lines()))
    return 0 if answer.size is not None else 1


# Subcommands that live in their own modules: each provides add_parser(subparsers).
_MODULE_COMMANDS = ("spbench.runner", "spbench.reporting.command", "spbench.check", "spbench.sweep")


class _Parser(argparse.ArgumentParser):
    """argparse's parser; when the command line asks for ``--json``, a usage error is also one
    JSON object on stdout (stdout stays parseable in every outcome)."""

    def __init__(self, *args: Any, json_errors: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.json_errors = json_errors

    def error(self, message: str) -> Any:
        if self.json_errors:
            print(json.dumps({"error": message}))
        super().error(message)


def build_parser(json_errors: bool = False) -> argparse.ArgumentParser:
    parser = _Parser(
        json_errors=json_errors,
        prog="spbench",
        description="Benchmark memory, time and accuracy of selective parameter updating "
                    "(full FT, LoRA, Side-LoRA, LST, k-LST, MeZO, ...) on transformer encoders.",
        epilog="Memory figures: 'predicted' = a fake-tensor step with CUDA's allocator and kernels "
               "emulated (deterministic, no GPU needed); 'measured' = the real step on the device.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND",
                                parser_class=functools.partial(_Parser, json_errors=json_errors))
    p = sub.add_parser("list", help="registered methods, backbones and objectives")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list)
    p = sub.add_parser("estimate", help="predicted CUDA peak memory and breakdown of one training step",
                       description="Predict one steady-state training step's CUDA peak memory, "
                                   "its breakdown, parameter counts and FLOPs, without a GPU.")
    add_case_arguments(p)
    p.add_argument("--json", action="store_true", help="one JSON object with DESIGN.md's keys")
    p.add_argument("--fit", metavar="SIZE",
                   help="answer the largest batch size (at --seq-len) whose predicted device total (see --fit-on) "
                        "fits SIZE (e.g. 8GiB), with the figure there and one step up; exit 1 when not even the "
                        "smallest fits")
    p.add_argument("--fit-on", metavar="FIGURE", choices=("allocated", "reserved", "device"),
                   help="with --fit: the figure held to SIZE: device (default: reserved + the card's context, "
                        "what a run fails at), reserved (the caching allocator's) or allocated (live tensors)")
    p.add_argument("--allocator", choices=("default", "expandable"), default="default",
                   help="caching allocator setting simulated for the reserved bytes: default, or expandable "
                        "(PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True)")
    p.add_argument("--snapshot", metavar="FILE",
                   help="also write the predicted step as a torch.cuda.memory._snapshot() pickle "
                        "(draw it: python -m torch.cuda._memory_viz trace_plot FILE -o trace.html)")
    p.add_argument("--card", default="h100",
                   help="the device whose context (memory outside the allocator) the device total adds: "
                        "h100, or a size such as 900MiB")
    p.add_argument("--fit-over", metavar="DIM",
                   help="with --fit: batch-size (default) or seq-len (the longest sequence at --batch-size)")
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
    parser = build_parser(json_errors="--json" in (sys.argv[1:] if argv is None else argv))
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] | None = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return func(args)
    except USER_ERRORS as exc:
        print(f"spbench {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
