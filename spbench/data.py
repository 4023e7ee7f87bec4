"""Batches: synthetic ones for memory / speed cases (SST-2 loading lives beside them).

Synthetic batches are padded like real ones: each row's length is drawn between half and all
of ``seq_len`` so the attention mask is never all ones (a model may drop an all-ones mask,
which would change what is measured).
"""

from __future__ import annotations

from typing import Any

import torch


def synthetic_batch(config: Any, batch_size: int, seq_len: int, seed: int = 0,
                    num_labels: int = 2) -> dict[str, torch.Tensor]:
    """Random token ids, a right-padded attention mask and labels; deterministic in ``seed``."""
    if batch_size < 1 or seq_len < 2:
        raise ValueError(f"impossible shape: batch size {batch_size}, sequence length {seq_len}")
    max_pos = getattr(config, "max_position_embeddings", None)
    # RoBERTa's positions start after padding_idx + 1.
    offset = 2 if getattr(config, "model_type", "") in ("roberta", "xlm-roberta") else 0
    if max_pos is not None and seq_len > max_pos - offset:
        raise ValueError(f"sequence length {seq_len} exceeds the backbone's {max_pos - offset} positions")
    gen = torch.Generator().manual_seed(seed)
    vocab = int(config.vocab_size)
    pad = getattr(config, "pad_token_id", 0) or 0
    ids = torch.randint(5, vocab, (batch_size, seq_len), generator=gen)
    lengths = torch.randint(max(1, seq_len // 2), seq_len + 1, (batch_size,), generator=gen)
    lengths[0] = seq_len - 1  # at least one padded position
    positions = torch.arange(seq_len).unsqueeze(0)
    mask = (positions < lengths.unsqueeze(1)).long()
    ids = ids.masked_fill(mask == 0, pad)
    labels = torch.randint(0, num_labels, (batch_size,), generator=gen)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}
