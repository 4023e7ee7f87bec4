"""``spbench sweep``: the command line, local worker processes and their supervision.

    spbench sweep --method lora --grid lr=1e-4,3e-4,1e-3 --budget epochs=0.25
    spbench sweep --method lora --grid lr=3e-4 --seeds 0,1,2 --budget epochs=1 --workers 2
    spbench sweep --method lora --sampler tpe --trials 20 --space lr=1e-5:1e-3:log --space r
    spbench sweep --method klst --grid k --grid lr --pareto              # accuracy vs predicted peak
    spbench sweep --method lora --grid lr --storage postgresql://user@host/db   # on every machine
    spbench sweep --method lora --grid lr --budget epochs=1 --pruner halving     # chosen at the full budget
    spbench sweep --method lora --best-from STUDY --seeds 0,1,2 --budget epochs=1  # repeat the best
    spbench sweep --studies --out out/sweep                                        # what the storage holds
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from spbench.errors import InputError
from spbench.options import OPTION, add_options
from spbench.sweep import interrupt
from spbench.sweep.setup import (DEFAULT_HEARTBEAT_S, DEFAULT_MAX_RETRY, PRUNERS, SAMPLERS, Setup, _text,
                                 check_ranges)

EXIT_INTERRUPTED = 130
DESCRIPTION = """\
Tune and repeat SST-2 accuracy runs on Optuna. Each trial trains one configuration with one
seed through the same path as the accuracy benchmarks (benchmarks/test_accuracy.py) and is an
ordinary spbench result: OUT/<study>.json is pytest-benchmark JSON that `spbench report` and
`spbench check` read (accuracy and F1 as mean ± std (n) over seeds, the trial table, the best
configuration with its hyperparameters).

Search space: each method declares one in its hyperparameters' field metadata (the learning
rate of every method, r of LoRA, k of k-LST, eps of MeZO); --grid and --space name exactly
what to search instead (KEY alone: its declared space). Specs: LOW:HIGH, LOW:HIGH:log,
xA:xB[:log] (relative to the default), V1,V2,... (choices). Samplers: grid (exhaustive; a
log range gives two points per decade), tpe (--trials N configurations), nsga2 (--pareto).
--pareto optimises dev accuracy (up) and predicted CUDA peak memory (down) and prints the front.

Selection and report: a validation split (872 sentences carved from SST-2 train, stratified and
seeded, never trained on) is what trials, --eval-every and --best-from select on; dev is scored
once per finished trial and reported with its per-example predictions (intervals and paired
comparisons in `spbench report`). --select-on dev selects on the reported split instead, and
every report says so. --pruner halving stops weak trials at 1/8, 1/4 or 1/2 of the budget, so
a configuration is chosen at the full budget for a fraction of a full grid's cost.

Storage and resuming: the default is an Optuna journal file OUT/sweep.journal. Run the same
command again after Ctrl-C, a crash or a reboot: finished trials never run again (every trial
is keyed by its configuration and seed; a duplicate is pruned before training), interrupted
ones run again; a last journal line cut short by a crash is dropped with a warning. --storage postgresql://USER@HOST/DB shares one study between machines: run the
same command on each (Optuna's heartbeat fails a trial whose worker dies and queues it again).
--workers N starts N local processes that share torch's threads (each gets 1/N of them; on 2
cores, two 1-thread workers trained 1.2x the examples/s of one 2-thread worker); a killed
worker's trial is queued again and a replacement starts."""


def add_parser(sub: Any) -> None:
    p = sub.add_parser("sweep", help="hyperparameter sweeps and seeds on Optuna (resumable, many workers)",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="examples:\n" + "\n".join("  " + line.strip() for line in (__doc__ or "").splitlines()
                                                         if line.strip().startswith("spbench sweep")))
    g = p.add_argument_group("what to train")
    g.add_argument("--method", default=None, help="registry key, see `spbench list` (required but with --studies)")
    g.add_argument("--backbone", default="minilm-l6", help="default: %(default)s")
    g.add_argument("--batch-size", type=int, default=32, help="default: %(default)s")
    g.add_argument("--seq-len", type=int, default=64, help="max token length (default: %(default)s)")
    g.add_argument("--dtype", default="float32", help="float32 | bfloat16 (autocast) | float16")
    # The options `spbench run` and the benchmarks take too, declared once (spbench.options).
    add_options(g.add_argument, ["objective", "device", "sets", "sst2_dir"],
                objective={"default": "classification"}, device={"help": "training device (default: cpu)"},
                sets={"help": "fixed hyperparameter, repeatable"})
    g.add_argument("--grad-checkpointing", action="store_true",
                   help="activation checkpointing of the backbone's layers (methods whose backward goes through them)")
    g = p.add_argument_group("search")
    g.add_argument("--grid", action="append", default=[], metavar="KEY[=V1,V2,...]",
                   help="grid values of KEY (KEY alone: its declared space's grid), repeatable")
    g.add_argument("--space", action="append", default=[], metavar="KEY[=SPEC]",
                   help="search KEY over SPEC (LOW:HIGH[:log], xA:xB[:log], V1,V2,...), repeatable")
    g.add_argument("--sampler", choices=SAMPLERS, default="auto",
                   help="auto: grid, or with --trials tpe (nsga2 with --pareto)")
    g.add_argument("--trials", type=int, default=None, help="configurations to try (tpe / nsga2)")
    g.add_argument("--best-from", metavar="STUDY", default=None,
                   help="fix the searched parameters at the best configuration of STUDY (same storage; it "
                        "must be finished), e.g. to repeat the best learning rate with --seeds on a longer budget; "
                        "a seed STUDY already trained with that configuration and training setup is taken "
                        "from it, not trained again")
    g.add_argument("--retrain", action="store_true",
                   help="with --best-from: train every seed, also one STUDY already ran (a reproducibility check)")
    g.add_argument("--seeds", default="0", help="comma-separated training seeds, each configuration once per seed")
    g.add_argument("--pareto", action="store_true", help="two objectives: accuracy and predicted CUDA peak")
    g.add_argument("--pruner", choices=PRUNERS, default="none",
                   help="multi-fidelity search: each trial scores validation at 1/8, 1/4, 1/2 and all of the "
                        "budget and Optuna's pruner (successive halving, or hyperband) stops the weak ones; the "
                        "best two of every rung reach the full budget (default: %(default)s)")
    g.add_argument("--select-on", choices=("validation", "dev"), default="validation",
                   help="what trials, --eval-every and --best-from select on: the validation split carved from "
                        "SST-2 train (default), or dev, the reported split (every report then says so)")
    g = p.add_argument_group("training (as spbench.train.run_accuracy)")
    add_options(g.add_argument, ["budget", "eval_every"],
                eval_every={"help": "score the selection split every N steps and keep the best checkpoint"})
    g.add_argument("--warmup", type=float, default=None, help="share of warmup steps (default: 0.06)")
    g.add_argument("--clip", type=float, default=None, help="max gradient norm, 0 for none (default: 1.0)")
    g.add_argument("--no-group-by-length", action="store_true", help="plain shuffled batches (more padding)")
    g = p.add_argument_group("storage and workers")
    g.add_argument("--out", default="out/sweep", help="output folder: journal, results, logs (default: %(default)s)")
    g.add_argument("--storage", default=None, help="journal file path or database URL (default: OUT/sweep.journal)")
    g.add_argument("--study", default="", help="study name (default: derived from the case and training setup)")
    g.add_argument("--workers", type=int, default=1, help="local worker processes (default: %(default)s)")
    g.add_argument("--heartbeat", type=int, default=DEFAULT_HEARTBEAT_S,
                   help="database storage: heartbeat seconds; a worker silent for twice that is dead")
    g.add_argument("--max-retry", type=int, default=DEFAULT_MAX_RETRY,
                   help="re-runs of a trial whose worker died before it is given up (default: %(default)s)")
    g.add_argument("--status", action="store_true", help="print the study's progress and results, train nothing")
    g.add_argument("--studies", action="store_true",
                   help="list every study in the storage (runs finished, pruned, failed, training, queued; the best so "
                        "far), train nothing")
    p.set_defaults(func=cmd_sweep)


def setup_from(args: argparse.Namespace) -> Setup:
    from spbench import methods
    from spbench.case import Case
    from spbench.options import check_cases, method_overrides
    from spbench.sweep.space import build_space
    from spbench.train import DEFAULT_CLIP, DEFAULT_CPU_BUDGET, DEFAULT_WARMUP, Budget

    check_ranges(trials=args.trials, warmup=args.warmup, clip=args.clip, workers=args.workers)
    if args.retrain and not args.best_from:
        raise InputError("--retrain goes with --best-from STUDY (it trains seeds STUDY already ran)")
    OPTION["eval_every"].check(args.eval_every)
    budget = str(Budget.parse(args.budget or DEFAULT_CPU_BUDGET))  # before --best-from opens the storage
    try:
        seeds = tuple(int(s) for s in args.seeds.split(",") if s.strip())
    except ValueError:
        raise InputError(f"--seeds wants comma-separated integers, not {args.seeds!r}") from None
    cls = methods.get(args.method)
    overrides = method_overrides([args.method], args.set)[args.method]  # checked as every front end checks
    grid = list(args.grid)
    if args.best_from:
        grid += [f"{k}={_text(v)}" for k, v in best_from(args).items()]
    params = tuple(build_space(cls, grid, args.space, fixed=[k for k, _ in overrides]))
    sampler = args.sampler
    if sampler == "auto":
        sampler = "grid" if args.trials is None else ("nsga2" if args.pareto else "tpe")
    case = Case(args.method, args.backbone, args.batch_size, args.seq_len, objective=args.objective,
                device=args.device, dtype=args.dtype, grad_checkpointing=args.grad_checkpointing, overrides=overrides)
    check_cases([case])
    return Setup(
        case=case, params=params, seeds=seeds, budget=budget, sampler=sampler, trials=args.trials, pareto=args.pareto,
        warmup=DEFAULT_WARMUP if args.warmup is None else args.warmup,
        clip=DEFAULT_CLIP if args.clip is None else (args.clip or None), eval_every=args.eval_every,
        group_by_length=not args.no_group_by_length, select_on=args.select_on, pruner=args.pruner, study=args.study,
        max_retry=args.max_retry, sst2_dir=args.sst2_dir)


def defaults_in_space(setup: Setup) -> dict[str, Any]:
    """The method's default values of the searched parameters, if every one lies in its space."""
    from spbench import methods

    method = methods.get(setup.case.method).from_overrides(dict(setup.case.overrides))
    out = {}
    for p in setup.params:
        value = getattr(method, p.name)
        inside = p.low <= value <= p.high if p.is_range else value in p.choices  # type: ignore[operator]
        if not inside:
            return {}
        out[p.name] = value
    return out


def best_from(args: argparse.Namespace) -> dict[str, Any]:
    import optuna

    from spbench.sweep.setup import open_storage
    from spbench.sweep.trials import best_params

    storage = open_storage(args.storage, Path(args.out), args.heartbeat, args.max_retry)
    try:
        study = optuna.load_study(study_name=args.best_from, storage=storage)
    except KeyError:
        names = ", ".join(s.study_name for s in optuna.get_all_study_summaries(storage)) or "none"
        raise InputError(f"--best-from {args.best_from!r}: no such study in this storage (it has: {names})") from None
    best = best_params(study, args.select_on)
    print(f"best of {args.best_from}: {', '.join(f'{k}={_text(v)}' for k, v in best.items())}")
    return best


def cmd_sweep(args: argparse.Namespace) -> int:
    import warnings

    import optuna

    from spbench.sweep import summary
    from spbench.sweep.setup import open_storage, open_study
    from spbench.sweep.trials import Objective, plan, recover, work

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # the sweep prints each trial's outcome itself
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    if args.studies:
        where = Path(args.storage or Path(args.out) / "sweep.journal")
        if "://" not in str(args.storage or "") and not where.exists():
            raise InputError(f"no storage at {where}: pass --out DIR or --storage PATH_OR_URL")
        print(summary.studies(open_storage(args.storage, Path(args.out), args.heartbeat, args.max_retry)))
        return 0
    if not args.method:
        raise InputError("--method is required (or --studies, to list the storage's studies)")
    setup = setup_from(args)
    if not args.status:
        from spbench.data import load_sst2

        load_sst2(args.sst2_dir)  # a missing SST-2 is the user's to fix now, not a failure in every trial
    out = Path(args.out)
    storage = open_storage(args.storage, out, args.heartbeat, args.max_retry)
    heartbeat = isinstance(storage, optuna.storages.RDBStorage)
    if args.status and setup.study_name not in optuna.get_all_study_names(storage):  # train nothing, make nothing
        names = ", ".join(optuna.get_all_study_names(storage)) or "none"
        raise InputError(f"--status: no study {setup.study_name!r} in this storage (it has: {names})")
    study = open_study(setup, storage)
    if setup.sampler != "grid" and not study.trials:
        first = defaults_in_space(setup)
        if first:  # the method's defaults are the first configuration a model-based sampler sees
            study.enqueue_trial(first, skip_if_exists=True)
    if not args.status:
        from spbench.sweep.trials import reopen

        reopen(study, setup)
    if args.best_from and not args.status:
        from spbench.sweep.trials import adopt, adopted

        if not args.retrain:
            adopt(study, setup, optuna.load_study(study_name=args.best_from, storage=storage))
        elif adopted(study):
            raise InputError(f"--retrain: study {setup.study_name!r} already took runs over from another study "
                             f"(trials {', '.join(map(str, adopted(study)))}); give the retrained seeds their own --study")
    result_path = out / f"{setup.study_name.replace(os.sep, '_')}.json"
    summary.header(setup, args.storage or str(out / "sweep.journal"), plan(study, setup, enqueue=False))
    if args.status:
        summary.footer(study, setup, result_path)
        return 0
    code = 0
    try:
        with interrupt.installed():
            recover(study, setup, heartbeat)
            if args.workers == 1:
                work(study, setup, Objective(setup), heartbeat)
            else:
                code = supervise(setup, args, out, heartbeat)
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED
    summary.footer(study, setup, result_path)
    if code == EXIT_INTERRUPTED:
        print("interrupted: run the same command again to resume (finished trials are kept)", file=sys.stderr)
        return code
    now = plan(study, setup, enqueue=False)  # the footer's trials, counted per unit (configuration, seed)
    if now.failed and not now.done:
        print(f"spbench sweep: every trial failed ({now.failed} of {setup.units}): no configuration to "
              "select; the trials above say why", file=sys.stderr)
        return code or 1
    return code


# --- local worker processes ----------------------------------------------------------------------

def worker_threads(total: int, workers: int) -> int:
    """Torch threads of each of ``workers`` local processes sharing ``total`` (at least one)."""
    return max(1, total // max(1, workers))


def _worker(setup: Setup, storage_arg: str | None, out: str, heartbeat_s: int, log_path: str,
            threads: int) -> None:
    """A worker process: its own storage connection, the shared study, trials until none is left."""
    import warnings

    import optuna
    import torch

    from spbench.sweep.setup import open_storage, open_study
    from spbench.sweep.trials import Objective, work

    with open(log_path, "a", buffering=1, encoding="utf-8") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        torch.set_num_threads(threads)
        print(f"--- worker pid {os.getpid()}, study {setup.study_name}, torch threads {threads}", flush=True)
        warnings.simplefilter("ignore")
        optuna.logging.set_verbosity(optuna.logging.ERROR)
        storage = open_storage(storage_arg, out, heartbeat_s, setup.max_retry)
        study = open_study(setup, storage)
        try:
            with interrupt.installed():
                work(study, setup, Objective(setup, progress=False), isinstance(storage, optuna.storages.RDBStorage))
        except KeyboardInterrupt:
            sys.exit(EXIT_INTERRUPTED)


def supervise(setup: Setup, args: argparse.Namespace, out: Path, heartbeat: bool) -> int:
    """Start ``--workers`` processes, show progress, replace a worker killed by a signal."""
    import torch

    from spbench.sweep import summary
    from spbench.sweep.setup import open_storage, open_study
    from spbench.sweep.trials import recover

    ctx = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked torch threads
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    study = open_study(setup, open_storage(args.storage, out, args.heartbeat, args.max_retry))
    threads = worker_threads(torch.get_num_threads(), args.workers)  # N workers x all threads oversubscribe

    def start(i: int) -> Any:
        proc = ctx.Process(target=_worker, name=f"spbench-sweep-{i}", daemon=False,
                           args=(setup, args.storage, str(out), args.heartbeat, str(logs / f"worker-{i}.log"),
                                 threads))
        proc.start()
        return proc

    procs = {i: start(i) for i in range(args.workers)}
    restarts, failed = 0, []
    try:
        with summary.Progress(study, setup) as bar:
            while procs:
                with interrupt.interruptible():
                    time.sleep(1.0)
                interrupt.check()
                bar.update()
                for i, proc in list(procs.items()):
                    if proc.is_alive():
                        continue
                    proc.join()
                    del procs[i]
                    if proc.exitcode is not None and proc.exitcode < 0 and restarts < 3 * args.workers:
                        sig = signal.Signals(-proc.exitcode).name
                        bar.log(f"worker {i} (pid {proc.pid}) was killed ({sig}); its trial is queued "
                                "again and a new worker starts")
                        recover(study, setup, heartbeat, log=bar.log)
                        restarts += 1
                        procs[i] = start(i)
                    elif proc.exitcode not in (0, None):
                        failed.append(i)
                        bar.log(f"worker {i} stopped with exit code {proc.exitcode}: see {logs / f'worker-{i}.log'}")
            bar.update()
    except KeyboardInterrupt:
        # A terminal's Ctrl-C reaches the workers too (one process group): give them a moment to
        # stop on their own, then pass a SIGINT on to any that did not get one.
        deadline = time.monotonic() + 3.0
        while any(p.is_alive() for p in procs.values()) and time.monotonic() < deadline:
            time.sleep(0.1)
        for proc in procs.values():
            if proc.is_alive() and proc.pid is not None:
                try:
                    os.kill(proc.pid, signal.SIGINT)
                except ProcessLookupError:
                    pass
        for proc in procs.values():
            proc.join(timeout=60)
            if proc.is_alive():
                proc.terminate()
                proc.join()
        return EXIT_INTERRUPTED
    return 1 if failed else 0
