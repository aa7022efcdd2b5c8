"""Fixtures for the defense tests: a tiny CNN and a synthetic task with a shortcut.

The task (32x32 grey images) has two features:

- a **robust** one: a Gaussian blob of amplitude 0.4 at a random position, bright for the
  positive class and dark for the negative one, agreeing with the label on 90 % of the
  images (``flip`` = 0.1);
- a **non-robust shortcut**: a +-3/255 checkerboard (stripes for the second finding of the
  multi-label task) whose phase agrees with the label on *every* image.

Plain training latches on to the perfect shortcut and reaches ~100 % clean accuracy, but an
L-infinity attack with eps = 8/255 > 2 * 3/255 can flip the shortcut, so its robust
accuracy collapses. Adversarial training at that budget cannot use the shortcut and has to
learn the blob, whose 0.4 contrast no 8/255 perturbation can flip: about 90 % clean and
robust. This gives a large, reliable gap with a few epochs on a few hundred images.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from models.card import Head, ModelCard
from models.heads import correct
from models.heads import loss as head_loss
from models.wrapper import DiagnosticModel
from workers.attacks.functional import pgd
from workers.defenses import DefenseResult, train_defense

SIZE = 32
SHORTCUT = 3 / 255
EVAL_EPS = 8 / 255


def tiny_net(outputs: int) -> nn.Module:
    """Three conv/BN/ReLU layers (BatchNorm on purpose: the loop must handle its modes)."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1, stride=2, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1, stride=2, bias=False),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, outputs),
    )


def card_for(head: Head, architecture: str | None = None) -> ModelCard:
    if head == Head.SIGMOID:
        return ModelCard(
            name="tiny-findings",
            task="multi-label",
            labels=("bright", "dark"),
            input={"channels": 1, "height": SIZE, "width": SIZE},
            architecture=architecture,
        )
    return ModelCard(
        name="tiny-lesion",
        task="single-label",
        labels=("dark", "bright"),
        input={"channels": 1, "height": SIZE, "width": SIZE},
        head=head,
        architecture=architecture,
    )


def tiny_model(head: Head, seed: int = 0) -> DiagnosticModel:
    card = card_for(head)
    torch.manual_seed(seed)
    return DiagnosticModel(tiny_net(card.expected_outputs(head)), card, head)


def _blobs(n: int, g: torch.Generator, sigma: float = 4.0) -> torch.Tensor:
    yy, xx = torch.meshgrid(
        torch.arange(SIZE, dtype=torch.float32),
        torch.arange(SIZE, dtype=torch.float32),
        indexing="ij",
    )
    cy = torch.randint(8, SIZE - 8, (n, 1, 1), generator=g).float()
    cx = torch.randint(8, SIZE - 8, (n, 1, 1), generator=g).float()
    return torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2)).unsqueeze(1)


def _pattern(kind: int) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    grid = (yy + xx) % 2 if kind == 0 else yy % 2
    return (grid * 2 - 1).float()


def shortcut_task(head: Head, n: int, seed: int, flip: float = 0.1) -> TensorDataset:
    """``n`` images ``[n, 1, 32, 32]`` in [0, 1] and labels in ``head``'s convention."""
    g = torch.Generator().manual_seed(seed)
    x = 0.5 + 0.05 * torch.randn(n, 1, SIZE, SIZE, generator=g)
    if head == Head.SIGMOID:
        labels = torch.randint(0, 2, (n, 2), generator=g).float()
        for finding, sense in ((0, 1.0), (1, -1.0)):
            present = labels[:, finding].bool() ^ (torch.rand(n, generator=g) < flip)
            x += sense * 0.4 * present.float().view(-1, 1, 1, 1) * _blobs(n, g)
            sign = labels[:, finding] * 2 - 1
            x += SHORTCUT * sign.view(-1, 1, 1, 1) * _pattern(finding)
        return TensorDataset(x.clamp(0, 1), labels)
    y = torch.randint(0, 2, (n,), generator=g)
    sign = (y * 2 - 1).float()
    polarity = torch.where(torch.rand(n, generator=g) < flip, -sign, sign)
    x += 0.4 * polarity.view(-1, 1, 1, 1) * _blobs(n, g)
    x += SHORTCUT * sign.view(-1, 1, 1, 1) * _pattern(0)
    return TensorDataset(x.clamp(0, 1), y)


@pytest.fixture(scope="session")
def make_task() -> Callable[..., TensorDataset]:
    """``make_task(head, n, seed, flip=0.1)``: see :func:`shortcut_task`."""
    return shortcut_task


@pytest.fixture(scope="session")
def make_model() -> Callable[..., DiagnosticModel]:
    """``make_model(head, seed=0)``: an untrained :func:`tiny_net` wrapped for ``head``."""
    return tiny_model


@pytest.fixture(scope="session")
def make_card() -> Callable[..., ModelCard]:
    """``make_card(head, architecture=None)``: the card of the tiny task's models."""
    return card_for


# --------------------------------------------------------------------------- robustness
# Shared by the robustness test files (one per kind of head, to keep each file short).

EPOCHS = {Head.SOFTMAX: 3, Head.BINARY_LOGIT: 3, Head.SIGMOID: 5}
COMMON: dict[str, Any] = {
    "optimizer": "adam",
    "lr": 3e-3,
    "batch_size": 32,
    "eval_eps": EVAL_EPS,
    "eval_steps": 3,
}
METHODS: dict[str, dict[str, Any]] = {
    "clean": {},
    "pgd_at": {"eps": EVAL_EPS, "steps": 2},
    "trades": {"eps": EVAL_EPS, "steps": 2},
    "maadvt": {"eps": EVAL_EPS, "steps": 2},
    # The paper's range, shifted to straddle the evaluation budget (0.031).
    "mpadvt": {"eps_min": 0.02, "eps_max": 0.04, "steps_max": 2},
}


def robust_accuracy(model: DiagnosticModel, data: TensorDataset) -> tuple[float, float]:
    """Clean and PGD-20 (L-infinity, eps 8/255, random start) accuracy."""
    x, y = data.tensors
    model.eval()
    with torch.no_grad():
        ok = correct(model(x), y, model.head, model.thresholds)
    adv = pgd(
        model,
        x,
        lambda out: head_loss(out, y, model.head, reduction="sum"),
        eps=EVAL_EPS,
        step_size=EVAL_EPS / 4,
        steps=20,
        generator=torch.Generator().manual_seed(0),
    )
    assert float((adv - x).abs().max()) <= EVAL_EPS + 1e-6
    with torch.no_grad():
        ok_adv = correct(model(adv), y, model.head, model.thresholds)
    return float(ok.float().mean()), float((ok & ok_adv).float().mean())


@pytest.fixture(scope="session")
def trained() -> Callable[[Head, str], tuple[DefenseResult, float, float]]:
    """``trained(head, method)`` -> (result, clean acc, robust acc on the test split),
    computed once per session."""
    cache: dict[tuple[Head, str], tuple[DefenseResult, float, float]] = {}

    def get(head: Head, method: str) -> tuple[DefenseResult, float, float]:
        if (head, method) not in cache:
            train = shortcut_task(head, 384, seed=1)
            val = shortcut_task(head, 64, seed=2)
            params = {**COMMON, "epochs": EPOCHS[head], **METHODS[method]}
            result = train_defense(tiny_model(head), train, val, method, params, seed=0)
            clean, robust = robust_accuracy(result.model, shortcut_task(head, 128, seed=3))
            cache[head, method] = (result, clean, robust)
        return cache[head, method]

    return get
