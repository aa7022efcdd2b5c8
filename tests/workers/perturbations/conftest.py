"""Fixtures for the perturbation tests: small structured images and a tiny trained model.

The task: a 32 x 32 greyscale image shows a faint blob at a random position (class
``lesion``) or not (class ``normal``), on a smooth background with mild noise. A tiny CNN
learns it in a couple of seconds, and noise, blur or contrast loss make it harder, so
accuracy must fall as severity grows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from torch import Tensor

from models.architectures import SmallCNN
from models.card import Head, ModelCard
from models.wrapper import DiagnosticModel

SIZE = 32


def blob_task(n: int, seed: int, channels: int = 1, size: int = SIZE) -> tuple[Tensor, Tensor]:
    """``[N, C, size, size]`` images in [0, 1] and ``[N]`` labels (half of them 1 = blob)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    ys, xs = torch.meshgrid(
        torch.arange(size, dtype=torch.float32),
        torch.arange(size, dtype=torch.float32),
        indexing="ij",
    )
    scale = size / SIZE
    cy = (torch.rand(n, 1, 1, generator=g) * 20 + 6) * scale
    cx = (torch.rand(n, 1, 1, generator=g) * 20 + 6) * scale
    blob = torch.exp(-((ys - cy) ** 2 + (xs - cx) ** 2) / (2 * (2.0 * scale) ** 2))
    tilt = torch.rand(n, 1, 1, generator=g) * 0.2 - 0.1
    background = 0.4 + tilt * (xs - size / 2) / size
    noise = torch.randn(n, size, size, generator=g) * 0.03
    images = (background + 0.3 * labels.view(n, 1, 1) * blob + noise).clamp(0, 1)
    images = images.unsqueeze(1).expand(n, channels, size, size).contiguous()
    return (images * 255).round() / 255, labels


def wrap(
    net: torch.nn.Module,
    channels: int = 1,
    labels: tuple[str, ...] = ("normal", "lesion"),
    head: Head = Head.SOFTMAX,
    task: str = "single-label",
) -> DiagnosticModel:
    card = ModelCard(
        name="tiny",
        task=task,
        labels=labels,
        input={"channels": channels, "height": SIZE, "width": SIZE},
    )
    return DiagnosticModel(net, card, head).eval()


@dataclass
class Trained:
    model: DiagnosticModel
    images: Tensor
    labels: Tensor


@pytest.fixture(scope="session")
def trained() -> Trained:
    """A SmallCNN trained on the blob task; held-out images it mostly gets right."""
    torch.manual_seed(0)
    x, y = blob_task(768, seed=1)
    net = SmallCNN(1, 2, width=8)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(2)
    net.train()
    for _ in range(12):
        order = torch.randperm(x.shape[0], generator=gen)
        for start in range(0, x.shape[0], 64):
            idx = order[start : start + 64]
            # Mild noise and exposure augmentation: the model must learn the blob's shape
            # rather than a grey-level threshold, so degradation is gradual.
            xb = x[idx]
            sigma = torch.rand(xb.shape[0], 1, 1, 1, generator=gen) * 0.04
            shift = torch.rand(xb.shape[0], 1, 1, 1, generator=gen) * 0.1 - 0.05
            xb = (xb + shift + sigma * torch.randn(xb.shape, generator=gen)).clamp(0, 1)
            loss = torch.nn.functional.cross_entropy(net(xb), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model = wrap(net)
    test_x, test_y = blob_task(200, seed=3)
    return Trained(model, test_x, test_y)


@pytest.fixture(scope="session")
def make_blobs() -> Callable[..., tuple[Tensor, Tensor]]:
    """:func:`blob_task`, for tests that need other sizes (test modules cannot import a
    conftest)."""
    return blob_task


@pytest.fixture
def gray_images() -> Tensor:
    x, _ = blob_task(6, seed=11, channels=1)
    x[0] = 0.0  # extremes must survive every perturbation
    x[1] = 1.0
    return x


@pytest.fixture
def rgb_images() -> Tensor:
    x, _ = blob_task(6, seed=12, channels=3)
    x[:, 1] *= 0.8
    x[:, 2] *= 0.6
    x[0] = 0.0
    x[1] = 1.0
    return x
