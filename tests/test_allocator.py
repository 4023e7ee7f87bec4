"""The caching-allocator simulator on hand-worked traces, and the trace of a predicted step.

Every expected figure is worked out here from the allocator's rules (512-byte blocks; 2 MiB
small-pool segments; 20 MiB large segments under 10 MiB, else the request rounded to 2 MiB;
best fit; splitting; merging within a segment), not taken from the simulator.
"""

from __future__ import annotations

from typing import Any

import pytest

from spbench.case import Case
from spbench.errors import InputError
from spbench.measure.allocator import Allocator, context_bytes, simulate
from spbench.measure.predict import predict
from spbench.measure.snapshot import snapshot
from spbench.measure.trace import ALLOC, FREE, Trace

MIB = 2**20


def events(*ops: tuple[str, int, int]) -> list[tuple[str, int, int]]:
    return list(ops)


def allocs(sizes: list[int], first: int = 0) -> list[tuple[str, int, int]]:
    return [(ALLOC, first + i, n) for i, n in enumerate(sizes)]


def frees(sizes: list[int], first: int = 0) -> list[tuple[str, int, int]]:
    return [(FREE, first + i, n) for i, n in enumerate(sizes)]


def test_no_merging_across_segments_default() -> None:
    # 8 x 16 MiB: each >= 10 MiB gets its own 16 MiB segment (128 MiB). Freed, they stay 8
    # separate cached blocks; none holds 32 MiB, so 4 x 32 MiB add 4 segments of 32 MiB.
    trace = allocs([16 * MIB] * 8) + frees([16 * MIB] * 8) + allocs([32 * MIB] * 4, first=8)
    sim = simulate(trace)
    assert sim.peak_reserved == 256 * MIB
    assert sim.peak_allocated == 128 * MIB
    assert sim.segments == 12


def test_expandable_segments_reuse_freed_range() -> None:
    # One large-pool segment grows by 20 MiB pages: 128 MiB of contiguous requests map
    # ceil(128 / 20) = 7 pages (140 MiB). Freed, it is one 140 MiB block: 4 x 32 MiB fit.
    trace = allocs([16 * MIB] * 8) + frees([16 * MIB] * 8) + allocs([32 * MIB] * 4, first=8)
    sim = simulate(trace, expandable=True)
    assert sim.peak_reserved == 140 * MIB
    assert sim.peak_allocated == 128 * MIB


def test_small_request_reserves_a_small_segment() -> None:
    sim = simulate(allocs([100]))
    assert (sim.peak_reserved, sim.peak_allocated) == (2 * MIB, 512)
    # a second small tensor splits the same segment (remainder >= 512 B is kept)
    sim = simulate(allocs([100, 513]))
    assert (sim.peak_reserved, sim.peak_allocated) == (2 * MIB, 512 + 1024)


def test_small_pool_fills_then_opens_another_segment() -> None:
    sim = simulate(allocs([MIB, MIB, 1]))  # two 1 MiB blocks fill a 2 MiB segment
    assert sim.peak_reserved == 4 * MIB and sim.segments == 2


def test_mid_size_request_gets_a_20_mib_segment_and_shares_it() -> None:
    assert simulate(allocs([5 * MIB])).peak_reserved == 20 * MIB
    sim = simulate(allocs([5 * MIB, 5 * MIB]))  # remainder 15 MiB > 1 MiB: split, reused
    assert (sim.peak_reserved, sim.peak_allocated, sim.segments) == (20 * MIB, 10 * MIB, 1)


def test_large_remainder_of_1_mib_or_less_is_not_split() -> None:
    # 5 MiB makes a 20 MiB segment; freed, a 19.25 MiB request takes the whole block (the
    # 0.75 MiB remainder is not > 1 MiB), so the allocator counts 20 MiB allocated.
    trace = allocs([5 * MIB]) + frees([5 * MIB]) + [(ALLOC, 1, 19 * MIB + MIB // 4)]
    sim = simulate(trace)
    assert (sim.peak_reserved, sim.peak_allocated) == (20 * MIB, 20 * MIB)
    # with expandable segments the remainder is split off (>= 512 B)
    assert simulate(trace, expandable=True).peak_allocated == 19 * MIB + MIB // 4


def test_freed_neighbours_merge_within_a_segment() -> None:
    # [a 5][b 5][c 5][free 5] in one 20 MiB segment; a and b freed merge into 10 MiB, which
    # holds a 9 MiB request: no new segment.
    trace = allocs([5 * MIB] * 3) + frees([5 * MIB] * 2) + [(ALLOC, 9, 9 * MIB)]
    sim = simulate(trace)
    assert (sim.peak_reserved, sim.segments) == (20 * MIB, 1)
    # b alone freed (a still live) leaves 5 MiB + the 5 MiB tail, not adjacent: a new segment
    trace = allocs([5 * MIB] * 3) + [(FREE, 1, 5 * MIB), (ALLOC, 9, 9 * MIB)]
    assert simulate(trace).peak_reserved == 40 * MIB


def test_best_fit_takes_the_smallest_cached_block() -> None:
    alloc = Allocator()
    a, b, c = (alloc.malloc(2 * MIB) for _ in range(3))  # [a][b][c][free 14] in one segment
    alloc.free(b)
    d = alloc.malloc(3 * MIB // 2)  # fits b's 2 MiB slot and the 14 MiB tail: b's is smaller
    assert d.addr == a.addr + 2 * MIB
    assert d.size == 2 * MIB  # remainder 0.5 MiB not split off (large pool)
    assert alloc.reserved == 20 * MIB and c.allocated


def test_oversize_rules_with_max_split_size() -> None:
    # max_split_size 10 MiB: a cached 40 MiB block (oversize) is not handed to a 12 MiB request
    # once it exceeds the request by 20 MiB or more; a 30 MiB request may take it.
    trace = allocs([40 * MIB]) + frees([40 * MIB]) + [(ALLOC, 1, 12 * MIB)]
    assert simulate(trace).peak_reserved == 40 * MIB
    assert simulate(trace, max_split_size=10 * MIB).peak_reserved == 52 * MIB
    trace[-1] = (ALLOC, 1, 30 * MIB)
    assert simulate(trace, max_split_size=10 * MIB).peak_reserved == 40 * MIB


def test_step_peak_counts_from_the_step_start() -> None:
    trace = allocs([30 * MIB]) + frees([30 * MIB]) + allocs([MIB * 4], first=1)
    sim = simulate(trace, start=2)
    assert (sim.peak_allocated, sim.step_peak_allocated, sim.peak_reserved) == (30 * MIB, 4 * MIB, 30 * MIB)


def test_context_bytes_by_card_or_size() -> None:
    assert context_bytes("h100") == context_bytes("H100") > 0
    assert context_bytes("900MiB") == 900 * MIB
    with pytest.raises(InputError):
        context_bytes("a100-ish")


@pytest.fixture(scope="module")
def predicted() -> tuple[dict, Trace]:
    traces: list[Trace] = []
    metrics, _ = predict(Case("full_ft", "tiny-bert", 3, 5), traces=traces)
    return metrics, traces[0]


def test_trace_holds_every_live_byte_of_the_step(predicted: tuple[dict, Trace]) -> None:
    # The tracker's peak (live tensors, 512-byte blocks) is the trace's own live peak over
    # the measured step: the trace misses no allocation or free the tracker counted.
    metrics, trace = predicted
    assert 0 < trace.step_start < len(trace.events)
    assert trace.live_peak(trace.step_start, unit=512) == metrics["predicted_cuda_peak_bytes"]
    assert {kind for kind, _, _ in trace.events} == {ALLOC, FREE}


def test_reserved_and_device_totals(predicted: tuple[dict, Trace]) -> None:
    metrics, trace = predicted
    reserved = metrics["predicted_cuda_reserved_bytes"]
    assert reserved >= metrics["predicted_cuda_peak_bytes"]
    assert reserved % (2 * MIB) == 0  # whole segments
    assert metrics["predicted_cuda_device_bytes"] == reserved + context_bytes("h100")
    assert reserved == simulate(trace.events).peak_reserved


def test_snapshot_is_read_by_torchs_own_tools(predicted: tuple[dict, Trace], tmp_path: Any) -> None:
    # torch's segment summary re-adds every block and raises on a segment or total mismatch;
    # its trace printer replays the device trace; trace_plot / segment_plot embed it.
    from torch.cuda import _memory_viz

    metrics, trace = predicted
    for expandable in (False, True):
        snap = snapshot(trace, expandable=expandable)
        reserved = metrics["predicted_cuda_reserved_bytes"] if not expandable else \
            simulate(trace.events, expandable=True).peak_reserved
        assert sum(seg["total_size"] for seg in snap["segments"]) == reserved
        summary = _memory_viz.segsum(snap)
        assert f"segments: {len(snap['segments'])}" in summary
        assert "entries" in _memory_viz.trace(snap)
        assert "<html>" in _memory_viz.trace_plot(snap) and "<html>" in _memory_viz.segment_plot(snap)
    actions = [e["action"] for e in snapshot(trace)["device_traces"][0]]
    assert actions.count("alloc") == sum(kind == ALLOC for kind, _, _ in trace.events)
    assert actions.count("segment_alloc") == simulate(trace.events).segments


def test_estimate_writes_a_snapshot(tmp_path: Any) -> None:
    import pickle

    from spbench.cli import main

    path = tmp_path / "step.pickle"
    assert main(["estimate", "--method", "lora", "--backbone", "tiny-bert", "--batch-size", "2",
                 "--seq-len", "8", "--snapshot", str(path)]) == 0
    snap = pickle.loads(path.read_bytes())
    assert snap["segments"] and snap["device_traces"][0][0]["action"] == "segment_alloc"
