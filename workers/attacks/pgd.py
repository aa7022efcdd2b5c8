"""Projected gradient descent (PGD) and the basic iterative method (BIM).

PGD: Madry, Makelov, Schmidt, Tsipras, Vladu, "Towards Deep Learning Models Resistant to
Adversarial Attacks", ICLR 2018. BIM: Kurakin, Goodfellow, Bengio, "Adversarial examples
in the physical world", ICLR 2017 workshop (PGD without the random start).

L-infinity steps follow the sign of the gradient, L2 steps the gradient normalized per
image; after each step the image is projected back to the ``eps`` ball around the clean
image and to ``[0, 1]``. ``eps`` and ``step_size`` are in pixel units of ``[0, 1]`` images
(``4/255`` = four grey levels). The default step size is ``2.5 * eps / steps`` (Madry et
al.), which lets a walk from the ball's centre reach its surface.

Multi-label models are attacked with the BCE over every finding (PAPER.md), or one
``finding``. With ``restarts > 1`` each restart runs only on the images that are still
robust (after quantization), and keeps the best result per image.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from workers.attacks import functional as F
from workers.attacks.base import Attack, AttackContext, Outcome
from workers.attacks.objectives import Objective
from workers.attacks.params import NormBudgetParams, Restarts, Steps, StepSize
from workers.attacks.registry import register


class BIMParams(NormBudgetParams):
    """BIM: ``eps`` budget, ``steps`` steps of ``step_size`` (default ``2.5 * eps / steps``)."""

    step_size: StepSize | None = None
    steps: Steps = 10

    def resolved_step(self) -> float:
        if self.step_size is not None:
            return self.step_size
        return 2.5 * self.eps / max(self.steps, 1)


class PGDParams(BIMParams):
    """PGD: BIM plus a uniform random start in the ball and ``restarts``."""

    random_start: bool = True
    restarts: Restarts = 1


def run_pgd(
    ctx: AttackContext,
    x: Tensor,
    objective: Objective,
    mask: Tensor | None,
    generator: torch.Generator,
    *,
    eps: float,
    norm: F.Norm,
    step_size: float,
    steps: int,
    random_start: bool,
    restarts: int = 1,
) -> Outcome:
    """PGD with restarts on the still-robust images; every restart is :func:`F.pgd`."""
    n = x.shape[0]

    def loss_fn(out: Tensor) -> Tensor:
        return objective.loss(out).sum()

    first = F.pgd(
        ctx.forward,
        x,
        loss_fn,
        eps=eps,
        step_size=step_size,
        steps=steps,
        norm=norm,
        random_start=random_start,
        generator=generator,
        mask=mask,
    )
    iterations = torch.full((n,), steps, dtype=torch.long, device=x.device)
    if restarts == 1:
        return Outcome(first, iterations, budget=eps, norm=norm)

    best, outputs = ctx.evaluate(first, x, eps, norm)
    success = objective.success(outputs)
    best_loss = objective.loss(outputs)
    for _ in range(restarts - 1):
        todo = (~success).nonzero().flatten()
        if todo.numel() == 0:
            break
        sub = objective.subset(todo)
        sub_mask = mask[todo] if mask is not None and mask.shape[0] == n else mask
        x_sub = x[todo]

        def sub_loss(out: Tensor, sub: Objective = sub) -> Tensor:
            return sub.loss(out).sum()

        cand = F.pgd(
            ctx.forward,
            x_sub,
            sub_loss,
            eps=eps,
            step_size=step_size,
            steps=steps,
            norm=norm,
            random_start=random_start,
            generator=generator,
            mask=sub_mask,
        )
        cand, cand_out = ctx.evaluate(cand, x_sub, eps, norm)
        cand_success = sub.success(cand_out)
        cand_loss = sub.loss(cand_out)
        better = cand_success | (cand_loss > best_loss[todo])
        keep = todo[better]
        best[keep] = cand[better]
        outputs[keep] = cand_out[better]
        success[keep] = cand_success[better]
        best_loss[keep] = cand_loss[better]
        iterations[todo] += steps
    return Outcome(best, iterations, budget=eps, norm=norm, outputs=outputs)


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
