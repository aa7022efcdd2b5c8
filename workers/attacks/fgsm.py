"""Fast gradient sign method (FGSM).

Goodfellow, Shlens, Szegedy, "Explaining and Harnessing Adversarial Examples", ICLR 2015:
one L-infinity step of size ``eps`` (pixel units of ``[0, 1]`` images) along the sign of
the gradient of the head's loss; targeted, one step down the target's loss. It is
:func:`workers.attacks.functional.pgd` with one step and no random start.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from app.core.catalogue.attacks import FGSMParams
from workers.attacks.base import Attack
from workers.attacks.context import AttackContext
from workers.attacks.objectives import Objective
from workers.attacks.pgd import run_pgd
from workers.attacks.registry import register
from workers.attacks.result import Outcome


@register
class FGSM(Attack[FGSMParams]):
    """One signed-gradient step of size ``eps``."""

    name: ClassVar[str] = "fgsm"
    params_model: ClassVar[type[FGSMParams]] = FGSMParams

    def _attack(
        self,
        ctx: AttackContext,
        x: Tensor,
        objective: Objective,
        mask: Tensor | None,
        generator: torch.Generator,
    ) -> Outcome:
        eps = self.params.eps
        return run_pgd(
            ctx, x, objective, mask, generator,
            eps=eps, norm="linf", step_size=max(eps, 1e-12), steps=1, random_start=False,
        )  # fmt: skip
