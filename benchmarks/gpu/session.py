"""The whole GPU session in one command, each phase within its own time budget.

    benchmarks/gpu/session.sh OUT                          # on a machine with one CUDA GPU
    benchmarks/gpu/session.sh OUT --device cpu --tiny      # its dry run here (tested)

Phases, from the session's start:

1. accuracy (``accuracy.py``) starts at once for the ``--early`` methods (default ``mezo``:
   20,000 steps are the longest run) and holds the others until the matrix is done; every run
   ends by ``--budget-s`` (it is skipped if it would not);
2. the diagnostic (``diagnose.py``, ``--diag-case``), stopped at ``--diag-budget-s``;
3. the measured-vs-predicted matrix (``run.py``), measured step cases starting within
   ``--matrix-budget-s``; then the held accuracy runs start on the freed GPU and cores.

The early accuracy runs share the GPU with phases 2 and 3: memory figures are per process
(``max_memory_allocated``, the allocator history) and so unaffected, step times are not
(``--early ''`` keeps the matrix alone on the GPU). Results land in OUT as a few files,
one folder deep (quick to copy back from a remote machine):

    OUT/session.log                 everything printed, then each prediction shard's log
    OUT/diag/diagnosis.{md,json}    real vs predicted allocations at the peak
    OUT/matrix/gpu-report.md        measured vs predicted, worst and median error
    OUT/matrix/measured-<dev>.json  OUT/matrix/predicted.json   (pytest-benchmark JSON)
    OUT/accuracy/accuracy.{md,json}
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


class Log:
    """Lines to stdout and OUT/session.log, from several child processes at once."""

    def __init__(self, path: Path, start: float) -> None:
        self.file: IO[str] = open(path, "a", encoding="utf-8")
        self.start = start
        self.lock = threading.Lock()

    def line(self, text: str, tag: str = "session") -> None:
        with self.lock:
            out = f"[{time.time() - self.start:5.0f}s {tag}] {text}"
            print(out, flush=True)
            self.file.write(out + "\n")
            self.file.flush()

    def pump(self, proc: subprocess.Popen[str], tag: str) -> threading.Thread:
        def run() -> None:
            assert proc.stdout is not None
            for text in proc.stdout:
                self.line(text.rstrip(), tag)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread


def start(cmd: list[str], log: Log, tag: str) -> tuple[subprocess.Popen[str], threading.Thread]:
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}".rstrip(os.pathsep),
               PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1")
    log.line(" ".join(cmd[1:]), tag)
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)  # its own group: a timeout stops its children too
    return proc, log.pump(proc, tag)


def finish(proc: subprocess.Popen[str], pump: threading.Thread, log: Log, tag: str, timeout: float) -> int:
    """Wait up to ``timeout`` seconds, then stop the whole process group; the exit code."""
    try:
        code = proc.wait(timeout=max(1.0, timeout))
    except subprocess.TimeoutExpired:
        log.line("past its budget: stopped", tag)
        os.killpg(proc.pid, 15)
        try:
            code = proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            code = proc.wait()
    pump.join(timeout=5)
    log.line(f"exit {code}", tag)
    return code


def merge_predicted(paths: list[Path], target: Path) -> int:
    """One pytest-benchmark JSON from the prediction shards (those that ran a case)."""
    from spbench.errors import InputError
    from spbench.reporting.results import read_json, write_atomic

    merged: dict[str, Any] | None = None
    for path in paths:
        try:
            doc = read_json(path)
        except InputError:  # a shard whose cases all passed the budget: nothing to keep
            continue
        if merged is None:
            merged = doc
        else:
            merged["benchmarks"] += doc["benchmarks"]
    if merged is None:
        return 0
    write_atomic(target, json.dumps(merged, indent=1) + "\n")
    return len(merged["benchmarks"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="dry run: tiny models, a few steps")
    parser.add_argument("--budget-s", type=float, default=460.0, help="every phase ends by then (s from the start)")
    parser.add_argument("--diag-budget-s", type=float, default=90.0)
    parser.add_argument("--matrix-budget-s", type=float, default=170.0, help="run.py --budget-s")
    parser.add_argument("--predict-extra-s", type=float, default=20.0, help="run.py --predict-extra-s")
    parser.add_argument("--diag-case", default="", help="default: lora-roberta-large-b32-s256 (tiny: lora-tiny-roberta-b4-s32)")
    parser.add_argument("--methods", default="", help="matrix methods (default: every registered one)")
    parser.add_argument("--dtypes", default="float32,bfloat16,bf16-weights", help="matrix dtypes")
    parser.add_argument("--grad-checkpointing", default="off,on", help="matrix: the -gc cases too ('' : none)")
    parser.add_argument("--rounds", type=int, default=3, help="matrix: timed steps per case")
    parser.add_argument("--smallest-first", action="store_true",
                        help="matrix: measure small backbones first (default: roberta-large first, the largest errors)")
    parser.add_argument("--shards", type=int, default=0, help="matrix: prediction processes (0: auto)")
    parser.add_argument("--acc-methods", default="", help="accuracy methods (default: every registered one)")
    parser.add_argument("--early", default="mezo", help="accuracy methods that start at once")
    parser.add_argument("--carry", default=str(ROOT / "gpu-carry"), help="prepare_carry.py's folder")
    parser.add_argument("--acc-args", default="", help="more accuracy.py options, one string (e.g. '--configs F')")
    args = parser.parse_args(argv)
    begin = time.time()
    try:
        for sub in ("diag", "matrix", "accuracy"):
            (args.out / sub).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        parser.error(f"{args.out}: cannot create the folder ({exc.strerror or exc})")
    log = Log(args.out / "session.log", begin)
    work = Path(tempfile.mkdtemp(prefix="spbench-gpu-"))
    py = sys.executable
    tiny = ["--tiny"] if args.tiny else []
    device = ["--device", args.device]
    import torch

    log.line(f"torch {torch.__version__}, cuda {torch.version.cuda}, "
             f"gpu {torch.cuda.get_device_name() if torch.cuda.is_available() else 'none'}, cores {os.cpu_count()}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        log.line("no CUDA device: use --device cpu for a dry run")
        return 2
    go = work / "matrix-done"
    acc_cmd = [py, str(HERE / "accuracy.py"), "--out", str(args.out / "accuracy"), "--carry", args.carry, *device, *tiny,
               "--budget-s", str(args.budget_s - 20), "--grace-s", "15", "--hold-file", str(go), "--early", args.early,
               *(["--methods", args.acc_methods] if args.acc_methods else []), *args.acc_args.split()]
    acc = start(acc_cmd, log, "accuracy")

    case = args.diag_case or ("lora-tiny-roberta-b4-s32" if args.tiny else "lora-roberta-large-b32-s256")
    diag = start([py, str(HERE / "diagnose.py"), "--out", str(args.out / "diag"), *device, "--case", case], log, "diag")
    finish(*diag, log, "diag", args.diag_budget_s - (time.time() - begin))

    matrix_out = work / "matrix"
    matrix_cmd = [py, str(HERE / "run.py"), "--out", str(matrix_out), *device, *tiny,
                  "--budget-s", str(args.matrix_budget_s), "--predict-extra-s", str(args.predict_extra_s),
                  "--rounds", str(args.rounds), "--dtypes", args.dtypes, "--grad-checkpointing", args.grad_checkpointing,
                  *(["--shards", str(args.shards)] if args.shards else []),
                  *([] if args.smallest_first else ["--largest-first"]),
                  *(["--methods", args.methods] if args.methods else [])]
    matrix = start(matrix_cmd, log, "matrix")
    finish(*matrix, log, "matrix", args.budget_s - 30 - (time.time() - begin))
    go.touch()
    measured = sorted(matrix_out.glob("measured-*.json"))
    for path in measured:
        shutil.copy(path, args.out / "matrix" / path.name)
    n = merge_predicted(sorted(matrix_out.glob("predicted-*.json")), args.out / "matrix" / "predicted.json")
    log.line(f"{n} predicted case(s) in matrix/predicted.json")
    from summary import main as summarize  # noqa: E402  (beside this file)

    found = [str(p) for p in (*measured, args.out / "matrix" / "predicted.json") if Path(p).is_file()]
    if found:
        with contextlib.redirect_stdout(io.StringIO()):  # run.py printed its own report already
            summarize(found, args.out / "matrix" / "gpu-report.md")
        if args.early:  # say what shared the GPU while step times were taken
            report = args.out / "matrix" / "gpu-report.md"
            report.write_text(report.read_text() + f"\nStep times were taken while the accuracy runs of "
                              f"{args.early} trained on the same GPU in another process; peaks are per process.\n")
    finish(*acc, log, "accuracy", args.budget_s + 30 - (time.time() - begin))
    with open(args.out / "session.log", "a", encoding="utf-8") as out:  # every shard's log, for the record
        for path in sorted((matrix_out / "logs").glob("*.log")):
            out.write(f"\n===== matrix/{path.name} =====\n{path.read_text(errors='replace')}")
    shutil.rmtree(work, ignore_errors=True)
    for name, keep in (("diag/diagnosis.md", lambda t: t.startswith(("#", "- "))),
                       ("matrix/gpu-report.md", lambda t: t.startswith(("GPU:", "- "))),
                       ("accuracy/accuracy.md", lambda t: t.startswith("|"))):
        path = args.out / name
        lines = [t for t in path.read_text().splitlines() if keep(t)] if path.is_file() else ["(not written)"]
        log.line(f"{name}:\n" + "\n".join(lines[:40]), "summary")
    files = sorted(str(p.relative_to(args.out)) for p in args.out.rglob("*") if p.is_file())
    log.line(f"done in {time.time() - begin:.0f} s; {len(files)} files in {args.out}: {', '.join(files)}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    sys.exit(main())
