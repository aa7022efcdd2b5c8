"""Projected gradient descent (PGD) and the basic iterative method (BIM).

PGD: Madry, Makelov, Schmidt, Tsipras, Vladu, "Towards Deep Learning Models Resistant to
Adversarial Attacks", ICLR 2018. BIM: Kurakin, Goodfellow, Bengio, "Adversarial examples
in the physical world", ICLR 2017 workshop (PGD without the random start).

L-infinity steps follow the sign of the gradient, L2 steps the gradient normalized per
image; after each step the image is projected back to the ``eps`` ball around the clean
image and to ``[0, 1]``. ``eps`` and ``step_size`` are in pixel units of ``[0, 1]`` images
(``4/255`` = four grey levels). The default step size is ``2.5 * eps / steps`` (Madry et
al.), which lets a walk from the ball's centre reach its surface.

Multi-label models are attacked with the BCE over every finding (Xu et al. 2021), or one
``finding``. With ``restarts > 1`` each restart runs only on the images that are still
robust (after quantization), and keeps the best result per image.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from app.core.catalogue.attacks import BIMParams, PGDParams
from workers.attacks import functional as F
from workers.attacks.base import Attack
from workers.attacks.context import AttackContext, Best, run_on_robust
from workers.attacks.objectives import Objective
from workers.attacks.registry import register
from workers.attacks.result import Outcome


def run_pgd(
    ctx: AttackContext,
    x: Tensor,
    objective: Objective,
    mask: Tensor | None,
    generator: torch.Generator,
    *,
    eps: float | Tensor,
    norm: F.Norm,
    step_size: float | Tensor,
    steps: int,
    random_start: bool,
    restarts: int = 1,
) -> Outcome:
    """PGD; restarts run only on the images still robust after quantization. Every run is
    :func:`workers.attacks.functional.pgd`."""

    def once(
        index: Tensor | None, x_sub: Tensor, sub: Objective, mask_sub: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        def loss_fn(out: Tensor) -> Tensor:
            return sub.loss(out).sum()

        adv = F.pgd(
            ctx.forward,
            x_sub,
            loss_fn,
            eps=_take(eps, index),
            step_size=_take(step_size, index),
            steps=steps,
            norm=norm,
            random_start=random_start,
            generator=generator,
            mask=mask_sub,
            should_stop=ctx.should_stop,
        )
        return adv, torch.full((x_sub.shape[0],), steps, dtype=torch.long, device=x.device)

    adv, iterations = once(None, x, objective, mask)
    if restarts == 1:
        # The common case stays lean: the base class quantizes and judges once.
        return Outcome(adv, iterations, budget=eps, norm=norm)
    best = Best.evaluate(ctx, x, adv, objective, iterations, eps, norm)
    for _ in range(restarts - 1):
        if run_on_robust(ctx, x, objective, mask, best, once, eps, norm) == 0:
            break
    return best.outcome(eps, norm)


def _take(value: float | Tensor, index: Tensor | None) -> float | Tensor:
    if index is None or not isinstance(value, Tensor) or value.dim() == 0:
        return value
    return value[index]


@register
class BIM(Attack[BIMParams]):
    """Basic iterative method: PGD started at the clean image (no restarts)."""

    name: ClassVar[str] = "bim"
    params_model: ClassVar[type[BIMParams]] = BIMParams

    def _attack(
        self,
        ctx: AttackContext,
        x: Tensor,
        objective: Objective,
        mask: Tensor | None,
        generator: torch.Generator,
    ) -> Outcome:
        p = self.params
        return run_pgd(
            ctx, x, objective, mask, generator,
            eps=p.eps, norm=p.norm, step_size=p.resolved_step(), steps=p.steps,
            random_start=False,
        )  # fmt: skip


@register
class PGD(Attack[PGDParams]):
    """Projected gradient descent, L-infinity or L2, untargeted or targeted."""

    name: ClassVar[str] = "pgd"
    params_model: ClassVar[type[PGDParams]] = PGDParams

    def _attack(
        self,
        ctx: AttackContext,
        x: Tensor,
        objective: Objective,
        mask: Tensor | None,
        generator: torch.Generator,
    ) -> Outcome:
        p = self.params
        return run_pgd(
            ctx, x, objective, mask, generator,
            eps=p.eps, norm=p.norm, step_size=p.resolved_step(), steps=p.steps,
            random_start=p.random_start, restarts=p.restarts,
        )  # fmt: skip
