"""PyTorch's CUDA caching allocator, simulated: the reserved bytes an allocation trace needs.

A run goes out of memory at the allocator's *reserved* bytes (plus the CUDA context), not at
the live bytes the prediction tracks: freed blocks stay cached in their segments, and a
request that no cached block fits gets a new segment. The rules below are those of
``c10/cuda/CUDACachingAllocator.cpp`` (read for the facts, not copied):

* every request is rounded up to a multiple of 512 bytes (512 at least);
* requests of at most 1 MiB are served from the *small* pool, whose segments are 2 MiB; larger
  ones from the *large* pool: a new segment is 20 MiB for a request under 10 MiB, else the
  request rounded up to 2 MiB;
* a request takes the best-fitting cached block of its pool (smallest size, then lowest
  address); a block is split when the remainder is at least 512 bytes (small pool) or more
  than 1 MiB (large pool; with ``max_split_size`` set only requests below it split, and the
  oversize rules below apply);
* a freed block merges with free neighbours of its segment, never across segments;
* nothing is released during a step (no ``empty_cache``): reserved only grows.

``expandable_segments:True``: one segment per pool that grows by mapping pages (2 MiB for the
small pool, 20 MiB for the large, as ``find_expandable_block`` sizes them) at its end; blocks
split down to 512 bytes in both pools; best fit prefers a cached block over growing the end.
"""

from __future__ import annotations

import bisect
import itertools
from dataclasses import dataclass
from typing import Any, Iterable

from spbench.errors import InputError

MIB = 2**20
MIN_BLOCK = 512  # kMinBlockSize
SMALL_SIZE = 1 * MIB  # kSmallSize: largest request of the small pool
SMALL_BUFFER = 2 * MIB  # kSmallBuffer: a small-pool segment
LARGE_BUFFER = 20 * MIB  # kLargeBuffer: the segment of a request under MIN_LARGE_ALLOC
MIN_LARGE_ALLOC = 10 * MIB  # kMinLargeAlloc
ROUND_LARGE = 2 * MIB  # kRoundLarge

ALLOCATORS = ("default", "expandable")
# Device memory the allocator does not see (CUDA context, kernels, library handles), by card:
# what the device total adds to the reserved bytes. h100: the median of NVML used minus
# max_memory_reserved over the 56 cases of reports/gpu/h100/measured-cuda.json (829 MiB;
# 828-830 MiB in 49 of them, 810 in 6, 742 in the first case run).
CONTEXT_BYTES = {"h100": 829 * MIB}
DEFAULT_CARD = "h100"


def round_size(nbytes: int) -> int:
    """A request's block size: a multiple of 512 bytes, at least 512."""
    return max(MIN_BLOCK, -(-nbytes // MIN_BLOCK) * MIN_BLOCK)


def segment_size(size: int) -> int:
    """Bytes of the segment a new (rounded) request of ``size`` bytes gets."""
    if size <= SMALL_SIZE:
        return SMALL_BUFFER
    if size < MIN_LARGE_ALLOC:
        return LARGE_BUFFER
    return -(-size // ROUND_LARGE) * ROUND_LARGE


class Block:
    """A contiguous range of one segment, allocated or cached (free)."""

    __slots__ = ("addr", "size", "allocated", "prev", "next", "segment", "requested")

    def __init__(self, addr: int, size: int, segment: int) -> None:
        self.addr, self.size, self.segment = addr, size, segment
        self.allocated = False
        self.requested = 0  # bytes asked for (allocated blocks)
        self.prev: Block | None = None
        self.next: Block | None = None


class _Pool:
    """The cached blocks of one pool, ordered by (size, address): best fit is a bisection."""

    def __init__(self, small: bool, page: int) -> None:
        self.small = small
        self.page = page  # expandable segments: mapping granularity
        self.keys: list[tuple[int, int]] = []
        self.blocks: dict[tuple[int, int], Block] = {}
        self.tail: Block | None = None  # expandable: the last block of the pool's segment

    def insert(self, block: Block) -> None:
        key = (block.size, block.addr)
        bisect.insort(self.keys, key)
        self.blocks[key] = block

    def remove(self, block: Block) -> None:
        key = (block.size, block.addr)
        del self.keys[bisect.bisect_left(self.keys, key)]
        del self.blocks[key]


@dataclass
class Simulation:
    """What a replay gives: reserved bytes (peak = end: nothing is released), the allocator's
    allocated bytes (block sizes, so an unsplit remainder counts) at their peak over the whole
    trace and from ``start`` on, and the segments made (one per pool with expandable segments)."""

    peak_reserved: int
    peak_allocated: int
    step_peak_allocated: int
    segments: int


class Allocator:
    """The caching allocator's state, fed one request or free at a time."""

    def __init__(self, expandable: bool = False, max_split_size: int | None = None,
                 record: list[dict[str, Any]] | None = None) -> None:
        self.expandable = expandable
        self.record = record  # device trace events, as torch.cuda.memory._snapshot() lists them
        self.max_split = max_split_size
        self.small = _Pool(True, SMALL_BUFFER)
        self.large = _Pool(False, LARGE_BUFFER)
        self.reserved = self.allocated = self.segments = 0
        self._addr = 0  # next free device address (segments never overlap)
        self._seg_ids = itertools.count()
        self._small_segments: set[int] = set()
        self.heads: dict[int, Block] = {}  # each segment's first block, by segment id

    # --- requests -------------------------------------------------------------------------

    def malloc(self, nbytes: int) -> Block:
        size = round_size(nbytes)
        pool = self.small if size <= SMALL_SIZE else self.large
        block = self._best_fit(pool, size)
        if block is None:
            block = self._grow(pool, size) if self.expandable else self._new_segment(pool, size)
        else:
            pool.remove(block)
        if self._should_split(pool, block, size):
            rest = Block(block.addr + size, block.size - size, block.segment)
            rest.prev, rest.next = block, block.next
            if block.next is not None:
                block.next.prev = rest
            block.next = rest
            block.size = size
            if pool.tail is block:
                pool.tail = rest
            pool.insert(rest)
        block.allocated = True
        block.requested = nbytes
        self.allocated += block.size
        self._event("alloc", block.addr, block.size)
        return block

    def free(self, block: Block) -> None:
        pool = self.small if self.is_small(block.segment) else self.large
        self._event("free_requested", block.addr, block.size)
        self._event("free_completed", block.addr, block.size)
        block.allocated = False
        self.allocated -= block.size
        for other in (block.prev, block.next):
            if other is not None and not other.allocated:
                pool.remove(other)
                if other is block.prev:
                    block.addr, block.prev = other.addr, other.prev
                    if block.prev is not None:
                        block.prev.next = block
                    if block.prev is None:
                        self.heads[block.segment] = block
                else:
                    block.next = other.next
                    if block.next is not None:
                        block.next.prev = block
                    if pool.tail is other:
                        pool.tail = block
                block.size += other.size
        pool.insert(block)

    # --- rules ----------------------------------------------------------------------------

    def _event(self, action: str, addr: int, size: int) -> None:
        if self.record is not None:
            self.record.append({"action": action, "addr": addr, "size": size, "stream": 0, "frames": []})

    def is_small(self, segment: int) -> bool:
        return segment in self._small_segments

    def _best_fit(self, pool: _Pool, size: int) -> Block | None:
        i = bisect.bisect_left(pool.keys, (size, -1))
        if i == len(pool.keys):
            return None
        block = pool.blocks[pool.keys[i]]
        if self.expandable and block is pool.tail and i + 1 < len(pool.keys):
            # The end of an expandable segment counts as large as it can grow: any other
            # cached block that fits is a better fit.
            block = pool.blocks[pool.keys[i + 1]]
        if self.max_split is not None:
            if size < self.max_split <= block.size:  # no oversize block for a smaller request
                return None
            if size >= self.max_split and block.size >= size + LARGE_BUFFER:
                return None  # an oversize block only within 20 MiB of the request
        return block

    def _should_split(self, pool: _Pool, block: Block, size: int) -> bool:
        remaining = block.size - size
        if pool.small or self.expandable:
            return remaining >= MIN_BLOCK
        return (self.max_split is None or size < self.max_split) and remaining > SMALL_SIZE

    def _new_segment(self, pool: _Pool, size: int, mapped: bool = True) -> Block:
        """A new segment (``mapped=False``: an expandable one, nothing mapped yet)."""
        nbytes = segment_size(size) if mapped else 0
        block = Block(self._addr, nbytes, next(self._seg_ids))
        self._addr += nbytes if mapped else 2**48  # an expandable segment's address range
        self.reserved += nbytes
        self.segments += 1
        self.heads[block.segment] = block
        if pool.small:
            self._small_segments.add(block.segment)
        if mapped:
            self._event("segment_alloc", block.addr, nbytes)
        return block

    def _grow(self, pool: _Pool, size: int) -> Block:
        """Expandable segments: map pages at the end of the pool's one segment until its
        last free block holds ``size`` bytes; that block serves the request."""
        tail = pool.tail
        if tail is None:  # the pool's segment, nothing mapped yet
            pool.tail = tail = self._new_segment(pool, 0, mapped=False)
        elif tail.allocated:
            block = Block(tail.addr + tail.size, 0, tail.segment)
            block.prev, tail.next = tail, block
            pool.tail = tail = block
        else:
            pool.remove(tail)
        pages = -(-(size - tail.size) // pool.page)
        self._event("segment_map", tail.addr + tail.size, pages * pool.page)
        tail.size += pages * pool.page
        self.reserved += pages * pool.page
        return tail


def replay(trace: Iterable[tuple[str, int, int]], expandable: bool = False, start: int = 0,
           max_split_size: int | None = None,
           record: list[dict[str, Any]] | None = None) -> tuple[Simulation, Allocator]:
    """:func:`simulate`, also returning the allocator in its final state."""
    alloc = Allocator(expandable, max_split_size, record)
    blocks: dict[int, Block] = {}
    peak = step_peak = 0
    for i, (kind, sid, nbytes) in enumerate(trace):
        if i == start:
            step_peak = alloc.allocated
        if kind == "alloc":
            blocks[sid] = alloc.malloc(nbytes)
            peak = max(peak, alloc.allocated)
            if i >= start:
                step_peak = max(step_peak, alloc.allocated)
        elif sid in blocks:
            alloc.free(blocks.pop(sid))
    return Simulation(alloc.reserved, peak, step_peak, alloc.segments), alloc


def simulate(trace: Iterable[tuple[str, int, int]], expandable: bool = False, start: int = 0,
             max_split_size: int | None = None) -> Simulation:
    """Replay ``(alloc | free, id, bytes)`` events; ``start``: the event where the measured
    step begins (``step_peak_allocated`` counts from there)."""
    return replay(trace, expandable, start, max_split_size)[0]


def context_bytes(card: str) -> int:
    """The device memory outside the allocator of ``card``: a name of ``CONTEXT_BYTES`` or a
    byte count (``900MiB``)."""
    from spbench.units import parse_bytes

    if card.lower() in CONTEXT_BYTES:
        return CONTEXT_BYTES[card.lower()]
    try:
        return parse_bytes(card)
    except (InputError, ValueError) as exc:
        raise InputError(f"--card takes {' or '.join(CONTEXT_BYTES)} or a size (e.g. 900MiB), "
                         f"not {card!r}") from exc


def reserved_metrics(trace: object, allocator: str = "default", card: str = DEFAULT_CARD) -> dict[str, int]:
    """``predicted_cuda_reserved_bytes`` and ``predicted_cuda_device_bytes`` of a step's trace
    (a ``trace.Trace``) under ``allocator`` on ``card``."""
    if allocator not in ALLOCATORS:
        raise InputError(f"--allocator takes {' or '.join(ALLOCATORS)}, not {allocator!r}")
    sim = simulate(trace.events, allocator == "expandable", trace.step_start)  # type: ignore[attr-defined]
    return {"predicted_cuda_reserved_bytes": sim.peak_reserved,
            "predicted_cuda_device_bytes": sim.peak_reserved + context_bytes(card)}
