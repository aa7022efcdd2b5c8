"""``pgd_at``: PGD adversarial training (Madry, Makelov, Schmidt, Tsipras, Vladu,
*Towards Deep Learning Models Resistant to Adversarial Attacks*, ICLR 2018).

``min_theta E[max_{||d||_inf <= eps} L(f(x + d), y)]``: every training batch is replaced by
its L-infinity PGD examples (uniform random start, ``steps`` signed-gradient steps of
``step_size``, projection to the eps-ball and to [0, 1]); eps in [0, 1] pixel units. The
loss is the head's (cross-entropy, or BCE over findings / on the single logit).
"""

from __future__ import annotations

from typing import ClassVar

import torch

from app.core.catalogue.defenses import PGDATParams
from models.heads import loss as head_loss
from models.wrapper import DiagnosticModel
from workers.defenses.base import Defense, DefenseRandom, TrainingParams


class PGDAT(Defense):
    name: ClassVar[str] = "pgd_at"
    Params: ClassVar[type[TrainingParams]] = PGDATParams

    def loss(
        self, model: DiagnosticModel, x: torch.Tensor, y: torch.Tensor, rng: DefenseRandom
    ) -> torch.Tensor:
        p = self.params
        assert isinstance(p, PGDATParams)
        head = model.head

        def attack_loss(outputs: torch.Tensor) -> torch.Tensor:
            return head_loss(outputs, y, head, reduction="sum")

        adv = self.attack(
            model, x, attack_loss, eps=p.eps, steps=p.steps, step_size=p.attack_step(), rng=rng
        )
        return head_loss(model(adv), y, head)
