"""How logits and the loss are made from a batch.

"classification": the model's sequence-classification head on the pooled first token;
loss = cross-entropy over the classes. "prompt" (MeZO style, ``objectives.prompt``) registers
itself when first asked for. An objective also makes the synthetic batches of memory / speed
cases, since what a batch holds depends on it. The contract and the registry live in
``objectives.base`` so that an objective module imports them without importing this package
back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from spbench.objectives.base import OBJECTIVES, Objective, model_inputs, output_logits

if TYPE_CHECKING:
    import torch
    from torch import nn


@dataclass
class Classification(Objective):
    name = "classification"
    head = "classification"

    def logits(self, model: "nn.Module", batch: dict[str, "torch.Tensor"]) -> "torch.Tensor":
        return output_logits(model(**model_inputs(batch)))


OBJECTIVES.register("classification")(Classification())


def get(name: str) -> Objective:
    if name not in OBJECTIVES:  # "prompt", or a name whose error should list it too
        import importlib

        importlib.import_module("spbench.objectives.prompt")  # registers itself
    return OBJECTIVES.get(name)


def names() -> list[str]:
    """Every objective, the lazily registered "prompt" included."""
    get("prompt")
    return OBJECTIVES.names()


__all__ = ["OBJECTIVES", "Classification", "Objective", "get", "model_inputs", "names", "output_logits"]
