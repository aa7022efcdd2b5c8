"""Tiny trained models on a blob task, shared by the analysis and report tests.

Images are 1 x 32 x 32 in [0, 1] on the 8-bit grid: a noisy grey background with a faint
Gaussian blob at the position of each class (single-label) or each present finding
(multi-label), so a small CNN must learn a spatial cue. Lesion masks are the discs where
the blobs are drawn. Models are the allow-listed ``SmallCNN`` (width 8), trained in a few
seconds on the CPU.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from models import heads
from models.architectures import SmallCNN
from models.card import Head, ModelCard
from models.wrapper import DiagnosticModel

SIZE = 32
CENTERS = [(8, 8), (8, 24), (24, 16)]
RADIUS = 5.0


def blob_images(present: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """``[N, 1, 32, 32]`` images with a blob at ``CENTERS[k]`` wherever ``present[:, k]``,
    and their lesion masks (1 inside the blobs' discs)."""
    n, k = present.shape
    ys, xs = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    dist2 = torch.stack([(ys - cy) ** 2 + (xs - cx) ** 2 for cy, cx in CENTERS[:k]]).float()
    bumps = torch.exp(-dist2 / (2 * 3.0**2))
    signal = torch.einsum("nk,khw->nhw", present.float(), bumps)
    noise = torch.randn(n, SIZE, SIZE, generator=generator) * 0.06
    images = (0.45 + 0.3 * signal + noise).clamp(0, 1)
    images = (images * 255).round().div(255).unsqueeze(1)
    discs = (dist2 <= RADIUS**2).float()
    masks = (torch.einsum("nk,khw->nhw", present.float(), discs) > 0).float().unsqueeze(1)
    return images, masks


@dataclass
class Trained:
    """A trained model and held-out images it classifies correctly."""

    model: DiagnosticModel
    images: Tensor
    labels: Tensor
    masks: Tensor

    def accuracy(self, images: Tensor) -> float:
        with torch.no_grad():
            out = self.model(images)
        ok = heads.correct(out, self.labels, self.model.head, self.model.thresholds)
        return float(ok.float().mean())


def _data(kind: str, n: int, g: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    if kind == "multi-label":
        present = (torch.rand(n, 3, generator=g) < 0.5).float()
        images, masks = blob_images(present, g)
        return images, present, masks
    classes = 2 if kind == "binary-logit" else 3
    labels = torch.randint(0, classes, (n,), generator=g)
    images, masks = blob_images(F.one_hot(labels, classes), g)
    return images, labels, masks


def card_for(kind: str, architecture: str | None = "small_cnn") -> tuple[ModelCard, int]:
    """The card of a tiny model of ``kind`` and its output width."""
    common: dict[str, Any] = {
        "input": {"channels": 1, "height": SIZE, "width": SIZE},
        "preprocessing": {"mean": (0.5,), "std": (0.25,)},
        "architecture": architecture,
    }
    if kind == "multi-label":
        card = ModelCard(name=kind, task="multi-label", labels=("a", "b", "c"), **common)
        return card, 3
    if kind == "binary-logit":
        card = ModelCard(name=kind, task="single-label", labels=("benign", "malignant"),
                         head=Head.BINARY_LOGIT, **common)
        return card, 1
    return ModelCard(name=kind, task="single-label", labels=("c0", "c1", "c2"), **common), 3


def train_net(
    net: torch.nn.Module, card: ModelCard, outputs: int, kind: str, seed: int = 0,
    epochs: int = 10,
) -> Trained:
    """Train ``net`` on the blob task of ``kind``; keep correctly classified test images."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    x, y, m = _data(kind, 640, g)
    model = DiagnosticModel(net, card, card.resolved_head(outputs))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(480, generator=g)
        for i in range(0, 480, 48):
            idx = perm[i : i + 48]
            loss = heads.loss(model(x[idx]), y[idx], model.head)
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    xt, yt, mt = x[480:], y[480:], m[480:]
    with torch.no_grad():
        ok = heads.correct(model(xt), yt, model.head, model.thresholds)
    return Trained(model, xt[ok][:96], yt[ok][:96], mt[ok][:96])


@functools.cache
def trained_model(kind: str) -> Trained:
    """A SmallCNN trained on the blob task: ``softmax``, ``binary-logit`` or ``multi-label``."""
    card, outputs = card_for(kind)
    return train_net(SmallCNN(1, outputs, width=8), card, outputs, kind)
