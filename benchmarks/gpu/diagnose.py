"""Which allocations make a predicted peak differ from the measured one.

    python benchmarks/gpu/diagnose.py --out OUT/diag                               # on the GPU
    python benchmarks/gpu/diagnose.py --out /tmp/diag --device cpu --case lora-tiny-roberta-b4-s32   # dry run

For one case (default ``lora-roberta-large-b32-s256``, +19% on the H100) it takes the live
blocks at the peak of one steady-state step on both sides and compares them:

- **real**: on CUDA, the allocator's own history (``torch.cuda.memory._record_memory_history``
  with Python stacks, then ``_snapshot``), replayed event by event over the measured step to
  the moment of ``max_memory_allocated``; each block is labelled by its allocating Python
  frames. On the CPU (the dry run, which has no CUDA allocator) the real step runs under the
  labelling tracker below instead, on CPU kernels: it exercises the comparison code, it does
  not diagnose CUDA.
- **predicted**: the fake-tensor step with CUDA emulated, exactly as ``spbench.measure.predict``
  runs it, under a ``Tracker`` subclass that labels every storage with the innermost module,
  the phase (fw / bw / opt) and the op that created it, and keeps the live set at each new peak.

The comparison groups block sizes (bytes, after the 512-byte rounding both sides share): each
size whose count differs, with the bytes that difference is worth and the labels on each side,
largest first; plus each side's breakdown by category / module and by label. ``diagnosis.json``
holds all of it, ``diagnosis.md`` the largest rows.
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch.distributed._tools import mem_tracker as _mt  # noqa: E402

from spbench.measure.memory import Tracker  # noqa: E402

Block = tuple[int, str, str]  # (bytes, category, label)
TORCH_DIR = str(Path(torch.__file__).parent) + "/"  # frames inside torch itself (not "/opt/torch/.venv/...")
_INDEX = re.compile(r"\.\d+(?=\.|$)")


def _kind(reftype: Any) -> str:
    return str(getattr(reftype, "value", reftype))


class LabelTracker(Tracker):
    """spbench's Tracker that labels each storage where it is created and keeps the live set
    (size, category, label) at every new global peak: the last one kept is the peak's."""

    def __init__(self) -> None:
        super().__init__()
        self.op = "external"
        self.at_peak: list[Block] = []
        self.peak_total = 0

    def _where(self) -> str:
        parents = [p for p in self._mod_tracker.parents if p != "Global"]
        module = _INDEX.sub(".*", max(parents, key=lambda p: (p.count("."), len(p)))) if parents else "-"
        phase = "opt" if self._in_opt else "bw" if self._mod_tracker.is_bw else "fw"
        return f"{phase} {module} {self.op}"

    def _label_new(self, t: torch.Tensor) -> None:
        for st in _mt.get_untyped_storages(t):
            winfo, _ = self._WINFO.get(st, (None, None))
            if winfo is not None and not hasattr(winfo, "label"):
                winfo.label = self._where()

    def _track(self, reftype: Any, t: torch.Tensor) -> None:
        super()._track(reftype, t)
        self._label_new(t)

    def _update_and_maybe_create_winfos(self, t: torch.Tensor, reftype: Any, update_existing: bool = False) -> Any:
        out = super()._update_and_maybe_create_winfos(t, reftype, update_existing)
        for winfo in out:
            if not hasattr(winfo, "label"):
                winfo.label = f"held {_kind(reftype)} (model, optimizer state, batch or gradient)"
        return out

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.op = getattr(func, "__name__", str(func))
        return super().__torch_dispatch__(func, types, args, kwargs)

    def _update_peak_stats(self, peak_state: Any) -> None:
        super()._update_peak_stats(peak_state)
        total = sum(self._peak_mem.values())
        if total > self.peak_total:
            self.peak_total = total
            self.at_peak = [(w.mem_consumed, _kind(w.reftype), getattr(w, "label", "?"))
                            for w, ref in list(self._WINFO.values()) if ref() is not None and w.mem_consumed > 0]


def tracked_blocks(built: Any, optimizer: Any, autocast: Any) -> tuple[list[Block], int]:
    """The labelled live set at the tracked peak of one step of ``built`` (after a warm-up)."""
    from spbench.measure.memory import tracked_peak
    from spbench.measure.step import ChainHooks, step_fn

    step = step_fn(built, optimizer, ChainHooks(autocast=autocast))
    step()  # warm-up: the optimizer state exists
    tracker = LabelTracker()
    peak = tracked_peak(step, built.model, optimizer, list(built.batch.values()), tracker=tracker)
    return tracker.at_peak, int(peak["peak_bytes"])


def predicted_side(case: Any) -> dict[str, Any]:
    """The prediction's step (meta build, fake tensors, CUDA emulated), labelled."""
    from spbench.case import build
    from spbench.measure.memory import frozen_gc
    from spbench.measure.predict import fake_step
    from spbench.measure.step import autocast_for

    built = build(case, meta=True)
    with frozen_gc(), fake_step(built) as (optimizer, _):
        blocks, peak = tracked_blocks(built, optimizer, autocast_for(built.case, "cpu"))
    return {"source": "fake-tensor step, CUDA emulated (spbench.measure.predict)", "peak_bytes": peak, "blocks": blocks}


def cpu_side(case: Any) -> dict[str, Any]:
    """Dry run only: the real step on CPU kernels under the same labelling tracker."""
    import dataclasses

    from spbench.case import build
    from spbench.measure.step import autocast_for

    built = build(dataclasses.replace(case, device="cpu"))
    optimizer = built.method.make_optimizer(built.model)
    blocks, peak = tracked_blocks(built, optimizer, autocast_for(built.case, "cpu"))
    return {"source": "real step on the CPU under the labelling MemTracker (dry run: not CUDA)",
            "peak_bytes": peak, "blocks": blocks}


def _frame_label(frames: list[dict[str, Any]]) -> str:
    """Innermost frame outside torch (the model's or spbench's line), and the innermost torch
    one when it is an op library (optimizer, functional) rather than module plumbing."""
    def show(f: dict[str, Any]) -> str:
        return f"{Path(f.get('filename', '?')).name}:{f.get('line', '?')} {f.get('name', '?')}"

    outside = next((f for f in frames if not f.get("filename", "").startswith(TORCH_DIR)), None)
    inner = frames[0] if frames else None
    label = show(outside) if outside else "no python frame (autograd engine)"
    if inner is not None and inner is not outside and \
            inner.get("filename", "").startswith((TORCH_DIR + "optim/", TORCH_DIR + "nn/functional")):
        label = f"{show(inner)} < {label}"
    return label


def cuda_side(case: Any) -> dict[str, Any]:
    """The real step on CUDA with the allocator's history recorded from before the build."""
    from spbench.case import build
    from spbench.measure.measured import cuda_baseline
    from spbench.measure.memory import no_gc
    from spbench.measure.step import ChainHooks, autocast_for, step_fn

    baseline = cuda_baseline(case.device)
    torch.cuda.memory._record_memory_history(max_entries=2_000_000, stacks="python")
    built = build(case, on_device=True)
    built.model.to(case.device)
    optimizer = built.method.make_optimizer(built.model)
    step = step_fn(built, optimizer, ChainHooks(autocast=autocast_for(case, "cuda")))
    step()  # warm-up
    torch.cuda.synchronize()
    start = len(torch.cuda.memory._snapshot()["device_traces"][torch.cuda.current_device()])
    torch.cuda.reset_peak_memory_stats()
    with no_gc():
        step()
        torch.cuda.synchronize()
    measured = int(torch.cuda.max_memory_allocated()) - baseline[0]
    trace = torch.cuda.memory._snapshot()["device_traces"][torch.cuda.current_device()]
    torch.cuda.memory._record_memory_history(enabled=None)
    best, live = replay(trace, start)
    blocks = [(size, "cuda", _frame_label(frames)) for size, frames in live]
    return {"source": "CUDA allocator history (_record_memory_history + _snapshot), replayed to the step's peak",
            "peak_bytes": measured, "replayed_peak_bytes": best, "trace_events": len(trace), "blocks": blocks}


def replay(trace: list[dict[str, Any]], start: int) -> tuple[int, list[tuple[int, list[dict[str, Any]]]]]:
    """Allocated bytes at the highest point of ``trace[start:]`` (counting every block the
    trace saw allocated before), and the (size, frames) of each block live then."""
    live: dict[int, tuple[int, list[dict[str, Any]]]] = {}
    total, best, best_at = 0, -1, -1
    for i, ev in enumerate(trace):  # first pass: when is the peak?
        total += _apply(live, ev)
        if i >= start and total > best:
            best, best_at = total, i
    live.clear()
    for ev in trace[:best_at + 1]:  # second pass: what is live then
        _apply(live, ev)
    return best, list(live.values())


def _apply(live: dict[int, tuple[int, list[dict[str, Any]]]], ev: dict[str, Any]) -> int:
    """One trace event on the live set; returns the change of allocated bytes."""
    action, addr = ev.get("action"), ev.get("addr")
    if action == "alloc":
        live[addr] = (int(ev["size"]), ev.get("frames") or [])
        return int(ev["size"])
    if action in ("free_requested", "free_completed") and addr in live:
        return -live.pop(addr)[0]
    return 0


def breakdown(blocks: list[Block], by: str) -> list[dict[str, Any]]:
    """Bytes and count per category, per label, or per "category | module" (largest first)."""
    key = {"category": lambda b: b[1], "label": lambda b: b[2],
           "module": lambda b: f"{b[1]} | {' '.join(b[2].split(' ')[:2])}"}[by]
    out: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
    for b in blocks:
        out[key(b)][0] += b[0]
        out[key(b)][1] += 1
    return [{"key": k, "bytes": v[0], "count": v[1]} for k, v in sorted(out.items(), key=lambda kv: -kv[1][0])]


def compare(real: list[Block], pred: list[Block]) -> list[dict[str, Any]]:
    """Per block size whose count differs: counts on each side, the bytes the difference is
    worth (predicted minus real), and the most common labels on each side."""
    def by_size(blocks: list[Block]) -> dict[int, list[str]]:
        out: dict[int, list[str]] = collections.defaultdict(list)
        for size, kind, label in blocks:
            out[size].append(f"{kind}: {label}" if kind != "cuda" else label)
        return out

    r, p = by_size(real), by_size(pred)
    rows = []
    for size in set(r) | set(p):
        nr, np_ = len(r.get(size, [])), len(p.get(size, []))
        if nr != np_:
            rows.append({"size_bytes": size, "real_count": nr, "predicted_count": np_,
                         "excess_bytes": (np_ - nr) * size,
                         "real_labels": collections.Counter(r.get(size, [])).most_common(3),
                         "predicted_labels": collections.Counter(p.get(size, [])).most_common(3)})
    return sorted(rows, key=lambda row: (-abs(row["excess_bytes"]), -row["size_bytes"]))


def _mib(n: float) -> str:
    return f"{n / 2**20:,.2f}"


def render(doc: dict[str, Any], top: int = 25) -> str:
    from tabulate import tabulate

    real, pred = doc["real"], doc["predicted"]
    err = 100.0 * (pred["peak_bytes"] - real["peak_bytes"]) / real["peak_bytes"]
    rows = [[r["size_bytes"], r["real_count"], r["predicted_count"], _mib(r["excess_bytes"]),
             "; ".join(f"{n}x {lab}" for lab, n in r["real_labels"])[:90],
             "; ".join(f"{n}x {lab}" for lab, n in r["predicted_labels"])[:110]] for r in doc["size_differences"][:top]]
    parts = [f"# Peak allocations: real vs predicted, `{doc['case']}`", "",
             f"- real ({real['source']}): peak **{_mib(real['peak_bytes'])} MiB**"
             + (f" (replayed from the trace: {_mib(real['replayed_peak_bytes'])} MiB, {real['trace_events']} events)"
                if "replayed_peak_bytes" in real else ""),
             f"- predicted ({pred['source']}): peak **{_mib(pred['peak_bytes'])} MiB** ({err:+.1f}%)",
             f"- live blocks at the peak: real {real['block_count']} ({_mib(real['block_bytes'])} MiB), "
             f"predicted {pred['block_count']} ({_mib(pred['block_bytes'])} MiB); "
             f"sizes whose count differs: {len(doc['size_differences'])}, worth "
             f"{_mib(sum(r['excess_bytes'] for r in doc['size_differences']))} MiB net", "",
             "## Block sizes present on one side and not the other (largest difference first)", "",
             tabulate(rows, headers=["size B", "real n", "pred n", "pred - real MiB", "real: allocated at",
                                     "predicted: phase module op"], tablefmt="github", disable_numparse=True), ""]
    for side in ("predicted", "real"):
        rows = [[g["key"][:110], g["count"], _mib(g["bytes"])] for g in doc[f"{side}_by_module"][:top]]
        parts += [f"## {side.capitalize()} peak by {doc['predicted_grouping'] if side == 'predicted' else doc['real_grouping']}",
                  "", tabulate(rows, headers=["group", "blocks", "MiB"], tablefmt="github", disable_numparse=True), ""]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--case", default="lora-roberta-large-b32-s256",
                        help="METHOD-BACKBONE-bB-sS[-bf16] (default: %(default)s)")
    args = parser.parse_args(argv)
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)  # transformers 5's renamed gc query
    from spbench.case import Case
    from spbench.errors import InputError
    from spbench.reporting.results import write_atomic

    found = re.fullmatch(r"(\w+)-(.+)-b(\d+)-s(\d+)(-bf16)?", args.case)
    if not found:
        parser.error(f"--case {args.case!r}: expected METHOD-BACKBONE-bB-sS[-bf16]")
    case = Case(found[1], found[2], int(found[3]), int(found[4]), device=args.device,
                dtype="bfloat16" if found[5] else "float32")
    try:
        case.validate()
    except InputError as exc:
        parser.error(str(exc))
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device: use --device cpu for a dry run", file=sys.stderr)
        return 2
    started = time.time()
    real = cuda_side(case) if args.device.startswith("cuda") else cpu_side(case)
    print(f"[{time.time() - started:5.1f}s] real side: peak {_mib(real['peak_bytes'])} MiB, {len(real['blocks'])} blocks")
    pred = predicted_side(case)
    print(f"[{time.time() - started:5.1f}s] predicted side: peak {_mib(pred['peak_bytes'])} MiB, {len(pred['blocks'])} blocks")
    on_cuda = args.device.startswith("cuda")
    doc = {"case": case.id, "device": args.device, "torch_version": torch.__version__, "real": real, "predicted": pred,
           "size_differences": compare(real["blocks"], pred["blocks"]),
           "predicted_by_module": breakdown(pred["blocks"], "module"),
           "predicted_by_label": breakdown(pred["blocks"], "label")[:300],
           "real_by_module": breakdown(real["blocks"], "label" if on_cuda else "module"),
           "predicted_grouping": "category | phase module",
           "real_grouping": "allocating frame" if on_cuda else "category | phase module"}
    for side in (real, pred):  # the aggregates above hold what the raw lists say, in far fewer lines
        side["block_count"], side["block_bytes"] = len(side["blocks"]), sum(b[0] for b in side["blocks"])
        side["blocks"] = sorted(side["blocks"], key=lambda b: -b[0])[:500]
    write_atomic(args.out / "diagnosis.json", json.dumps(doc, indent=1) + "\n")
    write_atomic(args.out / "diagnosis.md", render(doc))
    print("\n".join(render(doc, top=8).splitlines()[:16]))  # the header and the largest differences
    return 0


if __name__ == "__main__":
    sys.exit(main())
