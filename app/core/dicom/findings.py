"""A diagnosis as the results writers need it: each card label with its probability, the
threshold it was judged at, and whether it is positive.

The rule is the predict route's: multi-label (sigmoid) findings are positive at or above
the card's per-finding threshold (0.5 by default); a single-label model's top class is
positive and the others negative (its ``threshold`` is then ``None``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from models.card import ModelCard


@dataclass(frozen=True)
class Finding:
    label: str
    probability: float
    positive: bool
    threshold: float | None


@dataclass(frozen=True)
class Algorithm:
    """What IHE AI Results asks an AI result to name (TID 4019 Algorithm Identification)."""

    name: str
    version: str
    sha256: str
    model_id: str


def judge(card: ModelCard, probs: Sequence[float]) -> list[Finding]:
    probs = [min(1.0, max(0.0, float(p))) for p in probs]
    if card.task == "multi-label":
        thresholds = card.threshold_vector()
        return [Finding(label, p, p >= t, t)
                for label, p, t in zip(card.labels, probs, thresholds, strict=True)]
    top = max(range(len(probs)), key=lambda i: probs[i])
    return [Finding(label, p, i == top, None)
            for i, (label, p) in enumerate(zip(card.labels, probs, strict=True))]
