"""MeZO: parameters restored after +-eps, the SPSA estimate against autograd, loss going down
on a learnable toy task, trainable subsets, and the predicted memory target on a tiny case."""

from __future__ import annotations

import pytest
import torch

from spbench import backbones, objectives
from spbench.methods import get
from spbench.methods.mezo import MeZO, mezo_optimizer, perturb, projected_grad
from spbench.objectives import Objective


class Quadratic(torch.nn.Module):
    """L(theta) = 0.5 theta^T A theta + b^T theta, A symmetric positive definite."""

    def __init__(self, d: int = 6) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        m = torch.randn(d, d, generator=gen, dtype=torch.float64)
        self.register_buffer("a", m @ m.T / d + torch.eye(d, dtype=torch.float64))
        self.register_buffer("b", torch.randn(d, generator=gen, dtype=torch.float64))
        self.theta = torch.nn.Parameter(torch.randn(d, generator=gen, dtype=torch.float64))

    def forward(self) -> torch.Tensor:
        return 0.5 * self.theta @ self.a @ self.theta + self.b @ self.theta


class ModelLoss(Objective):
    name = "model-loss"

    def loss(self, model, batch):
        return model()


def test_params_restored_when_update_skipped() -> None:
    bb = backbones.load("tiny-bert", head="mlm")
    obj = objectives.get("prompt")
    method = MeZO(eps=1e-3, chunk_elements=1000)  # several chunks per embedding matrix
    model = method.prepare(bb)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    # lr 0 (no method is built with it: its domain is > 0) through the optimizer itself
    opt = mezo_optimizer([p for p in model.parameters() if p.requires_grad], lr=0.0, chunk_elements=1000)
    batch = obj.synthetic_batch(bb, 4, 16)
    for _ in range(3):
        method.train_step(model, batch, opt, obj)
    moved = 0.0
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), before[name], rtol=0, atol=1e-6)
        moved = max(moved, (p.detach() - before[name]).abs().max().item())
    assert moved < 1e-6
    assert model.training  # eval only inside the step


def test_perturbation_is_reproducible_and_chunked() -> None:
    p = torch.zeros(2500)
    perturb([p], seed=7, scale=1.0, chunk=1000)
    q = torch.zeros(2500)
    perturb([q], seed=7, scale=1.0, chunk=1000)
    assert torch.equal(p, q)
    assert 0.9 < p.std().item() < 1.1  # z ~ N(0, 1)
    r = torch.zeros(2500)
    perturb([r], seed=8, scale=1.0, chunk=1000)
    assert not torch.equal(p, r)


def test_projected_gradient_matches_directional_derivative() -> None:
    """Per draw, g = z . grad L exactly for a quadratic (central difference); averaged over
    draws, g z estimates grad L (E[z z^T] = I), within 4 standard errors."""
    model = Quadratic()
    grad = torch.autograd.grad(model(), model.theta)[0]
    params = [model.theta]
    n = 4000
    est = torch.zeros_like(grad)
    samples = []
    for seed in range(n):
        g, _ = projected_grad(model, {}, ModelLoss(), params, seed, eps=1e-3, chunk=1 << 20)
        z = torch.zeros_like(grad)
        perturb([z], seed, 1.0, 1 << 20)
        torch.testing.assert_close(g, z @ grad, rtol=1e-6, atol=1e-8)
        samples.append(g * z)
        est += g * z / n
    stderr = torch.stack(samples).std(0) / n ** 0.5
    assert ((est - grad).abs() < 4 * stderr).all(), (est, grad, stderr)
    assert (est - grad).norm() < 0.1 * grad.norm()


def test_update_is_sgd_along_z() -> None:
    model = Quadratic()
    method = MeZO(lr=0.1, eps=1e-3, weight_decay=0.5, seed=3)
    opt = method.make_optimizer(model)
    theta0 = model.theta.detach().clone()
    grad = torch.autograd.grad(model(), model.theta)[0]
    seed = mezo_optimizer([torch.nn.Parameter(torch.zeros(1))], lr=0.0, seed=3).next_seed()
    method.train_step(model, {}, opt, ModelLoss())
    z = torch.zeros_like(theta0)
    perturb([z], seed, 1.0, 1 << 20)
    want = theta0 * (1 - 0.1 * 0.5) - 0.1 * (z @ grad) * z
    torch.testing.assert_close(model.theta.detach(), want, rtol=1e-6, atol=1e-9)


def test_mezo_decreases_loss_on_learnable_task() -> None:
    """A small linear classifier on separable data: 150 MeZO steps cut the loss clearly."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(128, 8, generator=gen)
    y = (x @ torch.randn(8, generator=gen) > 0).long()

    class Linear(Objective):
        def logits(self, model, batch):
            return model(batch["x"])

    torch.manual_seed(0)
    model = torch.nn.Linear(8, 2)
    method = MeZO(lr=0.1, eps=1e-3)
    opt = method.make_optimizer(model)
    batch = {"x": x, "labels": y}
    obj = Linear()
    start = obj.loss(model, batch).item()
    for _ in range(150):
        method.train_step(model, batch, opt, obj)
    end = obj.loss(model, batch).item()
    assert end < 0.6 * start, (start, end)
    assert not any(p.grad is not None for p in model.parameters())  # never a backward


def test_mezo_trains_tiny_bert_prompt_loss_down() -> None:
    bb = backbones.load("tiny-bert", head="mlm")
    obj = objectives.get("prompt")
    method = MeZO(lr=1e-2, eps=1e-3)
    model = method.prepare(bb)
    batch = obj.synthetic_batch(bb, 8, 12)
    opt = method.make_optimizer(model)

    def eval_loss() -> float:
        model.eval()
        with torch.no_grad():
            out = obj.loss(model, batch).item()
        model.train()
        return out

    start = eval_loss()
    for _ in range(30):
        method.train_step(model, batch, opt, obj)
    assert eval_loss() < 0.8 * start


def test_trainable_subsets() -> None:
    bb = backbones.load("tiny-roberta", head="mlm")
    model = MeZO(trainable="lora").prepare(bb)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    bb = backbones.load("tiny-bert", head="mlm")
    model = MeZO(trainable="head").prepare(bb)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("cls.") for n in trainable)
    with pytest.raises(KeyError):
        MeZO(trainable="lroa").prepare(backbones.load("tiny-bert", head="mlm"))


def test_registered_and_forward_only() -> None:
    cls = get("mezo")
    method = cls.from_overrides({"eps": "0.01", "trainable": "lora"})
    assert method.eps == 0.01 and method.trainable == "lora" and not method.uses_backward
    with pytest.raises(TypeError, match="make_optimizer"):
        bb = backbones.load("tiny-bert", head="mlm")
        model = method.prepare(bb)
        method.train_step(model, {}, torch.optim.SGD(model.parameters(), lr=0.0), objectives.get("prompt"))


@pytest.mark.parametrize("objective", ["prompt", "classification"])
def test_predicted_peak_is_inference_level(objective) -> None:
    """The memory target on a tiny case: predicted MeZO step <= 1.05x the no-grad forward,
    no backward FLOPs, two forwards' FLOPs, nothing read by backward, no optimizer state."""
    from spbench.case import Case
    from spbench.measure.predict import predict

    case = Case("mezo", "tiny-distilbert", batch_size=8, seq_len=32, objective=objective)
    mezo, _ = predict(case)
    full, _ = predict(Case("full_ft", "tiny-distilbert", batch_size=8, seq_len=32, objective=objective))
    assert mezo["predicted_cuda_peak_bytes"] <= 1.05 * mezo["predicted_inference_peak_bytes"]
    assert mezo["flops_backward"] == 0 and mezo["params_backward_read"] == 0
    assert mezo["mem_optimizer_bytes"] == 0 and mezo["mem_grads_bytes"] == 0
    assert mezo["flops_forward"] == 2 * full["flops_forward"]


def test_unchunked_noise_breaks_the_target() -> None:
    """Why the noise is chunked: one randn per whole parameter (embedding included) costs a
    temporary of its size, which shows in the predicted peak."""
    from spbench.case import Case
    from spbench.measure.predict import predict

    base = dict(method="mezo", backbone="tiny-bert", batch_size=2, seq_len=8, objective="prompt")
    small, _ = predict(Case(**base, overrides=(("chunk_elements", "256"),)))
    whole, _ = predict(Case(**base, overrides=(("chunk_elements", "100000000"),)))
    assert small["predicted_cuda_peak_bytes"] < whole["predicted_cuda_peak_bytes"]
    assert whole["predicted_cuda_peak_bytes"] > whole["predicted_inference_peak_bytes"]
