"""``trades``: TRADES (Zhang, Yu, Jiao, Xing, El Ghaoui, Jordan, *Theoretically Principled
Trade-off between Robustness and Accuracy*, ICML 2019).

``L(f(x), y) + beta * KL(f(x) || f(x'))`` with ``x'`` the L-infinity PGD maximizer of
``KL(f(x) || f(x'))`` (clean prediction held fixed during the attack); eps in [0, 1] pixel
units. ``beta`` trades clean accuracy for robustness (6 in the paper's CIFAR-10 runs).

Multi-label (sigmoid) heads use the binary KL of each finding, averaged over findings;
binary-logit heads the KL of the two-class distribution. The inner maximization starts
uniformly in the eps-ball (the reference code starts at ``x + 0.001 * N(0, 1)``); a start
at ``x`` itself would not move, since the KL's gradient vanishes there.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from app.core.catalogue.defenses import TRADESParams
from models.heads import loss as head_loss
from models.wrapper import DiagnosticModel
from workers.defenses.base import (
    Defense,
    DefenseRandom,
    TrainingParams,
)
from workers.defenses.losses import kl_divergence


class TRADES(Defense):
    name: ClassVar[str] = "trades"
    Params: ClassVar[type[TrainingParams]] = TRADESParams

    def loss(
        self, model: DiagnosticModel, x: torch.Tensor, y: torch.Tensor, rng: DefenseRandom
    ) -> torch.Tensor:
        p = self.params
        assert isinstance(p, TRADESParams)
        head = model.head
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                target = model(x).detach()
        finally:
            model.train(was_training)

        def attack_loss(outputs: torch.Tensor) -> torch.Tensor:
            return kl_divergence(target, outputs, head).sum()

        adv = self.attack(
            model, x, attack_loss, eps=p.eps, steps=p.steps, step_size=p.attack_step(), rng=rng
        )
        clean = model(x)
        robust = kl_divergence(clean, model(adv), head).mean()
        return head_loss(clean, y, head) + p.beta * robust
