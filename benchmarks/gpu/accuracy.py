"""SST-2 accuracy at real budgets on a GPU, within a time budget.

    python benchmarks/gpu/accuracy.py --out OUT/accuracy --carry gpu-carry --budget-s 200
    python benchmarks/gpu/accuracy.py --out /tmp/acc --carry /tmp/carry --device cpu --tiny   # dry run

Every registered method (or ``--methods``) trains on SST-2 train and is scored on the
872-sentence dev split through ``spbench.train`` -- ``run_accuracy``, the path of the accuracy
benchmarks (``benchmarks/test_accuracy.py``) -- on ``minilm-l6`` read from the carried folder
(``prepare_carry.py``: float16 safetensors, loaded as float32) and SST-2 read from it without
``datasets``. Each method's configuration is its defaults plus ``--configs`` (a JSON object:
method -> {hyperparameter: value}; the tuned ones, once the sweep has landed).

Budgets: ``--epochs`` (3) for every method, except ``mezo``: ``--mezo-steps`` (20,000) steps on
the classification objective, whose head starts from spbench's linear probe (``mezo``'s
``warm_start_head``: minilm-l6 has no pretrained MLM head for the prompt objective). Every run
goes through ``spbench.train.run_accuracy``: selection on the validation split, dev scored once.

Methods run in ``--workers`` fresh processes (small models leave the GPU mostly idle: the CPU
launches kernels), longest first; with ``--hold-file`` only the ``--early`` ones start at once
and the rest once that file exists (``session.py`` creates it when the GPU matrix is done). ``--budget-s`` is a deadline for every run (``fit``'s
``deadline``): one projected past it after 50 steps, or still running at it, stops and is
recorded as skipped; one not started by then is recorded as not started. Results are
rewritten after each run (``accuracy.json``, pytest-benchmark JSON that ``spbench report``
reads, and ``accuracy.md``), so a killed call still leaves what finished.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # spawned workers import this file by path, without run.sh's PYTHONPATH
    sys.path.insert(0, str(ROOT))
# Longest first, so the pool's tail is short (mezo: 20,000 steps of two forwards).
ORDER = ("mezo", "mezo_lst", "full_ft", "lora_blocks", "prompt_tuning", "lora", "ia3", "prefix",
         "klst", "side_lora", "lst", "bitfit")
TINY_BACKBONE = "tiny-bert-fp16"


def plan(args: argparse.Namespace) -> list[dict[str, Any]]:
    """One task per method: what a worker needs, as plain data."""
    from spbench import methods

    names = [m.strip() for m in args.methods.split(",") if m.strip()] or methods.names()
    for name in names:
        methods.get(name)  # did-you-mean on a typo, before anything starts
    configs = json.loads(Path(args.configs).read_text()) if args.configs else {}
    names.sort(key=lambda n: ORDER.index(n) if n in ORDER else len(ORDER))
    return [{"method": name, "overrides": {k: str(v) for k, v in configs.get(name, {}).items()},
             "backbone": TINY_BACKBONE if args.tiny else "minilm-l6", "carry": str(Path(args.carry).resolve()),
             "device": args.device, "batch_size": args.batch_size, "max_len": args.max_len, "budget": args.budget,
             "mezo_steps": args.mezo_steps,
             "seed": args.seed, "eval_every": args.eval_every, "deadline": args.deadline} for name in names]


def _setup(task: dict[str, Any]) -> None:
    """In the worker: the carried model and data, read without ``datasets`` or a download."""
    import warnings

    import transformers

    warnings.filterwarnings("ignore", category=FutureWarning)  # transformers 5's renamed gc query
    getattr(transformers.utils.logging, "disable_progress_bar", lambda: None)()  # "Loading weights" bars
    carry = Path(task["carry"])
    os.environ.update(SPBENCH_SST2_READER="plain", SPBENCH_SST2_DIR=str(carry / "sst2"), HF_HUB_OFFLINE="1")
    if task["backbone"] == TINY_BACKBONE:
        from spbench.backbones import BACKBONES, BackboneSpec

        if TINY_BACKBONE not in BACKBONES:
            folder = str(carry / "tiny-bert")
            BACKBONES.register(TINY_BACKBONE)(BackboneSpec(
                TINY_BACKBONE, "tiny random BERT with minilm-l6's tokenizer, float16 on disk (GPU dry run)",
                path=lambda: folder, pretrained=True))
    else:
        os.environ["SPBENCH_MINILM_DIR"] = str(carry / "minilm-l6")


def run_task(task: dict[str, Any]) -> dict[str, Any]:
    """One method, in a fresh worker process: its Result's ``extra_info`` (or why none)."""
    started = time.time()
    out = {"method": task["method"], "started_s": started}
    if started >= task["deadline"]:
        return {**out, "status": "not started", "reason": "time budget spent before it could start"}
    try:
        _setup(task)
        from spbench.case import Case
        from spbench.train import Budget, run_accuracy

        case = Case(task["method"], task["backbone"], batch_size=task["batch_size"], seq_len=task["max_len"],
                    device=task["device"], overrides=tuple(sorted(task["overrides"].items())))
        budget = Budget(steps=task["mezo_steps"]) if task["method"] == "mezo" else Budget.parse(task["budget"])
        result, run = run_accuracy(case, budget, seed=task["seed"], eval_every=task["eval_every"], progress=False,
                                   deadline=task["deadline"])
        return {**out, "status": result.status, "extra_info": result.to_extra_info(),
                "losses_tail": [round(v, 4) for v in run.losses[-5:]], "wall_s": time.time() - started}
    except Exception as exc:  # a data point, not the end of the run: the rest goes on
        return {**out, "status": "failed", "reason": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc()[-3000:], "wall_s": time.time() - started}


def document(done: list[dict[str, Any]], tasks: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    """pytest-benchmark JSON of the finished runs (``spbench report`` reads it) plus the rest."""
    from datetime import datetime, timezone

    from pytest_benchmark import __version__

    import torch

    from spbench.sweep.document import machine_info, one_round_stats

    machine = machine_info()  # the sweep's documents' description, plus the GPU's
    machine.update(cuda_version=torch.version.cuda,
                   gpu_name=torch.cuda.get_device_name() if torch.cuda.is_available() else "none")
    benchmarks = []
    for d in done:
        info = d.get("extra_info")
        if info is None:
            continue
        benchmarks.append({"group": "gpu-accuracy", "name": f"gpu_accuracy[{info['case_id']}]",
                           "fullname": f"benchmarks/gpu/accuracy.py::{info['case_id']}", "params": None,
                           "param": info["case_id"], "extra_info": info, "options": {},
                           "stats": one_round_stats(info.get("train_time_s"))})
    names = {d["method"] for d in done}
    return {"machine_info": machine, "commit_info": {}, "benchmarks": benchmarks,
            "datetime": datetime.now(timezone.utc).isoformat(), "version": __version__,
            "gpu_accuracy": {"args": {k: v for k, v in vars(args).items() if k != "deadline"},
                             "runs": [{k: v for k, v in d.items() if k != "extra_info"} for d in done],
                             "pending": [t["method"] for t in tasks if t["method"] not in names]}}


def render(doc: dict[str, Any]) -> str:
    from tabulate import tabulate

    rows = []
    infos = {b["extra_info"]["method"]: b["extra_info"] for b in doc["benchmarks"]}
    for run in doc["gpu_accuracy"]["runs"]:
        info = infos.get(run["method"], {})
        acc = info.get("sst2_accuracy")
        rows.append([run["method"], run["status"], "" if acc is None else f"{100 * acc:.2f}",
                     "" if acc is None else f"{100 * info['sst2_f1']:.2f}", info.get("train_steps", ""),
                     f"{info['train_time_s']:.0f}" if "train_time_s" in info else "",
                     f"{info['peak_bytes'] / 2**20:,.0f}" if "peak_bytes" in info else "",
                     (info.get("reason") or run.get("reason") or "")[:120]])
    rows += [[m, "not run", "", "", "", "", "", "pending when the run ended"] for m in doc["gpu_accuracy"]["pending"]]
    a = doc["gpu_accuracy"]["args"]
    return "\n".join([
        "# SST-2 dev accuracy at real budgets", "",
        f"Device: {doc['machine_info'].get('gpu_name')} ({a['device']}), torch {doc['machine_info'].get('torch_version')}. "
        f"Backbone {'tiny-bert (dry run)' if a['tiny'] else 'minilm-l6 (float16 on disk, trained in float32)'}; "
        f"batch {a['batch_size']}, max length {a['max_len']}, seed {a['seed']}; budget {a['budget']} per method; "
        f"mezo: {a['mezo_steps']} MeZO steps from a linear-probe head (classification objective); time budget "
        f"{a['budget_s']:.0f} s with {a['workers']} workers. Configurations: "
        f"{'defaults plus ' + a['configs'] if a['configs'] else 'each method’s defaults'}.", "",
        tabulate(rows, headers=["method", "status", "dev acc %", "dev F1 %", "steps", "train s", "peak MiB", "note"],
                 tablefmt="github", disable_numparse=True), ""])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--carry", default=str(ROOT / "gpu-carry"), help="prepare_carry.py's folder")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="dry run: tiny-bert, a few steps, the carried subset")
    parser.add_argument("--methods", default="", help="comma-separated (default: every registered method)")
    parser.add_argument("--configs", default="", help="JSON file: method -> {hyperparameter: value}")
    parser.add_argument("--epochs", type=float, default=3.0)
    parser.add_argument("--mezo-steps", type=int, default=20_000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-len", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-every", type=int, default=0)
    parser.add_argument("--budget-s", type=float, default=200.0, help="every run ends by this many seconds")
    parser.add_argument("--workers", type=int, default=0, help="processes (0: 8 on CUDA, 2 on the CPU)")
    parser.add_argument("--grace-s", type=float, default=60.0,
                        help="runs still going this long after the budget are stopped (scoring, peak step)")
    parser.add_argument("--hold-file", default="", help="start the methods not in --early once this file exists")
    parser.add_argument("--early", default="", help="comma-separated methods that start at once (with --hold-file)")
    args = parser.parse_args(argv)
    args.workers = args.workers or (8 if args.device.startswith("cuda") else 2)
    if args.tiny:  # a few steps on the carried subset
        args.batch_size, args.max_len, args.mezo_steps = 8, 32, 4
    args.budget = "steps=4" if args.tiny else f"epochs={args.epochs}"
    carry = Path(args.carry) / ("tiny-bert" if args.tiny else "minilm-l6")
    if not (carry / "config.json").is_file() or not (Path(args.carry) / "sst2" / "train.tsv").is_file():
        parser.error(f"--carry {args.carry}: no {carry.name}/ or sst2/ in it; run benchmarks/gpu/prepare_carry.py"
                     + (" --tiny" if args.tiny else ""))
    args.deadline = time.time() + args.budget_s
    from spbench.errors import InputError
    from spbench.reporting.results import write_atomic

    try:
        tasks = plan(args)
    except (InputError, OSError, json.JSONDecodeError) as exc:
        parser.error(str(exc))
    done: list[dict[str, Any]] = []

    def save() -> None:
        doc = document(done, tasks, args)
        write_atomic(args.out / "accuracy.json", json.dumps(doc, indent=1, default=str) + "\n")
        write_atomic(args.out / "accuracy.md", render(doc))

    start = time.time()
    ctx = multiprocessing.get_context("spawn")  # CUDA in the workers; one fresh process per method
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    with ctx.Pool(min(args.workers, len(tasks)), maxtasksperchild=1) as pool:
        early = {m.strip() for m in args.early.split(",") if m.strip()}
        held = [t for t in tasks if args.hold_file and t["method"] not in early]
        pending = [pool.apply_async(run_task, (t,)) for t in tasks if t not in held]
        grace = args.deadline + args.grace_s  # scoring and the peak step after a run stopped at the deadline
        while (pending or held) and time.time() < grace:
            if held and (Path(args.hold_file).exists() or time.time() >= args.deadline):
                print(f"[{time.time() - start:5.0f}s] starting {', '.join(t['method'] for t in held)}", flush=True)
                pending += [pool.apply_async(run_task, (t,)) for t in held]
                held = []
            for res in [p for p in pending if p.ready()]:
                pending.remove(res)
                d = res.get()
                done.append(d)
                info = d.get("extra_info", {})
                acc = info.get("sst2_accuracy")
                print(f"[{time.time() - start:5.0f}s] {d['method']}: {d['status']}"
                      + (f", dev accuracy {100 * acc:.2f}" if acc is not None else "")
                      + (f" ({info.get('reason') or d.get('reason')})" if d["status"] != "ok" else ""), flush=True)
                if d.get("traceback"):
                    print(d["traceback"], file=sys.stderr)
                save()
            time.sleep(0.5)
        if pending:
            print(f"{len(pending)} run(s) still going past the grace period: stopped", flush=True)
            pool.terminate()
    save()
    print(render(document(done, tasks, args)))
    return 0 if any(d["status"] == "ok" for d in done) else 1


if __name__ == "__main__":
    sys.exit(main())
