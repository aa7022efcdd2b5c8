"""Square Attack, L-infinity (black-box, scores only).

Andriushchenko, Croce, Flammarion, Hein, "Square Attack: a query-efficient black-box
adversarial attack via random search", ECCV 2020. Starts from vertical stripes of
``+-eps``; each query redraws one random square window (per image, with a per-channel sign
``+-eps``) and keeps it if the margin went down. The window's side shrinks on the paper's
schedule of the fraction ``p`` of pixels changed (``p_init`` halved at fixed fractions of
the query budget). It never asks for a gradient: everything runs under ``no_grad``.

The score is the head's margin (see :class:`workers.attacks.objectives.Objective`), so
binary-logit and multi-label models (margin to each finding's threshold) are supported.
``queries`` is the budget per image, the initial query included; images stop spending
queries once fooled. ``eps`` is in pixel units of ``[0, 1]`` images.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor

from app.core.catalogue.attacks import SquareParams
from workers.attacks import functional as F
from workers.attacks.base import Attack
from workers.attacks.context import AttackContext
from workers.attacks.objectives import Objective
from workers.attacks.registry import register
from workers.attacks.result import Outcome


def p_schedule(p_init: float, it: int, queries: int) -> float:
    """The paper's schedule: ``p_init`` halved at fixed fractions of a 10,000 budget."""
    it = int(it / queries * 10000)
    for bound, div in ((10, 1), (50, 2), (200, 4), (500, 8), (1000, 16), (2000, 32),
                       (4000, 64), (6000, 128), (8000, 256)):  # fmt: skip
        if it <= bound:
            return p_init / div
    return p_init / 512


def square_linf(
    ctx: AttackContext,
    x: Tensor,
    objective: Objective,
    *,
    eps: float,
    queries: int,
    p_init: float,
    generator: torch.Generator | None,
    mask: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Run the attack on ``x`` ``[N, C, H, W]``; returns images (within ``eps``, in
    ``[0, 1]``, not quantized) and the long ``[N]`` queries spent."""
    n, c, h, w = x.shape
    with torch.no_grad():
        stripes = F.draw_noise((n, c, 1, w), x, generator).lt(0.5).to(x.dtype) * 2.0 - 1.0
        delta = stripes.expand(n, c, h, w) * eps
        if mask is not None:
            delta = delta * mask
        lower = (x - eps).clamp(min=0.0)
        upper = (x + eps).clamp(max=1.0)
        x_best = torch.minimum(torch.maximum(x + delta, lower), upper)
        margin = objective.margin(ctx.forward(x_best))
        spent = torch.ones(n, dtype=torch.long, device=x.device)
        rows = torch.arange(h, device=x.device).view(1, 1, h, 1)
        cols = torch.arange(w, device=x.device).view(1, 1, 1, w)
        full_mask = mask is not None and mask.shape[0] == n

        for it in range(queries - 1):
            if it % 10 == 0:  # a query round is cheap; poll every tenth
                ctx.check_stop()
            todo = (margin > 0).nonzero().flatten()
            if todo.numel() == 0:
                break
            m = todo.numel()
            p = p_schedule(p_init, it, queries)
            side = max(round(math.sqrt(p * h * w)), 1)
            side = min(side, h, w)
            top = (F.draw_noise((m,), x, generator) * (h - side + 1)).long().view(-1, 1, 1, 1)
            left = (F.draw_noise((m,), x, generator) * (w - side + 1)).long().view(-1, 1, 1, 1)
            window = (rows >= top) & (rows < top + side) & (cols >= left) & (cols < left + side)
            signs = F.draw_noise((m, c, 1, 1), x, generator).lt(0.5).to(x.dtype) * 2.0 - 1.0
            x_sub, current = x[todo], x_best[todo]
            candidate = torch.where(window, x_sub + signs * eps, current)
            if mask is not None:
                region = mask[todo] if full_mask else mask
                candidate = torch.where(region > 0, candidate, current)
            candidate = torch.minimum(torch.maximum(candidate, lower[todo]), upper[todo])
            new_margin = objective.subset(todo).margin(ctx.forward(candidate))
            better = new_margin < margin[todo]
            keep = todo[better]
            x_best[keep] = candidate[better]
            margin[keep] = new_margin[better]
            spent[todo] += 1
    return x_best, spent


@register
class Square(Attack[SquareParams]):
    """Square Attack (L-infinity), score-based: no gradients are ever computed."""

    name: ClassVar[str] = "square"
    params_model: ClassVar[type[SquareParams]] = SquareParams

    def _attack(
        self,
        ctx: AttackContext,
        x: Tensor,
        objective: Objective,
        mask: Tensor | None,
        generator: torch.Generator,
    ) -> Outcome:
        p = self.params
        images, spent = square_linf(
            ctx, x, objective, eps=p.eps, queries=p.queries, p_init=p.p_init,
            generator=generator, mask=mask,
        )  # fmt: skip
        return Outcome(images, spent, budget=p.eps, norm="linf")
