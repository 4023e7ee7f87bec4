"""MeZO: memory-efficient zeroth-order fine-tuning (Malladi et al. 2023, arXiv:2305.17333).

Two forwards per step and no backward, so a step costs about the memory of inference:

    seed s fresh each step; z ~ N(0, I) regenerated from s whenever needed, never stored
    theta += eps z;  l+ = L(theta)          (eval mode, no grad)
    theta -= 2 eps z; l- = L(theta)
    theta += eps z                          (restored, up to float rounding)
    g = (l+ - l-) / (2 eps)                 projected gradient: E[g z] ~ grad L (SPSA)
    theta -= lr (g z + wd theta)

z is drawn in chunks of ``chunk_elements`` from one seeded ``torch.Generator`` in a fixed
order, so no temporary larger than a chunk exists (one ``randn`` of a whole embedding matrix
plus its scaled copy measured +187 MB on distilbert-base, enough to miss the target of
<= 1.05x the no-grad forward's peak). ``g`` stays a 0-dim tensor: the update is tensor ops
(no ``.item()``), so the step also runs on fake tensors for the prediction.

What is perturbed (``trainable``): "all" parameters (the paper's MeZO); "lora" (MeZO+LoRA:
peft adapters r=8, alpha=16 on query/value); "head" (the task / MLM head only); or any other
registered method's name, whose ``prepare`` then chooses the set (e.g. "side_lora").

Defaults are the paper's for RoBERTa-large: eps 1e-3, lr 1e-6 (grid 1e-7 .. 1e-5), constant
schedule, weight decay 0, batch 64, prompt objective.

    spbench estimate --method mezo --backbone roberta-large --objective prompt --batch-size 64

Reference: github.com/princeton-nlp/MeZO, ``medium_models`` (``mezo.sh``: SGD, constant lr
1e-6, eps 1e-3, weight decay 0, batch 64, 100k steps, ``--efficient_zero_order``; the
``src/trainer.py`` step: seed per step, model in eval mode for both forwards, parameters
restored after the second, update theta -= lr (g z + wd theta) on every parameter; template
"<S> It was [MASK] ." with great / terrible). The research team ran it on RoBERTa-large for
48k steps at batch 16 (github.com/matoototo/k-LST ``code/configs/mezo.yaml``). Deviations:
- z comes from a seeded ``torch.Generator`` chunk by chunk, not from ``torch.manual_seed``
  plus one ``torch.normal`` per whole tensor: the same distribution and the same regenerate-
  from-the-seed scheme, other draws, and no temporary larger than a chunk.
- Training data and length: the full SST-2 train split under spbench's ``--budget``, not
  the paper's k-shot sets (k = 16 / 512 per class) for 100k steps with dev checks every 10k.
- The logged loss is the mean of the two perturbed losses (the reference logs the first).
- ``trainable`` other than "all" (head, lora, a method name) is spbench's; the paper's
  MeZO+LoRA / prefix variants live in its ``large_models`` (OPT) code.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator

from spbench.errors import InputError
from spbench.methods.base import METHODS, NO_HOOKS, Method, StepHooks, head_module_names, register_method, set_trainable

if TYPE_CHECKING:
    import torch
    from torch import nn

    from spbench.backbones import Backbone
    from spbench.objectives import Objective


def _noise(params: list["torch.Tensor"], seed: int, chunk: int) -> Iterator[tuple["torch.Tensor", "torch.Tensor"]]:
    """(flat slice of a parameter, z for it) pairs, the same every time for the same seed."""
    import torch

    gen = None
    for p in params:
        flat = p.view(-1) if p.is_contiguous() else None
        if flat is None:  # rare: perturb the whole tensor (its z is one temporary of its size)
            gen = gen or torch.Generator(device=p.device).manual_seed(seed)
            yield p, torch.randn(p.shape, generator=gen, device=p.device, dtype=p.dtype)
            continue
        for start in range(0, flat.numel(), chunk):
            gen = gen or torch.Generator(device=p.device).manual_seed(seed)
            part = flat.narrow(0, start, min(chunk, flat.numel() - start))
            yield part, torch.randn(part.shape, generator=gen, device=p.device, dtype=p.dtype)


def perturb(params: list["torch.Tensor"], seed: int, scale: float, chunk: int) -> None:
    """theta += scale * z(seed), in place, chunk by chunk."""
    import torch

    with torch.no_grad():
        for part, z in _noise(params, seed, chunk):
            part.add_(z, alpha=scale)


def _optimizer_class() -> type:
    import torch

    class MeZOOptimizer(torch.optim.Optimizer):
        """Param groups (lr, weight_decay, eps) and a seed stream; holds no tensor state, so it
        costs no memory. ``step()`` is not used: MeZO's train_step updates from the seed."""

        def __init__(self, params: Any, lr: float, weight_decay: float, eps: float, seed: int,
                     chunk_elements: int) -> None:
            super().__init__(params, {"lr": lr, "weight_decay": weight_decay, "eps": eps})
            self.chunk_elements = chunk_elements
            self._seeds = random.Random(seed)  # Python RNG: a seed must be a plain int, also under fake mode

        def next_seed(self) -> int:
            return self._seeds.getrandbits(63)

        def step(self, closure: Any = None) -> None:
            raise RuntimeError("MeZOOptimizer has no gradient step: use MeZO.train_step")

    return MeZOOptimizer


def mezo_optimizer(params: Any, lr: float, weight_decay: float = 0.0, eps: float = 1e-3,
                   seed: int = 0, chunk_elements: int = 1 << 20) -> "torch.optim.Optimizer":
    return _optimizer_class()(params, lr, weight_decay, eps, seed, chunk_elements)


def projected_grad(model: "nn.Module", batch: dict[str, "torch.Tensor"], objective: "Objective",
                   params: list["torch.Tensor"], seed: int, eps: float, chunk: int,
                   hooks: StepHooks = NO_HOOKS) -> tuple["torch.Tensor", "torch.Tensor"]:
    """SPSA estimate along z(seed): returns (g, mean of the two losses), both 0-dim tensors.

    The parameters end where they started (up to float rounding of +eps, -2eps, +eps). The
    model runs in eval mode (no dropout: the two losses must differ only through z).
    """
    import torch

    was_training = model.training
    model.eval()
    try:
        with hooks.phase("perturb"):
            perturb(params, seed, eps, chunk)
        with hooks.phase("forward"), torch.no_grad():
            loss_plus = objective.loss(model, batch)
        with hooks.phase("perturb"):
            perturb(params, seed, -2 * eps, chunk)
        with hooks.phase("forward"), torch.no_grad():
            loss_minus = objective.loss(model, batch)
        with hooks.phase("perturb"):
            perturb(params, seed, eps, chunk)
    finally:
        model.train(was_training)
    return (loss_plus - loss_minus) / (2 * eps), (loss_plus + loss_minus) / 2


def zo_update(params: list["torch.Tensor"], seed: int, grad: "torch.Tensor", lr: float,
              weight_decay: float, chunk: int) -> None:
    """theta -= lr (g z(seed) + wd theta), with g a 0-dim tensor (never read as a number)."""
    import torch

    with torch.no_grad():
        if weight_decay and lr:
            for p in params:
                p.mul_(1 - lr * weight_decay)
        if not lr:
            return
        for part, z in _noise(params, seed, chunk):
            part.add_(z.mul_(grad), alpha=-lr)


@register_method("mezo")
@dataclass(frozen=True)
class MeZO(Method):
    """Zeroth-order SGD from two forwards (no backward); eps 1e-3, lr 1e-6, every parameter.

    Fields: ``eps`` perturbation scale; ``trainable`` "all" | "lora" | "head" | a method name;
    ``seed`` of the per-step seed stream; ``chunk_elements`` noise drawn per ``randn``.
    """

    summary = "MeZO: zeroth-order SGD from two forward passes, no backward (inference memory)"
    lr: float = 1e-6
    weight_decay: float = 0.0
    eps: float = field(default=1e-3, metadata={"search": "1e-4:1e-2:log"})  # sweep space
    trainable: str = "all"
    seed: int = 0
    chunk_elements: int = 1 << 20
    supports_half_weights = True

    def to_half_weights(self, model: "nn.Module", dtype: "torch.dtype") -> None:
        """Every weight in ``dtype``, as the paper loads its large models (``--load_float16`` /
        ``--load_bfloat16``): perturbation and update happen in that precision, so steps below
        its resolution (bfloat16: 2^-8 relative) round away, and +eps, -2eps, +eps may not
        restore a weight exactly. No float32 copy exists anywhere, unlike autocast's cache."""
        model.to(dtype)

    def prepare(self, backbone: "Backbone") -> "nn.Module":
        model = backbone.model
        if self.trainable == "all":
            set_trainable(model, lambda name: True)
            return model
        if self.trainable == "head":
            heads = tuple(f"{h}." for h in head_module_names(model))
            set_trainable(model, lambda name: name.startswith(heads))
            return model
        if self.trainable in ("mezo", "mezo_lst"):
            raise InputError(f"mezo: trainable={self.trainable!r} would recurse; use all, lora, head or a method")
        return METHODS.get(self.trainable)().prepare(backbone)  # "lora" -> MeZO+LoRA

    def make_optimizer(self, model: "nn.Module", foreach: bool | None = None) -> "torch.optim.Optimizer":
        from spbench.methods.base import trainable_parameters

        params = trainable_parameters(model)
        if not params:
            raise InputError(f"method {self.name!r} left no trainable parameter")
        if self.eps <= 0 or self.chunk_elements < 1:
            raise InputError(f"mezo: eps and chunk_elements must be positive ({self.eps}, {self.chunk_elements})")
        return mezo_optimizer(params, self.lr, self.weight_decay, self.eps, self.seed, self.chunk_elements)

    def train_step(self, model: "nn.Module", batch: dict[str, "torch.Tensor"],
                   optimizer: "torch.optim.Optimizer", objective: "Objective",
                   hooks: StepHooks = NO_HOOKS) -> "torch.Tensor":
        if not hasattr(optimizer, "next_seed"):
            raise TypeError("mezo.train_step needs the optimizer from MeZO.make_optimizer")
        if len(optimizer.param_groups) != 1:  # one z over every parameter, one group's hyperparameters
            raise ValueError("mezo: expects one parameter group")
        group = optimizer.param_groups[0]
        seed, chunk = optimizer.next_seed(), optimizer.chunk_elements
        grad, loss = projected_grad(model, batch, objective, group["params"], seed, group["eps"], chunk, hooks)
        with hooks.phase("optimizer"):
            zo_update(group["params"], seed, grad, group["lr"], group["weight_decay"], chunk)
        return loss.detach()

    @property
    def uses_backward(self) -> bool:
        return False
