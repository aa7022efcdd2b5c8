"""Per-finding decision thresholds for a hardened multi-label model.

Adversarial training changes a model's calibration: thresholds chosen for the original
model (the card's) can make every finding negative on the hardened one. The defense job
therefore chooses new thresholds on its validation split by Youden's J (sensitivity +
specificity - 1), as the zoo recipe does for its own models.
"""

from __future__ import annotations

import torch

from models.wrapper import DiagnosticModel
from models.zoo.evaluation import youden_thresholds

__all__ = ["recalibrated_thresholds", "youden_thresholds"]


@torch.no_grad()
def recalibrated_thresholds(model: DiagnosticModel, images: torch.Tensor,
                            labels: torch.Tensor, batch_size: int = 128) -> dict[str, float]:
    model.eval()
    probs = torch.cat([
        model.probabilities(images[i:i + batch_size].to(model.device)).float().cpu()
        for i in range(0, images.shape[0], batch_size)
    ]).numpy()
    values = youden_thresholds(probs, labels.float().cpu().numpy())
    return dict(zip(model.card.labels, values, strict=True))
