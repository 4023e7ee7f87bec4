"""Orchestrates the prepared GPU run within a time budget (see run.sh).

One pytest process runs the measured step cases on the GPU, smallest first, with a deadline:
a case that would start past the budget is skipped and listed. Meanwhile the predicted
figures of the same cases (CPU only: fake tensors) run in parallel pytest shards on the
machine's spare cores. All write pytest-benchmark JSON into OUT; ``summary.py`` then renders
measured vs predicted with the error of each case.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FULL = {
    "groups": [("distilbert-base", "16x128"), ("roberta-base", "16x128"),
               ("roberta-large", "16x128"), ("roberta-large", "32x256")],
    "dtypes": ["float32", "bfloat16"],
}
TINY = {"groups": [("tiny-bert", "4x32"), ("tiny-roberta", "4x32")], "dtypes": ["float32", "bfloat16"]}


def pytest_cmd(test: str, json_path: Path, backbones: str, shapes: str, dtypes: str,
               extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "pytest", str(ROOT / "benchmarks" / test), "-p", "no:cacheprovider",
            "-W", "ignore", "-rs", f"--benchmark-json={json_path}", "--benchmark-columns=median",
            f"--backbones={backbones}", f"--shapes={shapes}", f"--dtypes={dtypes}", *extra]


def lever_args(args: argparse.Namespace) -> list[str]:
    """``--grad-checkpointing off,on`` for both pytest runs, when asked (cases where it applies)."""
    return [f"--grad-checkpointing={args.grad_checkpointing}"] if args.grad_checkpointing else []


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="tiny models (a dry run that cannot rot)")
    parser.add_argument("--budget-s", type=float, default=420.0, help="step cases start before this (s)")
    parser.add_argument("--methods", default="", help="default: every registered method")
    parser.add_argument("--predict-extra-s", type=float, default=60.0,
                        help="predictions may start until budget + this (s)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--shards", type=int, default=0, help="parallel prediction processes (0: auto)")
    parser.add_argument("--dtypes", default="", help="default: float32,bfloat16 (e.g. add bf16-weights)")
    parser.add_argument("--grad-checkpointing", default="", help="off,on: the -gc cases too, where they apply")
    parser.add_argument("--largest-first", action="store_true",
                        help="measure the largest groups first (a budget then cuts the small ones)")
    args = parser.parse_args()
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # an existing file, an unwritable parent: one line, exit 2
        parser.error(f"--out {out}: cannot create the folder ({exc.strerror or exc})")
    plan = dict(TINY if args.tiny else FULL)
    if args.dtypes:
        plan["dtypes"] = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    start = time.time()
    deadline = start + args.budget_s
    methods = [f"--methods={args.methods}"] if args.methods else []

    import torch

    print(f"torch {torch.__version__}, cuda {torch.version.cuda}, "
          f"gpu {torch.cuda.get_device_name() if torch.cuda.is_available() else 'none'}, cores {os.cpu_count()}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device: use --device cpu for a dry run", file=sys.stderr)
        return 2

    # Predictions: one shard per (backbone, shape, dtype); a few threads each.
    cores = os.cpu_count() or 2
    shards = args.shards or max(1, min(8, (cores - 4) // 2))
    env = dict(os.environ, OMP_NUM_THREADS="2", CUDA_VISIBLE_DEVICES="")
    jobs = [(bb, shape, dtype) for bb, shape in plan["groups"] for dtype in plan["dtypes"]]
    # Heaviest first, so the pool's tail is short.
    jobs.sort(key=lambda j: (j[0] != "roberta-large", j[1] != "32x256"))
    running: list[tuple[subprocess.Popen[bytes], str]] = []
    logs = out / "logs"
    logs.mkdir(exist_ok=True)

    def launch(job: tuple[str, str, str]) -> None:
        bb, shape, dtype = job
        name = f"predicted-{bb}-{shape}-{dtype}"
        cmd = pytest_cmd("test_memory.py", out / f"{name}.json", bb, shape, dtype,
                         [*methods, *lever_args(args), "-q", f"--deadline={deadline + args.predict_extra_s}"])
        log = open(logs / f"{name}.log", "wb")
        running.append((subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT), name))

    def reap() -> None:
        """Note finished prediction shards and start the next ones in their place."""
        for proc, name in list(running):
            if proc.poll() is not None:
                running.remove((proc, name))
                print(f"[{time.time() - start:5.0f}s] {name}: exit {proc.returncode}")
                if pending:
                    launch(pending.pop(0))

    pending = list(jobs)
    while pending and len(running) < shards:
        launch(pending.pop(0))

    # Measured steps on the device, smallest groups first, in one process.
    step_json = out / f"measured-{args.device.replace(':', '')}.json"
    step_env = dict(os.environ, OMP_NUM_THREADS=str(max(2, cores - 2 * shards)))
    groups = list(reversed(plan["groups"])) if args.largest_first else plan["groups"]
    area = lambda shape: int(shape.split("x")[0]) * int(shape.split("x")[1])  # noqa: E731
    shapes = sorted({g[1] for g in groups}, key=area, reverse=args.largest_first)
    cmd = pytest_cmd("test_step.py", step_json, ",".join(sorted({g[0] for g in groups}, key=[g[0] for g in groups].index)),
                     ",".join(shapes), ",".join(plan["dtypes"]),
                     [*methods, *lever_args(args), f"--device={args.device}", f"--rounds={args.rounds}",
                      f"--deadline={deadline}"])
    # Shapes x backbones is a product in conftest; keep only the planned pairs.
    wanted = {f"{bb}-b{s.split('x')[0]}-s{s.split('x')[1]}" for bb, s in groups}
    cmd += ["-k", " or ".join(sorted(wanted)), "-v"]
    print(f"[{time.time() - start:5.0f}s] measured cases on {args.device}: {' '.join(cmd[3:])}")
    step = subprocess.Popen(cmd, cwd=ROOT, env=step_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    with open(logs / "measured.log", "wb") as log:
        assert step.stdout is not None
        for line in step.stdout:
            log.write(line)
            text = line.decode(errors="replace").rstrip()
            if any(word in text for word in ("PASSED", "FAILED", "SKIPPED", "ERROR", " passed", " failed")):
                print(f"[{time.time() - start:5.0f}s] {text}")
            reap()  # keep the prediction pool busy while the GPU runs
    step.wait()
    print(f"[{time.time() - start:5.0f}s] measured cases done: exit {step.returncode}")
    while running or pending:
        reap()
        time.sleep(0.5)
    print(f"[{time.time() - start:5.0f}s] predictions done")
    from summary import main as summarize  # noqa: E402  (beside this file)

    return summarize([str(p) for p in sorted(out.glob("*.json"))], out / "gpu-report.md")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    sys.exit(main())
