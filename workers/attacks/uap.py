"""Universal adversarial perturbation (UAP): one perturbation for a whole dataset.

Moosavi-Dezfooli, Fawzi, Fawzi, Frossard, "Universal adversarial perturbations", CVPR 2017
introduced the idea (with a per-image DeepFool loop). We fit it the batched way of
Shafahi, Najibi, Xu, Dickerson, Davis, Goldstein, "Universal Adversarial Training", AAAI
2020: projected stochastic gradient ascent on the batch loss with respect to the single
perturbation ``[C, H, W]``, with each image's loss clipped at ``9`` so images already
fooled stop dominating. Budgets are L-infinity (``eps`` in ``[0, 1]``) or L2, in pixel
units of ``[0, 1]`` images; the loss follows the head (targets as for PGD).

Fit once with :meth:`UAP.fit`, :meth:`UAP.save` it (safetensors), :meth:`UAP.load` it on
every shard; attacking adds it to each image (inside the mask when given) and clips.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import ClassVar, Self

import numpy as np
import torch
from torch import Tensor, nn

from app.core.catalogue.attacks import UAPParams
from models.card import Head
from models.errors import ConflictError, InvalidModelFileError
from workers.attacks import functional as F
from workers.attacks.context import AttackContext, frozen, model_device, model_fingerprint
from workers.attacks.fitted import FitSource, FittedAttack
from workers.attacks.functional import ShouldStop
from workers.attacks.objectives import Objective
from workers.attacks.registry import register
from workers.attacks.result import Outcome

logger = logging.getLogger(__name__)

#: Per-image loss ceiling during the fit (Shafahi et al.'s clipped loss).
LOSS_CLIP = 9.0


@register
class UAP(FittedAttack[UAPParams]):
    """A single image-agnostic perturbation fitted on a dataset."""

    name: ClassVar[str] = "uap"
    params_model: ClassVar[type[UAPParams]] = UAPParams

    def __init__(self, params: UAPParams) -> None:
        super().__init__(params)
        #: ``[1, C, H, W]`` fitted perturbation.
        self.delta: Tensor | None = None

    def fit(
        self,
        model: nn.Module,
        images: Tensor | FitSource,
        labels: Tensor | None = None,
        *,
        epochs: int | None = None,
        batch_size: int | None = None,
        generator: torch.Generator | None = None,
        mask: Tensor | None = None,
        head: Head | str | None = None,
        should_stop: ShouldStop | None = None,
    ) -> Self:
        p = self.params
        run = self.setup_fit(model, images, labels, epochs=epochs, batch_size=batch_size,
                             generator=generator, mask=mask, head=head,
                             should_stop=should_stop)
        ctx = run.ctx
        step = p.resolved_step()
        first = run.source.take(np.arange(1))[0]
        delta = torch.zeros(1, *first.shape[1:], device=ctx.device)
        with frozen(model), torch.enable_grad():
            for epoch in range(run.epochs):
                fooled, count = 0, 0
                for xb, yb, mb in run.batches():
                    objective = self.objective(ctx, xb, yb)
                    delta.requires_grad_(True)
                    shift = delta if mb is None else delta * mb
                    outputs = ctx.forward((xb + shift).clamp(0.0, 1.0))
                    loss = objective.loss(outputs).clamp(max=LOSS_CLIP).sum()
                    (grad,) = torch.autograd.grad(loss, delta)
                    delta.requires_grad_(False)
                    if p.norm == "linf":
                        delta.add_(grad.sign(), alpha=step)
                    else:
                        delta.add_(grad / (grad.norm() + 1e-12), alpha=step)
                    delta = F.project(delta, p.eps, p.norm)
                    fooled += int(objective.success(outputs.detach()).sum())
                    count += xb.shape[0]
                logger.info("uap epoch %d/%d: fooling rate %.3f", epoch + 1, run.epochs,
                            fooled / count)
        self.delta = delta.detach()
        self.fitted_for = model_fingerprint(model)
        return self

    def _attack(
        self,
        ctx: AttackContext,
        x: Tensor,
        objective: Objective,
        mask: Tensor | None,
        generator: torch.Generator,
    ) -> Outcome:
        self._require_fitted(ctx.model)
        assert self.delta is not None
        if tuple(self.delta.shape[1:]) != tuple(x.shape[1:]):
            raise ConflictError(
                f"the UAP was fitted on {tuple(self.delta.shape[1:])} images, "
                f"not {tuple(x.shape[1:])}"
            )
        delta = self.delta.to(x.device)
        if mask is not None:
            delta = delta * mask
        x_adv = (x + delta).clamp_(0.0, 1.0)
        zeros = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        return Outcome(x_adv, zeros, budget=self.params.eps, norm=self.params.norm)

    def save(self, path: str | Path) -> None:
        from safetensors.torch import save_file

        if self.delta is None or self.fitted_for is None:
            raise ConflictError("attack 'uap' has no fitted perturbation to save: call fit()")
        save_file(
            {"perturbation": self.delta.detach().cpu().contiguous()},
            str(path),
            metadata=self._metadata(),
        )

    def load(self, path: str | Path, model: nn.Module | None = None) -> Self:
        from safetensors import SafetensorError
        from safetensors.torch import load_file, safe_open

        try:
            with safe_open(str(path), framework="pt") as handle:
                metadata = dict(handle.metadata() or {})
            state = load_file(str(path))
        except (SafetensorError, OSError) as exc:
            raise InvalidModelFileError("cannot read the fitted UAP state") from exc
        self._check_metadata(metadata, model)
        delta = state.get("perturbation")
        if delta is None or delta.dim() != 4 or delta.shape[0] != 1:
            raise InvalidModelFileError("the fitted UAP state holds no [1, C, H, W] perturbation")
        if model is not None:
            delta = delta.to(model_device(model))
        self.delta = delta
        self.fitted_for = metadata["model"]
        return self
