"""Prompt tuning: P trainable "soft token" embeddings prepended to the input, via peft.

Lester, Al-Rfou, Constant 2021, "The Power of Scale for Parameter-Efficient Prompt Tuning"
(EMNLP; arXiv:2104.08691); repository google-research/prompt-tuning; peft's
``PromptTuningConfig`` / ``PeftModelForSequenceClassification``. The encoder sees
[p_1 .. p_P, e(x_1) .. e(x_L)]: the sequence is P tokens longer, the attention mask gets P
ones in front (peft adds them), and the prompt tokens take positions 0 .. P-1. Trained: the
P x d prompt and the classification head. Backward goes through the whole frozen encoder to
reach the prompt: the activations kept are those of full FT on a sequence P tokens longer.

Paper defaults: prompt length 100 (ablated 1 .. 150; >= 20 is close for large models),
initialised from sampled vocabulary embeddings, Adafactor lr 0.3, weight decay 1e-5,
30,000 steps (T5 1.1 "LM adapted"). Here: 100 tokens, init "SAMPLE_VOCAB" (peft samples the
whole vocabulary; the paper the 5,000 most frequent tokens), weight decay 1e-5.
Deviations: AdamW at lr 3e-2 (the rate peft's prompt-tuning examples use with AdamW) instead
of Adafactor at 0.3 (AdamW moves every element by up to lr per step: 0.3 would be far larger
a step than Adafactor's); the classification head (and BERT's pooler) is trained, where the
paper scores T5's label words.
Classification objective only: the prompt objective scores the encoder's hidden states
directly, which would bypass peft's prompt.

    spbench estimate --method prompt_tuning --backbone roberta-large --batch-size 16 --seq-len 128
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from spbench.anatomy import head_module_names
from spbench.domains import at_least, hparam
from spbench.errors import InputError
from spbench.methods.base import Method, register_method

if TYPE_CHECKING:
    from torch import nn

    from spbench.backbones import Backbone


def _dims(config: Any) -> dict[str, int]:
    """peft's prompt-learning sizes (transformers maps DistilBERT's ``dim`` / ``n_heads`` /
    ``n_layers`` to these names)."""
    return {"token_dim": config.hidden_size, "num_attention_heads": config.num_attention_heads,
            "num_layers": config.num_hidden_layers}


def check_positions(model: "nn.Module", added: int) -> Any:
    """A forward pre-hook that refuses a batch whose length plus ``added`` prompt tokens needs
    more positions than the backbone has (fake tensors would not notice the overflow)."""
    from spbench.data import max_seq_len

    limit = max_seq_len(model.config)

    def hook(module: "nn.Module", args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        if limit is not None and ids is not None and ids.shape[1] + added > limit:
            raise InputError(f"sequence length {ids.shape[1]} + {added} prompt tokens exceeds the "
                             f"backbone's {limit} positions")

    return hook


class _TokenIds(dict):
    """peft's ``prompt_tokens`` (adapter -> ids 0 .. P-1), made afresh on each use: a plain
    dict entry would stay a real tensor when the model's parameters become fake tensors for
    the prediction, and a real tensor inside FakeTensorMode raises."""

    def __getitem__(self, key: str) -> Any:
        import torch

        return torch.arange(dict.__getitem__(self, key).numel())


@register_method("prompt_tuning")
@dataclass(frozen=True)
class PromptTuning(Method):
    """peft prompt tuning, 100 soft tokens from sampled vocabulary; head trained; AdamW at 3e-2."""

    summary = "prompt tuning via peft: 100 soft input tokens + head"
    lr: float = 3e-2
    weight_decay: float = 1e-5
    num_virtual_tokens: int = hparam(100, at_least(1))
    init: Literal["SAMPLE_VOCAB", "RANDOM"] = "SAMPLE_VOCAB"
    supports_grad_checkpointing = True

    def prepare(self, backbone: "Backbone") -> "nn.Module":
        import torch
        from peft import PromptTuningConfig, TaskType, get_peft_model

        if backbone.head != "classification":
            raise InputError("prompt_tuning works with the classification objective only (the prompt "
                             "objective reads the encoder's hidden states and would bypass the soft prompt)")
        model = backbone.model
        config = PromptTuningConfig(task_type=TaskType.SEQ_CLS, num_virtual_tokens=self.num_virtual_tokens,
                                    prompt_tuning_init=self.init, modules_to_save=head_module_names(model),
                                    **_dims(model.config))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # the sampled vocabulary ids: the same prompt every time
            peft_model = get_peft_model(model, config)
        peft_model.prompt_tokens = _TokenIds(peft_model.prompt_tokens)
        peft_model.register_forward_pre_hook(check_positions(model, self.num_virtual_tokens), with_kwargs=True)
        return peft_model
