"""``mpadvt``: the paper's multi-perturbation adversarial training (Xu et al., Medical
Image Analysis 2021, "Defenses").

For each training batch, with probability ``p`` the clean batch is replaced by PGD
examples whose L-infinity budget is drawn from ``U[eps_min, eps_max]`` and whose number of
steps from ``U{steps_min, ..., steps_max}``, so the model sees many perturbation strengths;
otherwise the batch is used as is. The loss is the head's (cross-entropy, or BCE).

Units: RobustDx budgets are in [0, 1] pixel units. The paper quotes eps "about 0.01 to
0.04", but its code perturbs and clips *normalized* images with per-batch clip bounds, so
its numbers are not pixel units; we keep the same numeric range in pixel units
(0.01 to 0.04 is 2.6/255 to 10.2/255, the span of the paper's PGD budgets, 1/255 to
10/255).

``draw="sample"`` (default) draws a budget and a step count per image, so every replaced
batch mixes strengths; ``draw="batch"`` draws one pair per batch, as a literal reading of
the paper. The step size is ``step_scale * eps / steps`` per image (2.5: Madry et al.'s
rule of thumb; with one step this is FGSM from a random start).
"""

from __future__ import annotations

from typing import ClassVar

import torch

from app.core.catalogue.defenses import MPAdvTParams
from models.heads import loss as head_loss
from models.wrapper import DiagnosticModel
from workers.defenses.base import (
    Defense,
    DefenseRandom,
    TrainingParams,
)


class MPAdvT(Defense):
    name: ClassVar[str] = "mpadvt"
    Params: ClassVar[type[TrainingParams]] = MPAdvTParams

    def loss(
        self, model: DiagnosticModel, x: torch.Tensor, y: torch.Tensor, rng: DefenseRandom
    ) -> torch.Tensor:
        p = self.params
        assert isinstance(p, MPAdvTParams)
        head = model.head
        replace = torch.rand((), generator=rng.cpu).item() < p.p
        if not replace:
            return head_loss(model(x), y, head)
        count = x.shape[0] if p.draw == "sample" else 1
        u = torch.rand(count, generator=rng.cpu, dtype=torch.float64)
        eps = (p.eps_min + (p.eps_max - p.eps_min) * u).to(torch.float32)
        steps = torch.randint(p.steps_min, p.steps_max + 1, (count,), generator=rng.cpu)
        step_size = p.step_scale * eps / steps.to(torch.float32)

        def attack_loss(outputs: torch.Tensor) -> torch.Tensor:
            return head_loss(outputs, y, head, reduction="sum")

        if p.draw == "sample":
            dev = x.device
            adv = self.attack(
                model,
                x,
                attack_loss,
                eps=eps.to(dev),
                steps=steps.to(dev),
                step_size=step_size.to(dev),
                rng=rng,
            )
        else:
            adv = self.attack(
                model,
                x,
                attack_loss,
                eps=float(eps[0]),
                steps=int(steps[0]),
                step_size=float(step_size[0]),
                rng=rng,
            )
        return head_loss(model(adv), y, head)
