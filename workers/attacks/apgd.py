"""Auto-PGD (APGD).

Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks", ICML 2020. PGD with momentum (0.75) and a step size that starts at
``2 * eps`` and halves, per image, at checkpoints where the loss stopped improving or
oscillates (the step restarts from the best point so far). Budgets are L-infinity
(``eps`` in ``[0, 1]``) or L2, in pixel units of ``[0, 1]`` images.

Losses: ``ce`` is the head's loss (cross-entropy, BCE over findings, or BCE of the single
logit) and works for every head. ``dlr``, the difference-of-logits ratio, is scale
invariant but only defined for softmax heads with at least 3 classes (untargeted) or 4
classes (targeted); other models raise :class:`models.errors.InvalidParametersError`.
With ``restarts > 1`` each restart runs only on images still robust after quantization.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from app.core.catalogue.attacks import ApgdLoss, APGDParams
from workers.attacks import functional as F
from workers.attacks.base import Attack
from workers.attacks.context import AttackContext, Best, run_on_robust
from workers.attacks.objectives import Objective, check_dlr
from workers.attacks.registry import register
from workers.attacks.result import Outcome


def _surface_start(x: Tensor, eps: float, norm: F.Norm, generator: torch.Generator | None,
                   mask: Tensor | None) -> Tensor:
    """A random point on the surface of the ``eps`` ball around ``x`` (Croce & Hein's
    initialization), clipped to ``[0, 1]``."""
    view = (-1, *([1] * (x.dim() - 1)))
    noise = F.draw_noise(tuple(x.shape), x, generator, normal=norm == "l2")
    if norm == "linf":
        noise = noise * 2.0 - 1.0
        noise = noise / noise.flatten(1).abs().amax(1).clamp_min(1e-12).view(view)
    else:
        noise = noise / (F.l2_norms(noise).view(view) + 1e-12)
    if mask is not None:
        noise = noise * mask
    return (x + eps * noise).clamp_(0.0, 1.0)


def _to_halve(window: Tensor, k: int, rho: float, reduced_last: Tensor, best_last: Tensor,
              best: Tensor) -> Tensor:
    """Images whose step to halve at a checkpoint: the loss went up in at most ``rho`` of
    the last ``k`` steps, or the best loss did not improve since a checkpoint that kept
    the step. ``window`` is the ``[k + 1, N]`` loss history since the last checkpoint."""
    increases = (window[1:] > window[:-1]).sum(0)
    return (increases <= k * rho) | (~reduced_last & (best_last >= best))


def apgd(
    ctx: AttackContext,
    x: Tensor,
    objective: Objective,
    *,
    eps: float,
    norm: F.Norm,
    steps: int,
    loss: ApgdLoss,
    generator: torch.Generator | None,
    mask: Tensor | None = None,
    rho: float = 0.75,
) -> Tensor:
    """One APGD run on ``x`` ``[N, C, H, W]``; returns the adversarial images (for each
    image the last iterate that fooled the model, else the highest-loss iterate), clipped
    to ``[0, 1]`` and within ``eps``, not quantized. Uses ``steps + 1`` gradients."""
    n = x.shape[0]
    view = (-1, *([1] * (x.dim() - 1)))
    loss_of = objective.loss if loss == "ce" else objective.dlr

    def grad_at(x_adv: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x_adv.requires_grad_(True)
        out = ctx.forward(x_adv)
        values = loss_of(out)
        (grad,) = torch.autograd.grad(values.sum(), x_adv)
        x_adv.requires_grad_(False)
        if mask is not None:
            grad.mul_(mask)
        return values.detach(), grad, out.detach()

    def project(z: Tensor) -> Tensor:
        return (x + F.project(z - x, eps, norm)).clamp_(0.0, 1.0)

    def ascend(x_adv: Tensor, grad: Tensor, step: Tensor) -> Tensor:
        if norm == "linf":
            return project(x_adv + step * grad.sign())
        g = grad / (F.l2_norms(grad).view(view) + 1e-12)
        return project(x_adv + step * g)

    x_adv = _surface_start(x, eps, norm, generator, mask)
    # Croce & Hein's checkpoints: first after 22% of the steps, then ever closer (3% less
    # each time) down to 6%.
    n_iter2 = max(int(0.22 * steps), 1)
    n_iter_min, size_decr = max(int(0.06 * steps), 1), max(int(0.03 * steps), 1)

    loss_now, grad, out = grad_at(x_adv)
    success = objective.success(out)
    x_best_adv = x_adv.clone()
    x_best, grad_best, loss_best = x_adv.clone(), grad.clone(), loss_now.clone()
    history = torch.empty(steps + 1, n, device=x.device, dtype=loss_now.dtype)
    history[0] = loss_now
    step = torch.full((n, *([1] * (x.dim() - 1))), 2.0 * eps, device=x.device, dtype=x.dtype)
    x_old = x_adv.clone()
    loss_best_last_check = loss_best.clone()
    reduced_last_check = torch.ones(n, dtype=torch.bool, device=x.device)
    counter, k = 0, n_iter2

    for i in range(steps):
        ctx.check_stop()
        momentum = 0.75 if i > 0 else 1.0
        z = ascend(x_adv, grad, step)
        z = project(x_adv + (z - x_adv) * momentum + (x_adv - x_old) * (1.0 - momentum))
        x_old, x_adv = x_adv, z

        loss_now, grad, out = grad_at(x_adv)
        fooled = objective.success(out)
        x_best_adv = torch.where(fooled.view(view), x_adv, x_best_adv)
        success |= fooled
        history[i + 1] = loss_now
        improved = loss_now > loss_best
        x_best = torch.where(improved.view(view), x_adv, x_best)
        grad_best = torch.where(improved.view(view), grad, grad_best)
        loss_best = torch.where(improved, loss_now, loss_best)

        counter += 1
        if counter == k:
            reduce = _to_halve(history[i + 1 - k : i + 2], k, rho, reduced_last_check,
                               loss_best_last_check, loss_best)
            reduced_last_check = reduce
            loss_best_last_check = loss_best.clone()
            step = torch.where(reduce.view(view), step / 2.0, step)
            x_adv = torch.where(reduce.view(view), x_best, x_adv)
            grad = torch.where(reduce.view(view), grad_best, grad)
            counter, k = 0, max(k - size_decr, n_iter_min)

    return torch.where(success.view(view), x_best_adv, x_best)


def run_apgd(
    ctx: AttackContext,
    x: Tensor,
    objective: Objective,
    mask: Tensor | None,
    generator: torch.Generator,
    *,
    eps: float,
    norm: F.Norm,
    steps: int,
    loss: ApgdLoss,
    restarts: int = 1,
    best: Best | None = None,
) -> Best:
    """APGD with restarts on the still-robust images, merged into ``best`` when given."""

    def once(
        index: Tensor | None, x_sub: Tensor, sub: Objective, mask_sub: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        adv = apgd(
            ctx, x_sub, sub, eps=eps, norm=norm, steps=steps, loss=loss,
            generator=generator, mask=mask_sub,
        )  # fmt: skip
        return adv, torch.full((x_sub.shape[0],), steps + 1, dtype=torch.long, device=x.device)

    if best is None:
        adv, iterations = once(None, x, objective, mask)
        best = Best.evaluate(ctx, x, adv, objective, iterations, eps, norm)
        restarts -= 1
    for _ in range(restarts):
        if run_on_robust(ctx, x, objective, mask, best, once, eps, norm) == 0:
            break
    return best


@register
class APGD(Attack[APGDParams]):
    """Auto-PGD with the head's loss (``ce``) or the DLR loss (softmax, >= 3 classes)."""

    name: ClassVar[str] = "apgd"
    params_model: ClassVar[type[APGDParams]] = APGDParams

    def check_support(self, ctx: AttackContext, objective: Objective) -> None:
        if self.params.loss == "dlr":
            check_dlr(ctx.head, ctx.num_classes, objective.targeted)

    def _attack(
        self,
        ctx: AttackContext,
        x: Tensor,
        objective: Objective,
        mask: Tensor | None,
        generator: torch.Generator,
    ) -> Outcome:
        p = self.params
        best = run_apgd(
            ctx, x, objective, mask, generator,
            eps=p.eps, norm=p.norm, steps=p.steps, loss=p.loss, restarts=p.restarts,
        )  # fmt: skip
        return best.outcome(p.eps, p.norm)
