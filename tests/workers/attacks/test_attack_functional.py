"""The functional primitives that the engine and adversarial training share."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from workers.attacks import functional as F


@pytest.fixture
def linear() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4))
    x = (torch.rand(6, 3, 8, 8) * 255).round() / 255
    y = torch.randint(0, 4, (6,))
    return net, x, y


def _ce(y: torch.Tensor):
    return lambda out: nn.functional.cross_entropy(out, y, reduction="sum")


def test_pgd_respects_per_sample_linf_budgets(linear) -> None:
    net, x, y = linear
    eps = torch.tensor([0.0, 1, 2, 4, 8, 16]) / 255
    x_adv = F.pgd(net, x, _ce(y), eps=eps, step_size=eps / 4, steps=10,
                  generator=torch.Generator().manual_seed(0))  # fmt: skip
    sizes = F.linf_norms(x_adv - x)
    assert torch.all(sizes <= eps + 1e-6)
    assert torch.all(sizes[1:] > 0.9 * eps[1:])
    assert x_adv.min() >= 0
    assert x_adv.max() <= 1
    assert not x_adv.requires_grad


def test_pgd_respects_l2_budgets_and_mask(linear) -> None:
    net, x, y = linear
    mask = torch.zeros(6, 1, 8, 8)
    mask[..., :4, :] = 1
    eps = torch.linspace(0.1, 0.6, 6)
    x_adv = F.pgd(net, x, _ce(y), eps=eps, step_size=0.1, steps=8, norm="l2", mask=mask,
                  generator=torch.Generator().manual_seed(0))  # fmt: skip
    delta = x_adv - x
    assert torch.all(F.l2_norms(delta) <= eps + 1e-5)
    assert torch.all(delta[..., 4:, :] == 0)
    assert torch.all(F.l2_norms(delta) > 0)


def test_pgd_per_sample_steps_and_no_start(linear) -> None:
    net, x, y = linear
    steps = torch.tensor([0, 1, 2, 3, 4, 5])
    x_adv = F.pgd(net, x, _ce(y), eps=8 / 255, step_size=1 / 255, steps=steps, random_start=False)
    sizes = F.linf_norms(x_adv - x) * 255
    # Each step moves at most one grey level, and an image with 0 steps does not move.
    assert sizes[0] == 0
    assert torch.all(sizes <= steps.float() + 1e-4)
    assert torch.all(sizes[1:] > 0.5)


def test_pgd_increases_the_loss_and_is_deterministic(linear) -> None:
    net, x, y = linear

    def run(seed: int) -> torch.Tensor:
        return F.pgd(net, x, _ce(y), eps=8 / 255, step_size=2 / 255, steps=10,
                     generator=torch.Generator().manual_seed(seed))  # fmt: skip

    a, b, c = run(0), run(0), run(1)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    loss = nn.functional.cross_entropy
    assert loss(net(a), y) > loss(net(x), y)


def test_pgd_leaves_the_model_alone(linear) -> None:
    net, x, y = linear
    net.train()
    F.pgd(net, x, _ce(y), eps=4 / 255, step_size=1 / 255, steps=2)
    assert net.training
    assert all(p.requires_grad and p.grad is None for p in net.parameters())


def test_projections() -> None:
    delta = torch.randn(4, 3, 5, 5)
    eps = torch.tensor([0.1, 0.2, 0.3, 10.0])
    assert torch.all(F.linf_norms(F.project_linf(delta, eps)) <= eps + 1e-7)
    projected = F.project_l2(delta, eps)
    assert torch.allclose(F.l2_norms(projected)[:3], eps[:3], atol=1e-5)
    assert torch.allclose(projected[3], delta[3])  # already inside the ball


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_quantize_8bit_stays_on_grid_and_in_budget(norm: str) -> None:
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(8, 3, 6, 6, generator=g) * 255).round() / 255
    eps = 4 / 255 if norm == "linf" else 0.05
    delta = F.project(torch.randn(8, 3, 6, 6, generator=g), eps, norm)  # type: ignore[arg-type]
    x_adv = (x + delta).clamp(0, 1)
    q = F.quantize_8bit(x_adv, x, eps, norm)  # type: ignore[arg-type]
    assert torch.allclose(q * 255, (q * 255).round(), atol=1e-4)
    sizes = F.linf_norms(q - x) if norm == "linf" else F.l2_norms(q - x)
    assert torch.all(sizes <= eps + 1e-6)
    # Rounding keeps most of the perturbation.
    assert (q - x).abs().sum() > 0.5 * (x_adv - x).abs().sum()


def test_quantize_8bit_without_budget_rounds_to_nearest() -> None:
    x = torch.full((1, 1, 2, 2), 100 / 255)
    x_adv = x + torch.tensor([0.4, 0.6, -0.4, -0.6]).view(1, 1, 2, 2) / 255
    q = F.quantize_8bit(x_adv, x) * 255
    assert torch.allclose(q.flatten(), torch.tensor([100.0, 101, 100, 99]), atol=1e-4)
