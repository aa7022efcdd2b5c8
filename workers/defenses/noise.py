"""``noise``: Gaussian data augmentation, the training that makes a model fit for randomized
smoothing (Cohen, Rosenfeld, Kolter, *Certified Adversarial Robustness via Randomized
Smoothing*, ICML 2019, section 4: "we trained the base classifier with Gaussian data
augmentation at the noise level sigma").

Each training image (a share ``p`` of them, all by default) gets ``N(0, sigma^2)`` noise in
[0, 1] pixel space, **not** clipped to [0, 1], which is exactly the input
:func:`models.smoothing.smooth` feeds the model; the loss is the head's. Smoothing a model
trained this way at the same sigma keeps its clean diagnosis, where a model never trained
under noise often changes its answer.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from app.core.catalogue.defenses import NoiseParams
from models.heads import loss as head_loss
from models.wrapper import DiagnosticModel
from workers.defenses.base import Defense, DefenseRandom, TrainingParams


class Noise(Defense):
    """Cross-entropy (or BCE) on Gaussian-noised images."""

    name: ClassVar[str] = "noise"
    Params: ClassVar[type[TrainingParams]] = NoiseParams

    def loss(
        self, model: DiagnosticModel, x: torch.Tensor, y: torch.Tensor, rng: DefenseRandom
    ) -> torch.Tensor:
        p = self.params
        assert isinstance(p, NoiseParams)
        # Drawn on the CPU stream so a seed gives the same noise on every device.
        noise = torch.randn(x.shape, generator=rng.cpu).to(x.device, x.dtype) * p.sigma
        if p.p < 1.0:
            keep = torch.rand(x.shape[0], generator=rng.cpu) < p.p
            noise = noise * keep.to(x.device, x.dtype).view(-1, *([1] * (x.dim() - 1)))
        return head_loss(model(x + noise), y, model.head)
