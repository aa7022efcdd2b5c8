"""``clean``: plain fine-tuning on unperturbed images, the baseline every defense is
compared against (same optimizer, schedule, data order and model selection machinery)."""

from __future__ import annotations

from typing import ClassVar

import torch

from app.core.catalogue.defenses import CleanParams
from models.heads import loss as head_loss
from models.wrapper import DiagnosticModel
from workers.defenses.base import Defense, DefenseRandom, TrainingParams


class Clean(Defense):
    """Empirical risk minimization with the head's loss (cross-entropy or BCE)."""

    name: ClassVar[str] = "clean"
    Params: ClassVar[type[TrainingParams]] = CleanParams

    def loss(
        self, model: DiagnosticModel, x: torch.Tensor, y: torch.Tensor, rng: DefenseRandom
    ) -> torch.Tensor:
        return head_loss(model(x), y, model.head)
