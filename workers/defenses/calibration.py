"""Per-finding decision thresholds for a hardened multi-label model.

Adversarial training changes a model's calibration: thresholds chosen for the original
model (the card's) can make every finding negative on the hardened one. The defense job
therefore chooses new thresholds on its validation split by Youden's J (sensitivity +
specificity - 1), as the zoo recipe does for its own models.
"""

from __future__ import annotations

import numpy as np
import torch

from models.wrapper import DiagnosticModel


def youden_thresholds(probs: np.ndarray, labels: np.ndarray) -> list[float]:
    """``[K]`` thresholds maximizing J per finding; 0.5 for a finding without both classes."""
    out: list[float] = []
    for k in range(probs.shape[1]):
        p, y = probs[:, k], labels[:, k] > 0.5
        if y.all() or not y.any():
            out.append(0.5)
            continue
        candidates = np.unique(p)
        pos, neg = y.sum(), (~y).sum()
        best, best_j = 0.5, -1.0
        for t in candidates:
            pred = p >= t
            j = (pred & y).sum() / pos + (~pred & ~y).sum() / neg - 1.0
            if j > best_j:
                best, best_j = float(t), float(j)
        out.append(float(np.clip(best, 0.01, 0.99)))
    return out


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
