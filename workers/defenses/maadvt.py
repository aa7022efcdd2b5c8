"""``maadvt``: the paper's misclassification-aware adversarial training, i.e. MART (Wang,
Zou, Yi, Bailey, Ma, Gu, *Improving Adversarial Robustness Requires Revisiting
Misclassified Examples*, ICLR 2020), adapted to every head.

The inner maximization is L-infinity PGD on the head's loss (eps in [0, 1] pixel units);
the outer objective is :func:`workers.defenses.losses.mart_loss`: a boosted cross-entropy
on the PGD examples (true class up, strongest wrong class down) plus ``beta`` times
``KL(clean || adv)`` weighted per example by ``1 - p_true(clean)``, so examples the model
already gets wrong count more. ``beta`` about 6 (Xu et al. 2021; MART's CIFAR-10 value).
Multi-label heads use per-finding probabilities, per-finding binary KL and per-finding
weights.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from app.core.catalogue.defenses import MAAdvTParams
from models.heads import loss as head_loss
from models.wrapper import DiagnosticModel
from workers.defenses.base import (
    Defense,
    DefenseRandom,
    TrainingParams,
)
from workers.defenses.losses import mart_loss


class MAAdvT(Defense):
    name: ClassVar[str] = "maadvt"
    Params: ClassVar[type[TrainingParams]] = MAAdvTParams

    def loss(
        self, model: DiagnosticModel, x: torch.Tensor, y: torch.Tensor, rng: DefenseRandom
    ) -> torch.Tensor:
        p = self.params
        assert isinstance(p, MAAdvTParams)
        head = model.head

        def attack_loss(outputs: torch.Tensor) -> torch.Tensor:
            return head_loss(outputs, y, head, reduction="sum")

        adv = self.attack(
            model, x, attack_loss, eps=p.eps, steps=p.steps, step_size=p.attack_step(), rng=rng
        )
        return mart_loss(model(x), model(adv), y, head, p.beta)
