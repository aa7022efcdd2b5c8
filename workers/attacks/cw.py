"""Carlini & Wagner L2, a minimum-norm attack.

Carlini & Wagner, "Towards Evaluating the Robustness of Neural Networks", IEEE S&P 2017.
Minimizes ``||x' - x||_2^2 + c * max(margin(x'), -confidence)`` over ``x' = (tanh(w) + 1)
/ 2`` (the change of variable keeps ``x'`` in ``[0, 1]``) with Adam, and searches the
trade-off ``c`` per image by bisection: up after a failure (x10 until a success bounds
it), down after a success. The margin is the head's (:meth:`Objective.margin`), so the
attack works for softmax, binary-logit and multi-label models, targeted or not.

The model sees the images the attack will return (quantized to 8 bits by default, with a
straight-through gradient), so the smallest success it keeps is one that survives being
saved. ``norm_found`` is its L2 size in pixel units, ``inf`` where none was found.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from app.core.catalogue.attacks import CWParams
from workers.attacks.base import Attack
from workers.attacks.context import AttackContext
from workers.attacks.objectives import Objective
from workers.attacks.registry import register
from workers.attacks.result import Outcome


@register
class CarliniWagnerL2(Attack[CWParams]):
    """C&W L2 with a per-image bisection of the constant ``c``."""

    name: ClassVar[str] = "cw_l2"
    params_model: ClassVar[type[CWParams]] = CWParams
    minimum_norm: ClassVar[bool] = True

    def _attack(
        self,
        ctx: AttackContext,
        x: Tensor,
        objective: Objective,
        mask: Tensor | None,
        generator: torch.Generator,
    ) -> Outcome:
        p = self.params
        n = x.shape[0]
        view = (-1, *([1] * (x.dim() - 1)))
        w0 = torch.atanh((x * 2.0 - 1.0).clamp(-1 + 1e-6, 1 - 1e-6))
        c = torch.full((n,), p.c, device=x.device)
        lower = torch.zeros(n, device=x.device)
        upper = torch.full((n,), float("inf"), device=x.device)
        best_l2 = torch.full((n,), float("inf"), device=x.device)
        best = x.clone()

        for _ in range(p.search_steps):
            w = w0.clone().requires_grad_(True)
            optimizer = torch.optim.Adam([w], lr=p.lr)
            found = torch.zeros(n, dtype=torch.bool, device=x.device)
            for _ in range(p.steps):
                ctx.check_stop()
                x_adv = (torch.tanh(w) + 1.0) / 2.0
                if mask is not None:
                    x_adv = x + (x_adv - x) * mask
                x_eval = ctx.finish_ste(x_adv, x, None, "l2")
                margin = objective.margin(ctx.forward(x_eval))
                dist = (x_eval - x).flatten(1).pow(2).sum(1)
                loss = (dist + c * margin.clamp(min=-p.confidence)).sum()
                optimizer.zero_grad(set_to_none=True)
                (grad,) = torch.autograd.grad(loss, w)
                w.grad = grad
                optimizer.step()
                with torch.no_grad():
                    ok = margin <= -p.confidence if p.confidence > 0 else margin < 0
                    l2 = dist.sqrt()
                    better = ok & (l2 < best_l2)
                    best = torch.where(better.view(view), x_eval.detach(), best)
                    best_l2 = torch.where(better, l2, best_l2)
                    found |= ok
            with torch.no_grad():
                upper = torch.where(found, torch.minimum(upper, c), upper)
                lower = torch.where(found, lower, torch.maximum(lower, c))
                bounded = torch.isfinite(upper)
                c = torch.where(bounded, (lower + upper) / 2.0, c * 10.0)

        iterations = torch.full((n,), p.search_steps * p.steps, dtype=torch.long, device=x.device)
        return Outcome(best, iterations, budget=None, norm="l2")

