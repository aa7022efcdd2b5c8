"""Tiny models trained in seconds on synthetic blob images, one per head.

Each class (or finding) is a faint Gaussian blob at its own position on a noisy grey
background, so a small CNN must learn a spatial cue, and a perturbation of a few grey
levels can move it. Images are 1 x 16 x 16 in [0, 1] on the 8-bit grid, like decoded PNGs.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models import heads
from models.card import Head, ModelCard
from models.wrapper import DiagnosticModel

SIZE = 16
CENTERS = [(4, 4), (4, 11), (11, 4), (11, 11)]


def blob_images(present: Tensor, generator: torch.Generator, amplitude: float = 0.22) -> Tensor:
    """``[N, 1, 16, 16]`` images with a blob at ``CENTERS[k]`` wherever ``present[:, k]``."""
    n, k = present.shape
    ys, xs = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    bumps = torch.stack(
        [torch.exp(-((ys - cy) ** 2 + (xs - cx) ** 2) / (2 * 2.0**2)) for cy, cx in CENTERS[:k]]
    ).float()
    signal = torch.einsum("nk,khw->nhw", present.float(), bumps)
    noise = torch.randn(n, SIZE, SIZE, generator=generator) * 0.06
    images = (0.45 + amplitude * signal + noise).clamp(0, 1)
    return (images * 255).round().div(255).unsqueeze(1)


class TinyCNN(nn.Module):
    def __init__(self, outputs: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Linear(16 * 4 * 4, outputs)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x).flatten(1))


@dataclass
class Trained:
    """A trained model and held-out data it classifies correctly."""

    model: DiagnosticModel
    images: Tensor
    labels: Tensor
    train_images: Tensor
    train_labels: Tensor

    @property
    def head(self) -> Head:
        return self.model.head

    def accuracy(self, images: Tensor) -> float:
        with torch.no_grad():
            out = self.model(images)
        ok = heads.correct(out, self.labels, self.head, self.model.thresholds)
        return float(ok.float().mean())


def _data(kind: str, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    if kind == "multi-label":
        present = (torch.rand(n, 3, generator=generator) < 0.5).float()
        return blob_images(present, generator), present
    classes = 4 if kind == "softmax-4" else 2
    labels = torch.randint(0, classes, (n,), generator=generator)
    return blob_images(F.one_hot(labels, classes), generator), labels


def train_model(kind: str, seed: int = 0) -> Trained:
    """Train a tiny model: ``softmax-2``, ``softmax-4``, ``binary-logit`` or ``multi-label``."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    x, y = _data(kind, 640, g)
    labels: tuple[str, ...]
    if kind == "multi-label":
        labels, task, head, outputs = ("a", "b", "c"), "multi-label", Head.SIGMOID, 3
    elif kind == "binary-logit":
        labels, task, head, outputs = ("benign", "malignant"), "single-label", Head.BINARY_LOGIT, 1
    else:
        k = 4 if kind == "softmax-4" else 2
        labels, task, head, outputs = tuple(f"c{i}" for i in range(k)), "single-label", None, k
    card = ModelCard(
        name=kind,
        task=task,
        labels=labels,
        input={"channels": 1, "height": SIZE, "width": SIZE},
        preprocessing={"mean": (0.5,), "std": (0.25,)},
        head=head,
    )
    model = DiagnosticModel(TinyCNN(outputs), card, card.resolved_head(outputs))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x_train, y_train = x[:512], y[:512]
    model.train()
    for _ in range(12):
        perm = torch.randperm(512, generator=g)
        for i in range(0, 512, 64):
            idx = perm[i : i + 64]
            loss = heads.loss(model(x_train[idx]), y_train[idx], model.head)
            opt.zero_grad()
            loss.backward()
            opt.step()
    opt.zero_grad(set_to_none=True)
    model.eval()
    x_test, y_test = x[512:], y[512:]
    with torch.no_grad():
        ok = heads.correct(model(x_test), y_test, model.head, model.thresholds)
    return Trained(model, x_test[ok][:64], y_test[ok][:64], x_train, y_train)


KINDS = ("softmax-2", "binary-logit", "multi-label")


@pytest.fixture(scope="session")
def trained() -> dict[str, Trained]:
    """One tiny trained model per head (and a 4-class softmax for targeted/DLR attacks)."""
    return {kind: train_model(kind) for kind in (*KINDS, "softmax-4")}


@pytest.fixture(params=KINDS)
def any_head(request: pytest.FixtureRequest, trained: dict[str, Trained]) -> Trained:
    """Each of: a two-class softmax, a single-logit and a multi-label model."""
    return trained[request.param]
