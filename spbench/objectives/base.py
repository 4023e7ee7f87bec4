"""The Objective contract and its registry (objectives register here by being imported)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from spbench.registry import Registry

if TYPE_CHECKING:
    import torch
    from torch import nn

    from spbench.backbones import Backbone


class Objective:
    """Base: ``logits(model, batch)`` and ``loss(model, batch)``."""

    name = ""
    head = "classification"  # which head the backbone is loaded with (backbones.HEADS; spbench.anatomy)

    def logits(self, model: "nn.Module", batch: dict[str, "torch.Tensor"]) -> "torch.Tensor":
        raise NotImplementedError

    def loss(self, model: "nn.Module", batch: dict[str, "torch.Tensor"]) -> "torch.Tensor":
        import torch.nn.functional as F

        return F.cross_entropy(self.logits(model, batch).float(), batch["labels"])

    def synthetic_batch(self, backbone: "Backbone", batch_size: int, seq_len: int,
                        seed: int = 0) -> dict[str, "torch.Tensor"]:
        from spbench.data import synthetic_batch

        return synthetic_batch(backbone.config, batch_size, seq_len, seed=seed)

    def encode(self, tokenizer: Any, sentences: Sequence[str], labels: Sequence[int], max_len: int) -> Any:
        """Tokenised rows for this objective (a list of row dicts, or a ``BatchEncoding`` of
        columns): plain sentences by default; an objective with a template overrides it."""
        enc = tokenizer(list(sentences), truncation=True, max_length=max_len)
        return [{"input_ids": list(ids)} for ids in enc["input_ids"]]

    def notes(self, backbone: "Backbone") -> dict[str, Any]:
        """Flags a result must carry (e.g. an untrained head)."""
        return {}


OBJECTIVES: Registry[Objective] = Registry("objective")


def model_inputs(batch: dict[str, "torch.Tensor"]) -> dict[str, "torch.Tensor"]:
    return {k: batch[k] for k in ("input_ids", "attention_mask") if k in batch}


def output_logits(out: Any) -> "torch.Tensor":
    return out.logits if hasattr(out, "logits") else out
