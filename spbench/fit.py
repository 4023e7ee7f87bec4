"""What fits a memory budget: the largest batch at a given length, or the longest sequence at
a given batch size, by the predicted CUDA peak of one training step.

    spbench estimate --method lst --backbone roberta-large --seq-len 128 --fit 8GiB
    spbench estimate --method lora --backbone roberta-large --batch-size 16 --fit 24GiB --fit-over seq-len

The prediction is deterministic, so the search is exact: the size doubles from the smallest
(batch 1, sequence 2) until the predicted peak exceeds the budget, then bisection finds the
boundary. There is no cap on the size: what else bounds it is said, never hidden (the
backbone's position embeddings bound the sequence length; a size the prediction cannot run at
bounds either). The answer comes with the predicted peak at the answer and at the next step up,
both probed, so "the next size does not fit" is a figure, not an assumption. The search relies
on the peak growing with the size, which it does: every tensor of a step grows with batch and
length.

Each probe predicts a step on fake tensors, and its batch is built on the meta device, so a
probe at batch 10^7 allocates no more real memory than one at batch 1.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from spbench.case import Case
from spbench.errors import InputError

OVER = {"batch-size": "batch_size", "seq-len": "seq_len"}  # --fit-over value -> Case field
# --fit-on value -> the predicted figure held to the budget. A run fails at the device total
# (the allocator's reserved bytes plus the CUDA context), so that is the default.
FIT_ON = {"allocated": "predicted_cuda_peak_bytes", "reserved": "predicted_cuda_reserved_bytes",
          "device": "predicted_cuda_device_bytes"}
_FIT_ON_WORDS = {"allocated": "CUDA allocated peak", "reserved": "CUDA reserved peak",
                 "device": "device total (reserved + {card} context)"}
_SMALLEST = {"batch_size": 1, "seq_len": 2}
_WORDS = {"batch_size": "batch", "seq_len": "seq"}


@dataclass(frozen=True)
class Probe:
    """One size tried: its predicted peak, or why the prediction cannot run there."""

    size: int
    peak: int | None = None
    error: str = ""

    def fits(self, budget: int) -> bool:
        return self.peak is not None and self.peak <= budget

    def line(self, over: str) -> str:
        """A progress line: ``  batch     1,024:     1.18 GiB``."""
        from spbench.units import format_bytes

        what = format_bytes(self.peak) if self.peak is not None else f"cannot predict: {self.error}"
        return f"  {_WORDS[over]} {self.size:>9,}: {what:>12}"


@dataclass
class Fit:
    """The answer of one search (``size`` None: not even the smallest size fits)."""

    case: Case
    over: str  # "batch_size" | "seq_len"
    budget: int
    size: int | None
    peak: int | None
    next: Probe  # the next step up from the answer (from nothing: the smallest size)
    bound: str  # "memory", or what else stops the answer from growing
    probes: list[Probe] = field(default_factory=list)
    on: str = "device"  # which figure of FIT_ON is held to the budget
    card: str = "h100"

    def answer_case(self) -> Case | None:
        return None if self.size is None else dataclasses.replace(self.case, **{self.over: self.size})

    def to_json(self) -> dict[str, Any]:
        from spbench.result import CASE_FIELDS, SCHEMA_VERSION

        return {
            "fit_bytes": self.budget, "fit_over": self.over, "fits": self.size is not None,
            **{k: getattr(self.case, k) for k in CASE_FIELDS}, "overrides": dict(self.case.overrides),
            "fit_on": self.on, self.over: self.size, FIT_ON[self.on]: self.peak,
            "next": {self.over: self.next.size, FIT_ON[self.on]: self.next.peak,
                     **({"error": self.next.error} if self.next.error else {})},
            "bounded_by": self.bound, "probes": len(self.probes), "schema_version": SCHEMA_VERSION,
        }

    def lines(self) -> list[str]:
        """The answer for a person: what fits, the peak there and one step up, what bounds it."""
        from spbench.units import format_bytes

        what = "largest batch size" if self.over == "batch_size" else "longest sequence"
        at = f"seq {self.case.seq_len}" if self.over == "batch_size" else f"batch {self.case.batch_size}"
        word = _WORDS[self.over]
        extra = "".join(f", {part}" for part in self.case.settings(short=False))  # ", bfloat16, gc, r=16"
        figure = _FIT_ON_WORDS[self.on].format(card=self.card)
        lead = f"{self.case.method} on {self.case.backbone}{extra}, {at}: {what} whose predicted " \
               f"{figure} fits {format_bytes(self.budget)}: "
        out = [lead + (f"{self.size:,}" if self.size is not None else
                       f"none (even {word} {self.next.size:,} does not fit)")]
        if self.size is not None:
            out.append(f"  {word} {self.size:>9,}: {_bytes(self.peak or 0)} predicted  (fits)")
        nxt = (f"{_bytes(self.next.peak)} predicted  (does not fit)" if self.next.peak is not None
               else f"cannot be predicted: {self.next.error}")
        out.append(f"  {word} {self.next.size:>9,}: {nxt}")
        if self.bound != "memory":
            out.append(f"  bounded by {self.bound}, not by memory")
        return out


def _bytes(n: int) -> str:
    from spbench.units import format_bytes

    return f"{format_bytes(n):>12} ({n:,} B)"  # near the budget, the exact bytes tell them apart


def size_limit(case: Case, config: Any, over: str) -> tuple[int | None, str]:
    """The largest size the backbone allows, and its reason (None: no limit but memory)."""
    from spbench.data import max_seq_len

    if over == "seq_len":
        limit = max_seq_len(config)
        if limit is not None:
            return limit, f"the backbone's {limit:,} positions ({case.backbone})"
    return None, ""


def predict_peak(case: Case, on: str = "device", allocator: str = "default",
                 card: str = "h100") -> tuple[int, Any]:
    """Predicted figure ``on`` (a key of FIT_ON) of ``case``'s step, with its batch on the meta
    device (no real batch, whatever its size); also the backbone's config. The same figure as
    ``spbench estimate`` gives for the case."""
    import torch

    from spbench.case import build
    from spbench.measure.predict import predict_built

    small = dataclasses.replace(case, batch_size=1, seq_len=2)
    built = build(small, meta=True)  # the model does not depend on the shape; no weights drawn
    with torch.device("meta"):
        batch = built.objective.synthetic_batch(built.backbone, case.batch_size, case.seq_len)
    built = dataclasses.replace(built, case=case, batch=batch)
    return int(predict_built(built, allocator=allocator, card=card)[FIT_ON[on]]), built.backbone.config


@contextlib.contextmanager
def _quiet_fake_tensors() -> Iterator[None]:
    """Fake tensors log a traceback before raising on a size too large to describe (int64
    overflow); the probe reports the error itself."""
    logger = logging.getLogger("torch._subclasses.fake_tensor")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _interpolated(low: int, high: int, probes: dict[int, Probe], budget: int) -> int | None:
    """Where the line through the peaks at ``low`` and ``high`` crosses the budget, strictly
    between them (None when ``high`` has no peak to draw the line through)."""
    a, b = probes[low].peak, probes.get(high, Probe(high)).peak
    if a is None or b is None or b <= a:
        return None
    return min(high - 1, max(low + 1, low + (budget - a) * (high - low) // (b - a)))


def fit(case: Case, budget: int, over: str = "batch_size",
        on_probe: Callable[[Probe], None] | None = None, on: str = "device",
        allocator: str = "default", card: str = "h100") -> Fit:
    """The largest ``over`` (``"batch_size"`` or ``"seq_len"``) of ``case`` whose predicted
    figure ``on`` (``allocated``, ``reserved`` or ``device``: see FIT_ON) fits ``budget``
    bytes; the other dimension stays ``case``'s. Reserved bytes grow by whole segments, so
    with ``on`` reserved or device the peak is monotone in steps, not strictly.

    Args:
        on_probe: called with each probe after its prediction (progress).
        allocator, card: as ``predict_built`` takes them.
    """
    if over not in _SMALLEST:
        raise InputError(f"cannot fit over {over!r}; choose from {', '.join(OVER)}")
    if on not in FIT_ON:
        raise InputError(f"--fit-on takes {' or '.join(FIT_ON)}, not {on!r}")
    opts = {"on": on, "allocator": allocator, "card": card}
    case.validate()
    probes: dict[int, Probe] = {}
    errors: dict[int, Exception] = {}
    limit: list[Any] = []  # (size, reason) once the backbone's config is known

    def probe(size: int) -> Probe:
        if size not in probes:
            try:
                with _quiet_fake_tensors():
                    peak, config = predict_peak(dataclasses.replace(case, **{over: size}), **opts)
                probes[size] = Probe(size, peak)
                if not limit:
                    limit.append(size_limit(case, config, over))
            except (ValueError, RuntimeError, OverflowError) as exc:  # a size the step cannot run at
                probes[size] = Probe(size, error=f"{type(exc).__name__}: {exc}".splitlines()[0][:300])
                errors[size] = exc
            if on_probe is not None:
                on_probe(probes[size])
        return probes[size]

    smallest = probe(_SMALLEST[over])
    if smallest.error:  # not a size problem: the case itself cannot be predicted
        raise errors[smallest.size]
    if not smallest.fits(budget):
        return Fit(case, over, budget, None, None, smallest, "memory", list(probes.values()), on, card)
    cap, cap_reason = limit[0]
    low, high = smallest.size, smallest.size * 2
    while True:  # doubling: low fits; find a high that does not (or the backbone's limit)
        if cap is not None and high > cap:
            low, high = (cap, cap + 1) if probe(cap).fits(budget) else (low, cap)
            break
        if not probe(high).fits(budget):
            break
        low, high = high, high * 2
    interpolate = True
    while high - low > 1:  # low fits; high does not (or is past the limit, or cannot be predicted)
        before = high - low
        guess = _interpolated(low, high, probes, budget) if interpolate else None
        if guess is None:
            candidates = [(low + high) // 2]
        else:  # the peak is near-linear in the size: the boundary is most likely beside the guess
            candidates = [guess, guess + 1] if probe(guess).fits(budget) else [guess, guess - 1]
        for mid in candidates:
            if low < mid < high:
                low, high = (mid, high) if probe(mid).fits(budget) else (low, mid)
        interpolate = not interpolate or high - low <= before // 2  # bisect after a poor guess
    if cap is not None and low == cap:
        nxt, bound = Probe(cap + 1, error=f"past {cap_reason}"), cap_reason
    else:
        nxt = probe(low + 1)
        bound = "memory" if nxt.peak is not None else f"a step the prediction cannot run ({nxt.error})"
    return Fit(case, over, budget, low, probes[low].peak, nxt, bound, list(probes.values()), on, card)
