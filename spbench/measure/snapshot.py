"""The predicted step as a memory snapshot: what ``torch.cuda.memory._snapshot()`` would give.

Written in the snapshot's own format (segments with their blocks, and the device trace of
allocations, frees and segment allocations), so torch's tools draw the prediction without a
GPU: ``python -m torch.cuda._memory_viz trace_plot FILE -o trace.html`` (or ``segment_plot``),
or https://pytorch.org/memory_viz. The segments are the simulated allocator's after the
measured step; the trace covers the whole protocol (parameters, batch, warm-up, step).
Addresses are the simulator's, not a device's; frames are empty (no Python stacks recorded).
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

from spbench.measure.allocator import Allocator, replay
from spbench.measure.trace import Trace


def _segments(alloc: Allocator) -> list[dict[str, Any]]:
    out = []
    for segment, head in sorted(alloc.heads.items(), key=lambda item: item[1].addr):
        blocks = []
        block = head
        while block is not None and block.size:
            blocks.append({"address": block.addr, "size": block.size,
                           "requested_size": block.requested if block.allocated else 0,
                           "state": "active_allocated" if block.allocated else "inactive", "frames": []})
            block = block.next
        if not blocks:
            continue
        allocated = sum(b["size"] for b in blocks if b["state"] == "active_allocated")
        out.append({
            "device": 0, "address": head.addr, "stream": 0,
            "total_size": sum(b["size"] for b in blocks), "allocated_size": allocated,
            "active_size": allocated, "requested_size": sum(b["requested_size"] for b in blocks),
            "segment_type": "small" if alloc.is_small(segment) else "large",
            "segment_pool_id": (0, 0), "is_expandable": alloc.expandable, "frames": [], "blocks": blocks,
        })
    return out


def snapshot(trace: Trace, expandable: bool = False) -> dict[str, Any]:
    """The snapshot dictionary of a step's allocation trace replayed by the allocator."""
    record: list[dict[str, Any]] = []
    _, alloc = replay(trace.events, expandable, trace.step_start, record=record)
    return {"segments": _segments(alloc), "device_traces": [record],
            "allocator_settings": {"expandable_segments": expandable}}


def write_snapshot(trace: Trace, path: str | Path, expandable: bool = False) -> None:
    """Pickle the snapshot to ``path``, as ``torch.cuda.memory._dump_snapshot`` does."""
    with open(path, "wb") as fh:
        pickle.dump(snapshot(trace, expandable), fh)
