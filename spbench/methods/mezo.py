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

A backbone without a pretrained masked-LM head (minilm-l6) gives the prompt objective nothing to
read at the mask: MeZO then stays at chance (50.46 / 49.89 / 50.34% in three seeds of
``mezo_lst``'s stage 1), and every prompt-objective result on it carries ``mlm_head_untrained``.
What learns offline there is MeZO on the **classification** objective after a linear-probe warm
start of the head (``warm_start="probe"``, the default under that objective: "auto"): a
logistic regression (scikit-learn) on the frozen features that feed the head's last Linear, from
``probe_examples`` training rows, sets that Linear before the first MeZO step (LP-MeZO: the head
starts where a linear probe ends, and zeroth-order steps move the whole model from there). The
run records the probe's validation and dev accuracy before the first step (``warm_start``), so
the gain MeZO itself brings is measured, not assumed. The prompt objective stays the default
where the backbone has a pretrained MLM head.

    spbench estimate --method mezo --backbone roberta-large --objective prompt --batch-size 64

Reference: github.com/princeton-nlp/MeZO, ``medium_models`` (``mezo.sh``: SGD, constant lr
1e-6, eps 1e-3, weight decay 0, batch 64, 100k steps, ``--efficient_zero_order``; the
``src/trainer.py`` step: seed per step, model in eval mode for both forwards, parameters
restored after the second, update theta -= lr (g z + wd theta) on every parameter; template
"*cls**sent_0*_It_was*mask*.*sep+*", i.e. "<S> It was <mask>." with "." its own token, and
great / terrible). The research team's config (github.com/matoototo/k-LST ``code/configs/mezo.yaml``)
runs RoBERTa-large at batch 16 for up to 100,000 steps; their MeZO loss is the masked-LM loss over
the whole vocabulary at the template's mask (the cross-entropy over the label words here, as
MeZO's own code does), which matters when reading their figures next to ours. Deviations:
- z comes from a seeded ``torch.Generator`` chunk by chunk, not from ``torch.manual_seed``
  plus one ``torch.normal`` per whole tensor: the same distribution and the same regenerate-
  from-the-seed scheme, other draws, and no temporary larger than a chunk.
- Training data and length: the full SST-2 train split under spbench's ``--budget``, not
  the paper's k-shot sets (k = 16 / 512 per class) for 100k steps with dev checks every 10k.
- The logged loss is the mean of the two perturbed losses (the reference logs the first).
- ``trainable`` other than "all" (head, lora, a method name) is spbench's; the paper's
  MeZO+LoRA / prefix variants live in its ``large_models`` (OPT) code.
- The linear-probe warm start under the classification objective is spbench's (MeZO's
  classification runs start from a random head); it is off with ``--set warm_start=none``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Literal

from spbench.anatomy import head_module_names
from spbench.domains import at_least, hparam, positive
from spbench.errors import InputError
from spbench.methods.base import METHODS, NO_HOOKS, Method, StepHooks, register_method, set_trainable

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
    eps: float = hparam(1e-3, positive(), search="1e-4:1e-2:log")
    trainable: str = "all"
    seed: int = 0
    chunk_elements: int = hparam(1 << 20, at_least(1))
    warm_start_head: Literal["auto", "probe", "none"] = "auto"  # auto: probe under the classification objective
    probe_examples: int = hparam(8192, at_least(1))
    supports_half_weights = True

    def warm_start(self, model: "nn.Module", objective: "Objective", train_rows: Any, *, pad_id: int = 0,
                   device: str = "cpu", seed: int = 0) -> dict[str, Any]:
        """The linear probe (see the module docstring): sets the head's last Linear from a logistic
        regression on frozen features of ``probe_examples`` training rows. Returns what it did."""
        if self.warm_start_head not in ("auto", "probe", "none"):
            raise InputError(f"mezo: warm_start_head must be auto, probe or none, not {self.warm_start_head!r}")
        if self.warm_start_head == "none" or objective.head != "classification":
            if self.warm_start_head == "probe":
                raise InputError("mezo: warm_start_head=probe needs the classification objective")
            return {}
        return linear_probe(model, objective, train_rows, self.probe_examples, pad_id=pad_id, device=device,
                            seed=seed)

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

    def deployable(self, model: "nn.Module") -> "nn.Module":
        """As ``trainable`` deploys: a method's (``trainable=lora``: merged), else the model."""
        if self.trainable in ("all", "head"):
            return model
        return METHODS.get(self.trainable)().deployable(model)

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


def classifier_linear(model: "nn.Module") -> "nn.Linear":
    """The head's last Linear: the one that produces the class logits."""
    from torch import nn

    n = int(getattr(model.config, "num_labels", 2))
    found = [m for name in head_module_names(model) for m in model.get_submodule(name).modules()
             if isinstance(m, nn.Linear) and m.out_features == n]
    if not found:
        raise InputError(f"{type(model).__name__}: no head Linear with {n} outputs to warm-start")
    return found[-1]


def linear_probe(model: "nn.Module", objective: "Objective", rows: Any, examples: int, *, pad_id: int = 0,
                 device: str = "cpu", seed: int = 0, batch_size: int = 64) -> dict[str, Any]:
    """Fit the classifier's last Linear by logistic regression on the features it reads.

    The features are its inputs in eval mode, without gradient, for ``examples`` rows drawn with
    ``seed``; scikit-learn's ``LogisticRegression`` (L2, C=1, lbfgs) fits them. Two classes map
    to logits (-z/2, z/2) of its decision z, the same probabilities; more classes take its
    multinomial weights.
    """
    import numpy as np
    import torch
    from sklearn.linear_model import LogisticRegression

    from spbench.data import collate

    linear = classifier_linear(model)
    picked = random.Random(seed).sample(range(len(rows)), min(examples, len(rows)))
    captured: list[torch.Tensor] = []
    hook = linear.register_forward_pre_hook(lambda _m, args: captured.append(args[0].detach().float().cpu()))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(picked), batch_size):
                batch = collate([rows[i] for i in picked[start:start + batch_size]], pad_id)
                objective.logits(model, {k: v.to(device) for k, v in batch.items()})
    finally:
        hook.remove()
        model.train(was_training)
    features = torch.cat(captured).numpy()
    labels = np.asarray([int(rows[i]["labels"]) for i in picked])
    if len(set(labels.tolist())) < 2:
        raise InputError("mezo: the linear probe needs training rows of both classes")
    probe = LogisticRegression(max_iter=2000, random_state=seed).fit(features, labels)
    coef = torch.as_tensor(probe.coef_, dtype=torch.float32)
    bias = torch.as_tensor(probe.intercept_, dtype=torch.float32)
    if coef.shape[0] == 1:  # binary: one decision z -> logits (-z/2, z/2)
        coef, bias = torch.cat([-coef / 2, coef / 2]), torch.cat([-bias / 2, bias / 2])
    with torch.no_grad():
        linear.weight.copy_(coef.to(linear.weight.dtype))
        if linear.bias is not None:
            linear.bias.copy_(bias.to(linear.bias.dtype))
    return {"head": "linear probe", "examples": len(picked), "train_accuracy": float(probe.score(features, labels))}
