"""AutoAttack-style cascade (L-infinity).

Croce & Hein, ICML 2020 ("standard" version, without FAB): APGD with the head's loss,
then targeted APGD with the DLR loss against each of the ``target_classes`` classes the
model ranks highest after the true one, then Square. Each stage runs only on the images
still robust after quantization, so the result per image is the first success.

The targeted DLR stage needs a softmax head with at least 4 classes. With exactly 3
classes it is replaced by untargeted APGD-DLR (defined from 3 classes); with 2 classes,
a binary-logit or a multi-label head it is skipped (DLR is undefined there) and the
cascade is APGD, then Square. ``eps`` is in pixel units of ``[0, 1]`` images;
``iterations`` counts gradients plus queries.
"""

from __future__ import annotations

import logging
from typing import ClassVar

import torch
from torch import Tensor

from app.core.catalogue.attacks import AutoAttackParams
from models.card import Head
from workers.attacks.apgd import apgd, run_apgd
from workers.attacks.base import Attack
from workers.attacks.context import AttackContext, run_on_robust
from workers.attacks.objectives import Objective
from workers.attacks.registry import register
from workers.attacks.result import Outcome
from workers.attacks.square import square_linf

logger = logging.getLogger(__name__)


@register
class AutoAttack(Attack[AutoAttackParams]):
    """APGD-CE, then APGD-T (DLR) where valid, then Square, each on still-robust images."""

    name: ClassVar[str] = "autoattack"
    params_model: ClassVar[type[AutoAttackParams]] = AutoAttackParams

    def _attack(
        self,
        ctx: AttackContext,
        x: Tensor,
        objective: Objective,
        mask: Tensor | None,
        generator: torch.Generator,
    ) -> Outcome:
        p = self.params
        eps = p.eps
        best = run_apgd(
            ctx, x, objective, mask, generator, eps=eps, norm="linf", steps=p.steps, loss="ce"
        )
        stages = {"apgd-ce": int(best.success.sum())}

        if ctx.head == Head.SOFTMAX and ctx.num_classes >= 4:
            with torch.no_grad():
                ranked = ctx.forward(x).scatter(1, objective.labels.view(-1, 1), float("-inf"))
            order = ranked.argsort(dim=1, descending=True)
            for rank in range(min(p.target_classes, ctx.num_classes - 1)):

                def targeted(
                    index: Tensor, x_sub: Tensor, sub: Objective, mask_sub: Tensor | None,
                    rank: int = rank,
                ) -> tuple[Tensor, Tensor]:  # fmt: skip
                    aimed = sub.with_target(order[index, rank])
                    adv = apgd(
                        ctx, x_sub, aimed, eps=eps, norm="linf", steps=p.steps, loss="dlr",
                        generator=generator, mask=mask_sub,
                    )  # fmt: skip
                    return adv, torch.full_like(index, p.steps + 1)

                if run_on_robust(ctx, x, objective, mask, best, targeted, eps, by_loss=False) == 0:
                    break
            stages["apgd-t"] = int(best.success.sum())
        elif ctx.head == Head.SOFTMAX and ctx.num_classes == 3:

            def dlr(
                index: Tensor, x_sub: Tensor, sub: Objective, mask_sub: Tensor | None
            ) -> tuple[Tensor, Tensor]:
                adv = apgd(
                    ctx, x_sub, sub, eps=eps, norm="linf", steps=p.steps, loss="dlr",
                    generator=generator, mask=mask_sub,
                )  # fmt: skip
                return adv, torch.full_like(index, p.steps + 1)

            run_on_robust(ctx, x, objective, mask, best, dlr, eps, by_loss=False)
            stages["apgd-dlr"] = int(best.success.sum())

        if p.queries > 0:

            def square(
                index: Tensor, x_sub: Tensor, sub: Objective, mask_sub: Tensor | None
            ) -> tuple[Tensor, Tensor]:
                return square_linf(
                    ctx, x_sub, sub, eps=eps, queries=p.queries, p_init=0.8,
                    generator=generator, mask=mask_sub,
                )  # fmt: skip

            run_on_robust(ctx, x, objective, mask, best, square, eps, by_loss=False)
            stages["square"] = int(best.success.sum())
        logger.info("autoattack cumulative successes per stage: %s", stages)
        return best.outcome(eps, "linf")
