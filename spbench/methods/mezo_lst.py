"""MeZO followed by LST: zeroth-order tuning of the backbone, then a ladder side network on it.

Reference: the seed team's MeZO + LST (slides "MeZO + LST"; github matoototo/k-LST,
``code/configs/mezo.yaml`` for stage 1, ``code/configs/old_experiments/mezo_lst.yaml`` for stage
2, the stage-1 checkpoint passed with ``--model_path``). Its parts: MeZO (Malladi et al. 2023,
arXiv:2305.17333; github princeton-nlp/MeZO) and LST (Sung et al. 2022, arXiv:2206.06522;
github ylsung/Ladder-Side-Tuning).

Stage 1: spbench's ``mezo`` (its docstring names its own deviations) trains the backbone itself
at inference-level memory, with the prompt objective where the backbone has a pretrained
masked-LM head, else (``stage1="auto"``; minilm-l6) on the classification objective after a
linear-probe warm start of the head, which learns where the prompt objective stays at chance;
the stage-1 backbone is saved with safetensors. The two stages train on disjoint parts of the
training rows (``spbench.train.run_accuracy`` cuts a seeded permutation by the stages' shares:
stage 2 never sees what stage 1 trained on; each stage's ``train_rows`` in the result). Stage 2: spbench's ``lst`` is built on the reloaded stage-1 backbone (its pruned
side-network init reads the stage-1 weights too) and trained by backprop through the side
network only, as a sequence classifier (default; the team's slides: "faster, uses less VRAM,
achieves better accuracy") or with the prompt objective (``stage2``).

Deviations from the team's runs: stage 2 is the LST paper's side network with its defaults
(gated ladders, r=8, AdamW lr 3e-3, no weight decay; see ``lst.py``), where the team's stage 2
is their own side network with the k=1 attention fusion (``klst --set k=1`` in spbench, with its
own side-network deviations) at r=16, lr 1.2e-4, weight decay 0.01, 10 epochs; their stage-2
classifier reads the sentence inside the prompt template ("[SENTENCE] It was [MASK]."), ours
the plain sentence. The training budget is split between the stages (``mezo_share``), where
the team ran each stage to its own budget (stage 1 up to 100k steps), and on the whole training
set each; here the stages train on disjoint parts of the rows (stage 2 on what stage 1 did not
see), so MeZO+LST never trains on more sentences than one method alone. On a backbone without a
pretrained masked-LM head stage 1 uses the classification objective from a linear-probe head
(the team's stage 1 is prompt-based on RoBERTa / DistilBERT, whose MLM heads are pretrained).

What a ``mezo_lst`` benchmark case measures: one step of **stage 2** (an LST step on a
backbone of the same shape; weights do not change memory or time), with the case's objective.
Stage 1 is the ``mezo`` case with ``--objective prompt`` (with ``mezo_lr``, ``mezo_eps`` and
``mezo_trainable`` as its ``--set``), and the overall peak of the method is the larger of the two. The accuracy path
(``spbench.train.run_accuracy``) trains both stages through :meth:`MeZOLST.stages`.

    spbench estimate --method mezo_lst --backbone roberta-large --batch-size 16
    spbench estimate --method mezo --backbone roberta-large --objective prompt --batch-size 16
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator, Literal

from spbench.domains import at_least, fraction, hparam, positive
from spbench.errors import InputError
from spbench.methods.base import METHODS, NO_HOOKS, Method, Stage, StepHooks, register_method

if TYPE_CHECKING:
    import torch
    from torch import nn

    from spbench.backbones import Backbone
    from spbench.objectives import Objective

CHECKPOINT = "stage1.safetensors"


def save_stage1(model: "nn.Module", folder: str) -> str:
    """Save the stage-1 masked-LM model (LoRA adapters merged first, if any) as safetensors;
    tied weights are stored once. Returns the file path."""
    from safetensors.torch import save_model

    if hasattr(model, "merge_and_unload"):  # MeZO+LoRA: fold the adapters into the weights
        model = model.merge_and_unload()
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, CHECKPOINT)
    save_model(model, path)
    return path


def load_stage1(name: str, path: str, head: str = "mlm", saved: str = "mlm") -> "Backbone":
    """Backbone ``name`` with ``head``, its weights from a stage-1 checkpoint of a ``saved`` model.

    The same head: the whole saved model. Another: the saved encoder under a fresh head (a
    BERT pooler, which the MLM model lacks, keeps its loaded weights).
    """
    from safetensors.torch import load_model

    from spbench import anatomy, backbones

    mlm = backbones.load(name, head=saved)
    load_model(mlm.model, path, strict=True)
    if head == saved:
        return mlm
    target = backbones.load(name, head=head)
    result = target.model.base_model.load_state_dict(mlm.model.base_model.state_dict(), strict=False)
    pooler = anatomy.of(target.model).pooler
    stray = [k for k in result.missing_keys if not (pooler and k.startswith(f"{pooler}."))]
    stray += list(result.unexpected_keys)
    if stray:
        raise InputError(f"stage-1 checkpoint does not fit {name} ({head}): {stray[:5]}")
    return target


@register_method("mezo_lst")
@dataclass(frozen=True)
class MeZOLST(Method):
    """Stage 1 MeZO (prompt, or probe-started classification; eps 1e-3, lr 1e-6, all parameters),
    stage 2 LST (r=8, AdamW 3e-3) on the rows stage 1 did not see.

    Fields: ``lr`` / ``weight_decay`` / ``r`` of stage 2 (LST); ``mezo_lr``, ``mezo_eps``,
    ``mezo_trainable`` of stage 1; ``mezo_share`` of the training budget (and of the training
    rows) spent in stage 1; ``stage1`` its objective ("auto": see :meth:`stage1_objective`);
    ``stage2`` objective of stage 2 in the accuracy path ("classification" or "prompt");
    ``checkpoint_dir`` for the stage-1 checkpoint (empty: a fresh temporary folder).
    """

    summary = "MeZO on the backbone, then LST on the stage-1 backbone and unseen rows; step = stage 2"
    lr: float = 3e-3  # stage 2 is ``lst``: the LST paper's rate, as its default
    weight_decay: float = 0.0
    r: int = hparam(8, at_least(1))
    mezo_lr: float = hparam(1e-6, positive())
    mezo_eps: float = hparam(1e-3, positive())
    mezo_trainable: str = "all"
    mezo_share: float = hparam(0.5, fraction(open_low=True))
    stage1: Literal["auto", "classification", "prompt"] = "auto"
    stage2: Literal["classification", "prompt"] = "classification"
    checkpoint_dir: str = ""

    def stage1_objective(self, backbone: "Backbone") -> str:
        """Stage 1's objective: ``stage1``, or for "auto" the prompt objective unless the backbone
        is pretrained without a masked-LM head (then the classification objective, probe-started)."""
        if self.stage1 != "auto":
            return self.stage1
        spec = backbone.spec
        return "classification" if spec.pretrained and not spec.has_pretrained_mlm_head else "prompt"

    def stage1_method(self) -> Method:
        return METHODS.get("mezo")(lr=self.mezo_lr, eps=self.mezo_eps, trainable=self.mezo_trainable)

    def stage2_method(self) -> Method:
        return METHODS.get("lst")(lr=self.lr, weight_decay=self.weight_decay, r=self.r)

    # The benchmark step is stage 2's.
    def prepare(self, backbone: "Backbone") -> "nn.Module":
        return self.stage2_method().prepare(backbone)

    def make_optimizer(self, model: "nn.Module", foreach: bool | None = None) -> "torch.optim.Optimizer":
        return self.stage2_method().make_optimizer(model, foreach=foreach)

    def train_step(self, model: "nn.Module", batch: dict[str, "torch.Tensor"],
                   optimizer: "torch.optim.Optimizer", objective: "Objective",
                   hooks: StepHooks = NO_HOOKS) -> "torch.Tensor":
        return self.stage2_method().train_step(model, batch, optimizer, objective, hooks)

    def deploy_state(self, model: "nn.Module") -> dict[str, "torch.Tensor"]:
        """Every parameter: stage 1 tuned the backbone itself (``mezo_trainable``), so the
        deployed model is a full copy of it plus stage 2's side network and head."""
        return dict(model.named_parameters())

    def stages(self, backbone: "Backbone", model: "nn.Module", objective: str) -> Iterator[Stage]:
        """The accuracy path's stages, yielded lazily: stage 1 on a fresh masked-LM copy of
        ``backbone``; once it is trained, its checkpoint is saved and stage 2 is built on the
        reloaded weights (``model``, stage 2 prepared on the untuned backbone, is not used)."""
        import tempfile

        from spbench import backbones, objectives

        if not 0 < self.mezo_share < 1:
            raise InputError(f"mezo_lst: mezo_share must be in (0, 1), not {self.mezo_share}")
        first = self.stage1_method()
        objective1 = self.stage1_objective(backbone)
        saved = objectives.get(objective1).head
        tuning = first.prepare(backbones.load(backbone.name, head=saved))
        yield Stage(first, tuning, objective1, share=self.mezo_share)
        folder = self.checkpoint_dir or tempfile.mkdtemp(prefix="spbench-mezo-lst-")
        path = save_stage1(tuning, folder)
        del tuning
        second = self.stage2_method()
        tuned = load_stage1(backbone.name, path, head=objectives.get(self.stage2).head, saved=saved)
        yield Stage(second, second.prepare(tuned), self.stage2, share=1 - self.mezo_share)
