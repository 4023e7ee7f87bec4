"""FLOPs per phase of a step, counted by torch's ``FlopCounterMode``.

It counts matmul / conv / SDPA kernels only (elementwise ops are not counted), which is where
nearly all of a transformer's FLOPs are. Counted on the CUDA-emulated fake step, so attention
is the memory-efficient kernel and its backward is counted too.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

from torch.utils.flop_counter import FlopCounterMode

from spbench.methods.base import StepHooks


class FlopHooks(StepHooks):
    """StepHooks that count FLOPs of the forward and backward phases separately."""

    def __init__(self) -> None:
        self.flops: dict[str, int] = {"forward": 0, "backward": 0}

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        if name not in self.flops:
            yield
            return
        counter = FlopCounterMode(display=False)
        with counter:
            yield
        self.flops[name] += int(counter.get_total_flops())
