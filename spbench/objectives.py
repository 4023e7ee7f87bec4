"""How logits and the loss are made from a batch.

"classification": the model's sequence-classification head on the pooled first token;
loss = cross-entropy over the classes. (The "prompt" objective, MeZO style, registers here
too.) An objective also makes the synthetic batches of memory / speed cases, since what a
batch holds depends on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from spbench.registry import Registry

if TYPE_CHECKING:
    import torch
    from torch import nn

    from spbench.backbones import Backbone


class Objective:
    """Base: ``logits(model, batch)`` and ``loss(model, batch)``."""

    name = ""
    head = "classification"  # which backbone head it needs (see backbones.HEADS)

    def logits(self, model: "nn.Module", batch: dict[str, "torch.Tensor"]) -> "torch.Tensor":
        raise NotImplementedError

    def loss(self, model: "nn.Module", batch: dict[str, "torch.Tensor"]) -> "torch.Tensor":
        import torch.nn.functional as F

        return F.cross_entropy(self.logits(model, batch).float(), batch["labels"])

    def synthetic_batch(self, backbone: "Backbone", batch_size: int, seq_len: int,
                        seed: int = 0) -> dict[str, "torch.Tensor"]:
        from spbench.data import synthetic_batch

        return synthetic_batch(backbone.config, batch_size, seq_len, seed=seed)

    def notes(self, backbone: "Backbone") -> dict[str, Any]:
        """Flags a result must carry (e.g. an untrained head)."""
        return {}


OBJECTIVES: Registry[Objective] = Registry("objective")


def model_inputs(batch: dict[str, "torch.Tensor"]) -> dict[str, "torch.Tensor"]:
    return {k: batch[k] for k in ("input_ids", "attention_mask") if k in batch}


def output_logits(out: Any) -> "torch.Tensor":
    return out.logits if hasattr(out, "logits") else out


@dataclass
class Classification(Objective):
    name = "classification"
    head = "classification"

    def logits(self, model: "nn.Module", batch: dict[str, "torch.Tensor"]) -> "torch.Tensor":
        return output_logits(model(**model_inputs(batch)))


OBJECTIVES.register("classification")(Classification())


def get(name: str) -> Objective:
    if name == "prompt" and "prompt" not in OBJECTIVES:
        import importlib

        importlib.import_module("spbench.prompt")  # registers itself when present
    return OBJECTIVES.get(name)


def names() -> list[str]:
    """Every objective, the lazily registered "prompt" included."""
    get("prompt")
    return OBJECTIVES.names()
