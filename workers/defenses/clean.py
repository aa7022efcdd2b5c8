"""``clean``: plain fine-tuning on unperturbed images, the baseline every defense is
compared against (same optimizer, schedule, data order and model selection machinery)."""

from __future__ import annotations

from typing import ClassVar, Literal

import torch

from models.heads import loss as head_loss
from models.wrapper import DiagnosticModel
from workers.defenses.base import Defense, DefenseRandom, TrainingParams


class CleanParams(TrainingParams):
    """Training parameters only; the epoch is picked by clean validation accuracy unless
    ``select_by="robust"``, and robust accuracy is still measured at ``eval_eps`` (4/255)."""

    select_by: Literal["robust", "clean"] = "clean"


class Clean(Defense):
    """Empirical risk minimization with the head's loss (cross-entropy or BCE)."""

    name: ClassVar[str] = "clean"
    Params: ClassVar[type[TrainingParams]] = CleanParams

    def loss(
        self, model: DiagnosticModel, x: torch.Tensor, y: torch.Tensor, rng: DefenseRandom
    ) -> torch.Tensor:
        return head_loss(model(x), y, model.head)
