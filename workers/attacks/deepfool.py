"""DeepFool, a minimum-norm attack (L2 or L-infinity).

Moosavi-Dezfooli, Fawzi, Frossard, "DeepFool: a simple and accurate method to fool deep
neural networks", CVPR 2016. At each step the model is linearized around the current
image and the image moves to the nearest linearized decision boundary; the accumulated
perturbation is scaled by ``1 + overshoot`` to cross it.

The boundaries are the head's margins (:meth:`Objective.margins`), which makes the
method valid beyond multi-class softmax:

- softmax: ``z_y - z_j`` for the ``candidates`` classes ranked highest on the clean image
  (the original multi-class DeepFool);
- binary-logit: the single logit signed toward the label (the original binary case,
  exact for an affine model);
- multi-label: each finding's logit against its threshold; the attack moves to the
  nearest finding boundary, i.e. flips the easiest finding (untargeted success).

Success is checked on the images the attack will return (8-bit quantized by default),
so an image is only finished when its quantized version fools the model. The result's
``norm_found`` is the size of the returned perturbation in ``norm`` where it succeeded.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from app.core.catalogue.attacks import DeepFoolParams
from models.card import Head
from workers.attacks.base import Attack
from workers.attacks.context import AttackContext
from workers.attacks.objectives import Objective
from workers.attacks.registry import register
from workers.attacks.result import Outcome


@register
class DeepFool(Attack[DeepFoolParams]):
    """DeepFool on the head's margins (softmax, binary-logit and multi-label)."""

    name: ClassVar[str] = "deepfool"
    params_model: ClassVar[type[DeepFoolParams]] = DeepFoolParams
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
        columns = self._columns(ctx, x, objective)
        total = torch.zeros_like(x)
        current = x.clone()
        iterations = torch.zeros(n, dtype=torch.long, device=x.device)
        active = torch.arange(n, device=x.device)

        for it in range(p.steps + 1):
            ctx.check_stop()
            x_a = current[active].requires_grad_(True)
            margins = objective.subset(active).margins(ctx.forward(x_a))
            keep = (margins.detach() > 0).all(dim=1)
            if it == p.steps or not bool(keep.any()):
                break
            if columns is not None:
                margins = margins.gather(1, columns[active])
            active = active[keep]
            region = None if mask is None else (mask[active] if mask.shape[0] == n else mask)
            value = margins.detach()[keep].abs() + 1e-4
            # Keep only the running nearest boundary's gradient: memory stays at two
            # gradients however many candidate boundaries there are.
            best_dist = torch.full_like(value[:, 0], float("inf"))
            g = torch.zeros_like(x_a[keep])
            v = torch.zeros_like(best_dist)
            s = torch.zeros_like(best_dist)
            for j in range(margins.shape[1]):
                (grad,) = torch.autograd.grad(
                    margins[:, j].sum(), x_a, retain_graph=j < margins.shape[1] - 1
                )
                with torch.no_grad():
                    grad = grad[keep] if region is None else grad[keep] * region
                    flat = grad.flatten(1)
                    size = flat.norm(p=2, dim=1) if p.norm == "l2" else flat.abs().sum(dim=1)
                    dist = value[:, j] / (size + 1e-12)
                    nearer = dist < best_dist
                    best_dist = torch.where(nearer, dist, best_dist)
                    g = torch.where(nearer.view(view), grad, g)
                    v = torch.where(nearer, value[:, j], v)
                    s = torch.where(nearer, size, s)
            with torch.no_grad():
                # Step to the linearized boundary: -v / ||g||^2 * g (L2) or -v / ||g||_1 *
                # sign(g) (L-infinity, the dual norm).
                if p.norm == "l2":
                    step = -(v / (s**2 + 1e-12)).view(view) * g
                else:
                    step = -(v / (s + 1e-12)).view(view) * g.sign()
                total[active] += step
                iterations[active] += 1
                candidate = (x[active] + (1.0 + p.overshoot) * total[active]).clamp(0.0, 1.0)
                current[active] = ctx.finish(candidate, x[active], None, p.norm)
        return Outcome(current, iterations, budget=None, norm=p.norm)

    def _columns(self, ctx: AttackContext, x: Tensor, objective: Objective) -> Tensor | None:
        """For a softmax head with more than ``candidates + 1`` classes, the margin columns
        of the classes ranked highest on the clean image (the paper's speed-up)."""
        if ctx.head != Head.SOFTMAX or ctx.num_classes - 1 <= self.params.candidates:
            return None
        with torch.no_grad():
            z = ctx.forward(x)
        y = objective.labels.view(-1, 1)
        ranked = z.scatter(1, y, float("-inf")).argsort(dim=1, descending=True)
        ranked = ranked[:, : self.params.candidates]
        # Column j of the margins is class j for j < y and class j + 1 after it.
        return ranked - (ranked > y).long()

