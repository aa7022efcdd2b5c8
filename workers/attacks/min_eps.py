"""Minimum-eps search: the smallest PGD budget that fools each image (robustness curves).

For each image, PGD is first run at ``eps_max``; where it succeeds, the budget is bisected
``search_steps`` times between the largest budget that failed and the smallest that
succeeded (success judged after 8-bit quantization within the budget being tried). The
result's ``norm_found`` is that smallest budget per image (0 for images the model already
gets wrong, ``inf`` where ``eps_max`` is not enough); its images are the adversarial
examples found at that budget. Every run is :func:`workers.attacks.functional.pgd` with
per-image budgets and step ``2.5 * eps / steps``, so a whole batch bisects together.

The precision after ``k`` steps is ``eps_max / 2**k``; budgets are pixel units of ``[0, 1]``
images, L-infinity or L2. A robustness curve is ``(norm_found <= eps).mean()`` over eps.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from app.core.catalogue.attacks import MinEpsParams
from models.card import Head
from workers.attacks import functional as F
from workers.attacks.base import Attack
from workers.attacks.context import AttackContext
from workers.attacks.objectives import Objective
from workers.attacks.registry import get_attack, register
from workers.attacks.result import Outcome


@register
class MinEps(Attack[MinEpsParams]):
    """Per-image smallest successful PGD budget, by bisection."""

    name: ClassVar[str] = "min_eps"
    params_model: ClassVar[type[MinEpsParams]] = MinEpsParams
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
        with torch.no_grad():
            outputs = ctx.forward(x)
        already = objective.success(outputs)
        images = x.clone()
        lower = torch.zeros(n, device=x.device)
        upper = torch.where(already, 0.0, torch.full((n,), p.eps_max, device=x.device))
        found = already.clone()
        iterations = torch.zeros(n, dtype=torch.long, device=x.device)

        def attempt(index: Tensor, eps: Tensor, *, keep_failures: bool) -> Tensor:
            sub = objective.subset(index)
            sub_mask = mask[index] if mask is not None and mask.shape[0] == n else mask

            def loss_fn(out: Tensor) -> Tensor:
                return sub.loss(out).sum()

            adv = F.pgd(
                ctx.forward, x[index], loss_fn,
                eps=eps, step_size=2.5 * eps / p.steps, steps=p.steps, norm=p.norm,
                random_start=p.random_start, generator=generator, mask=sub_mask,
                should_stop=ctx.should_stop,
            )  # fmt: skip
            final, out = ctx.evaluate(adv, x[index], eps, p.norm)
            success = sub.success(out)
            iterations[index] += p.steps
            # The first run (at eps_max) also keeps its failures: the best images there are.
            chosen = torch.ones_like(success) if keep_failures else success
            images[index[chosen]] = final[chosen]
            outputs[index[chosen]] = out[chosen]
            return success

        todo = (~already).nonzero().flatten()
        if todo.numel() and p.eps_max > 0:
            success = attempt(todo, upper[todo], keep_failures=True)
            found[todo] = success
        for _ in range(p.search_steps):
            todo = (found & ~already).nonzero().flatten()
            if todo.numel() == 0:
                break
            mid = (lower[todo] + upper[todo]) / 2.0
            success = attempt(todo, mid, keep_failures=False)
            upper[todo] = torch.where(success, mid, upper[todo])
            lower[todo] = torch.where(success, lower[todo], mid)
        norm_found = torch.where(found, upper, torch.full_like(upper, float("inf")))
        return Outcome(
            images, iterations, budget=upper, norm=p.norm, outputs=outputs, norm_found=norm_found
        )


def min_eps(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    *,
    eps_max: float,
    steps: int = 20,
    search_steps: int = 8,
    norm: F.Norm = "linf",
    target: int | str | None = None,
    finding: int | str | None = None,
    quantize: bool = True,
    seed: int = 0,
    mask: Tensor | None = None,
    generator: torch.Generator | None = None,
    head: Head | str | None = None,
    should_stop: F.ShouldStop | None = None,
) -> Tensor:
    """``[N]`` smallest PGD budget that fools each image (``inf`` where ``eps_max`` does
    not; 0 where the clean image is already wrong). See :class:`MinEps`."""
    attack = get_attack(
        "min_eps", eps_max=eps_max, steps=steps, search_steps=search_steps, norm=norm,
        target=target, finding=finding, quantize=quantize, seed=seed,
    )  # fmt: skip
    result = attack(model, images, labels, mask=mask, generator=generator, head=head,
                    should_stop=should_stop)
    assert result.norm_found is not None
    return result.norm_found
