"""What an attack returns: :class:`AttackResult` (public) and :class:`Outcome` (what an
algorithm hands back to :meth:`workers.attacks.base.Attack.__call__`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from workers.attacks.params import Norm


@dataclass(frozen=True)
class AttackResult:
    """What an attack returns for a batch of N images (tensors on the model's device).

    Attributes:
        images: ``[N, C, H, W]`` adversarial images in ``[0, 1]`` (8-bit values when the
            attack quantizes).
        success: bool ``[N]``, judged on ``images`` (see :class:`Objective.success`):
            untargeted, the prediction left the true label (multi-label: at least one
            finding flipped); targeted, the prediction reached the target.
        linf: ``[N]`` L-infinity size of ``images - clean`` in pixel units.
        l2: ``[N]`` L2 size of ``images - clean`` in pixel units.
        iterations: long ``[N]``: gradient steps spent on the image (white-box), or model
            queries (black-box); 0 for attacks fitted beforehand (GAP, UAP).
        loss: ``[N]`` head loss of the *true* labels on ``images`` (cross-entropy, BCE over
            the findings or the chosen finding, or BCE of the single logit).
        flipped: long ``[N]``: findings whose prediction differs from the label
            (multi-label), or 1/0 (single-label).
        predictions: adversarial predictions in the label convention of the head.
        outputs: ``[N, K]`` (``[N, 1]`` binary-logit) float logits of the model on
            ``images``, from the forward that judged success; reuse them instead of
            running the model again.
        norm_found: ``[N]`` for minimum-norm attacks: the norm of the smallest successful
            perturbation found (``inf`` where none was found); ``None`` otherwise.
        attack: the attack's registry name.
        params: its parameters.
    """

    images: Tensor
    success: Tensor
    linf: Tensor
    l2: Tensor
    iterations: Tensor
    loss: Tensor
    flipped: Tensor
    predictions: Tensor
    outputs: Tensor
    norm_found: Tensor | None = None
    attack: str = ""
    params: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def success_rate(self) -> float:
        return float(self.success.float().mean()) if len(self) else 0.0

    def to_numpy(self, *, images: bool = False) -> dict[str, np.ndarray]:
        """Per-image arrays (on the CPU); the images too when ``images=True``."""
        out: dict[str, np.ndarray] = {
            "success": self.success.cpu().numpy(),
            "linf": self.linf.float().cpu().numpy(),
            "l2": self.l2.float().cpu().numpy(),
            "iterations": self.iterations.cpu().numpy(),
            "loss": self.loss.float().cpu().numpy(),
            "flipped": self.flipped.cpu().numpy(),
            "predictions": self.predictions.cpu().numpy(),
            "outputs": self.outputs.float().cpu().numpy(),
        }
        if self.norm_found is not None:
            out["norm_found"] = self.norm_found.float().cpu().numpy()
        if images:
            out["images"] = self.images.float().cpu().numpy()
        return out

    def summary(self) -> dict[str, float]:
        """Batch means, JSON-able: success rate, perturbation sizes, iterations, loss."""
        n = len(self)
        if n == 0:
            return {"n": 0.0}
        out = {
            "n": float(n),
            "success_rate": self.success_rate,
            "linf_mean": float(self.linf.float().mean()),
            "linf_max": float(self.linf.float().max()),
            "l2_mean": float(self.l2.float().mean()),
            "iterations_mean": float(self.iterations.float().mean()),
            "loss_mean": float(self.loss.float().mean()),
            "flipped_mean": float(self.flipped.float().mean()),
        }
        if self.norm_found is not None:
            finite = self.norm_found[torch.isfinite(self.norm_found)]
            out["norm_found_median"] = float(finite.median()) if finite.numel() else float("inf")
        return out


@dataclass
class Outcome:
    """What an algorithm hands back to :meth:`Attack.__call__`.

    Attributes:
        images: adversarial images in ``[0, 1]``. If ``outputs`` is given they are final
            (already quantized by :meth:`AttackContext.finish`), else the base finishes them.
        iterations: long ``[N]`` gradient steps or queries.
        budget: the budget used for quantization (float or ``[N]``), ``None`` for none.
        norm: the norm of that budget and of ``norm_found``.
        outputs: model outputs on the final ``images``, when the algorithm has them.
        norm_found: override of the minimum-norm result (e.g. the bisected eps).
    """

    images: Tensor
    iterations: Tensor
    budget: float | Tensor | None = None
    norm: Norm = "linf"
    outputs: Tensor | None = None
    norm_found: Tensor | None = None
