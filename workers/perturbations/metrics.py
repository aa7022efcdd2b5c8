"""Robustness metrics for common perturbations, aware of the model head.

Stability (ImageNet-P, Hendrycks & Dietterich 2019):

- **flip probability**: the share of compared frame pairs whose prediction differs. Noise
  sequences (rule ``first``) compare every frame with the first; the others (rule
  ``consecutive``) compare frame ``t`` with frame ``t + difficulty``. Multi-label models
  flip per finding (thresholded sigmoid); the report gives each finding's rate, their mean,
  and the rate at which *any* finding flips.
- **top-k distance** (multi-class): how far the top-k ranking moves between the compared
  frames, ImageNet-P's ``top5`` distance with ``k = min(5, K - 1)``: for the classes ranked
  ``i = 0..k-1`` in the reference frame, ``sum_i |i - min(r_i, k)|`` where ``r_i`` is that
  class's 0-based rank in the other frame. ``k = K - 1`` caps it below ``K`` because with
  ``k = K`` every class is in the top-k. With two classes it reduces to the flip, so it is
  reported for three classes or more.

Corruption accuracy (ImageNet-C, MedMNIST-C): accuracy, balanced accuracy or AUROC at each
severity, the relative drop from the clean value, and means over severities and
perturbations. There is no reference model (ImageNet-C divides by AlexNet's errors), so
errors are reported as they are and relative to the clean images.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from models.card import Head
from models.heads import predict, probabilities
from workers.analyses import metrics as shared
from workers.analyses.stats import nanmean
from workers.perturbations.base import SequenceRule

#: The metrics :func:`classification_metrics` returns for every task.
METRICS = ("accuracy", "balanced_accuracy", "auroc")


def top_k_for(num_labels: int) -> int:
    """``k`` of the top-k distance: ``min(5, K - 1)`` (0 when there is a single label)."""
    return max(0, min(5, num_labels - 1))


def _compared_pairs(frames: int, rule: SequenceRule, difficulty: int) -> list[tuple[int, int]]:
    if rule == SequenceRule.FIRST:
        return [(0, t) for t in range(1, frames)]
    return [(t - difficulty, t) for t in range(difficulty, frames)]


def flip_counts(
    predictions: torch.Tensor, rule: SequenceRule | str, difficulty: int = 1
) -> tuple[torch.Tensor, int]:
    """Per-image flip counts of one sequence.

    Args:
        predictions: ``[T, N]`` class indices or ``[T, N, K]`` 0/1 findings.
        rule: ``first`` or ``consecutive`` (see the module docstring).
        difficulty: the frame stride of ``consecutive`` sequences (ignored for ``first``).

    Returns:
        ``([N] or [N, K]`` int64 counts, the number of pairs compared per image).
    """
    pairs = _compared_pairs(predictions.shape[0], SequenceRule(rule), difficulty)
    flips = torch.zeros(predictions.shape[1:], dtype=torch.int64, device=predictions.device)
    for a, b in pairs:
        flips += (predictions[a] != predictions[b]).long()
    return flips, len(pairs)


def flip_probability(
    predictions: torch.Tensor, rule: SequenceRule | str, difficulty: int = 1
) -> torch.Tensor:
    """The flip probability: a scalar (single-label) or ``[K]`` per finding (multi-label)."""
    flips, pairs = flip_counts(predictions, rule, difficulty)
    if pairs == 0:
        raise ValueError("a sequence needs more frames than its difficulty")
    return flips.double().mean(dim=0) / pairs


def top_k_distance(reference: torch.Tensor, scores: torch.Tensor, k: int) -> torch.Tensor:
    """``[N]`` ImageNet-P top-k distances between two ``[N, K]`` score rows per image."""
    ref_top = reference.argsort(dim=1, descending=True, stable=True)[:, :k]
    order = scores.argsort(dim=1, descending=True, stable=True)
    ranks = order.argsort(dim=1, stable=True)  # 0-based rank of every class
    moved = ranks.gather(1, ref_top).clamp_max(k)
    positions = torch.arange(k, device=scores.device).view(1, k)
    return (positions - moved).abs().sum(dim=1)


def sequence_top_k_distance(
    scores: torch.Tensor, rule: SequenceRule | str, k: int, difficulty: int = 1
) -> torch.Tensor:
    """``[N]`` mean top-k distance over the compared pairs of a ``[T, N, K]`` sequence."""
    pairs = _compared_pairs(scores.shape[0], SequenceRule(rule), difficulty)
    total = torch.zeros(scores.shape[1], dtype=torch.float64, device=scores.device)
    for a, b in pairs:
        total += top_k_distance(scores[a], scores[b], k).double()
    return total / len(pairs)


class FlipCounter:
    """Flip statistics of one sequence fed frame by frame (raw model outputs).

    Holds the predictions (and scores, for the top-k distance) of at most ``difficulty``
    frames, never images, so sequences of any length run in bounded memory.

    Args:
        rule: ``first`` or ``consecutive``.
        difficulty: frame stride of ``consecutive`` sequences.
        head: the model head; predictions follow it (argmax, or thresholded sigmoids).
        thresholds: ``[K]`` per-finding thresholds of a sigmoid head (0.5 when ``None``).
        top_k: ``k`` of the top-k distance, or ``None`` to skip it.
    """

    def __init__(
        self,
        rule: SequenceRule | str,
        difficulty: int,
        head: Head,
        thresholds: torch.Tensor | None = None,
        top_k: int | None = None,
    ) -> None:
        self.rule = SequenceRule(rule)
        self.difficulty = 1 if self.rule == SequenceRule.FIRST else difficulty
        self.head = head
        self.thresholds = thresholds
        self.top_k = top_k if top_k else None
        self._history: list[tuple[torch.Tensor, torch.Tensor | None]] = []
        self._flips: torch.Tensor | None = None
        self._any: torch.Tensor | None = None
        self._distance: torch.Tensor | None = None
        self.pairs = 0
        self.frames = 0

    def update(self, outputs: torch.Tensor) -> None:
        """Add the next frame's raw outputs ``[N, K]`` (``[N, 1]`` for binary-logit)."""
        pred = predict(outputs, self.head, self.thresholds).detach()
        score = probabilities(outputs, self.head).detach() if self.top_k else None
        if self.frames == 0:
            self._flips = torch.zeros(pred.shape, dtype=torch.int64, device=pred.device)
            self._any = torch.zeros(pred.shape[0], dtype=torch.int64, device=pred.device)
            if self.top_k:
                self._distance = torch.zeros(pred.shape[0], dtype=torch.float64, device=pred.device)
        if self.rule == SequenceRule.FIRST:
            if self.frames == 0:
                self._history = [(pred, score)]
            else:
                self._compare(self._history[0], (pred, score))
        else:
            if len(self._history) == self.difficulty:
                self._compare(self._history.pop(0), (pred, score))
            self._history.append((pred, score))
        self.frames += 1

    def _compare(
        self,
        ref: tuple[torch.Tensor, torch.Tensor | None],
        cur: tuple[torch.Tensor, torch.Tensor | None],
    ) -> None:
        assert self._flips is not None
        assert self._any is not None
        changed = ref[0] != cur[0]
        self._flips += changed.long()
        self._any += (changed.any(dim=1) if changed.dim() == 2 else changed).long()
        if self._distance is not None and self.top_k:
            assert ref[1] is not None
            assert cur[1] is not None
            self._distance += top_k_distance(ref[1], cur[1], self.top_k).double()
        self.pairs += 1

    @property
    def flips(self) -> np.ndarray:
        """``[N]`` (single-label) or ``[N, K]`` (multi-label) int64 flip counts."""
        if self._flips is None:
            raise ValueError("no frame was added")
        return self._flips.cpu().numpy()

    @property
    def any_flips(self) -> np.ndarray:
        """``[N]`` counts of compared pairs where any label changed (= ``flips`` for
        single-label models)."""
        if self._any is None:
            raise ValueError("no frame was added")
        return self._any.cpu().numpy()

    @property
    def top_k_distance_sum(self) -> np.ndarray | None:
        """``[N]`` sums of top-k distances over the compared pairs, or ``None``."""
        return None if self._distance is None else self._distance.cpu().numpy()


# --- corruption accuracy ----------------------------------------------------------------


def classification_metrics(
    probs: np.ndarray,
    labels: np.ndarray,
    task: str,
    thresholds: list[float] | np.ndarray | None = None,
) -> dict[str, float]:
    """Metrics of ``[N, K]`` probabilities, with the definitions of the ``quantitative``
    section (:mod:`workers.analyses.metrics`) so the two sections agree on clean images.

    ``accuracy`` (multi-label: every finding right), ``balanced_accuracy`` (mean recall over
    the classes present; multi-label: mean per-finding (sensitivity + specificity) / 2),
    ``auroc`` (mean one-vs-rest AUROC per label; for two classes the AUROC itself) and, for
    multi-label, ``finding_accuracy`` (share of finding decisions right). Undefined values
    are ``nan``.
    """
    pred = shared.predictions(probs, task, thresholds)
    out = {
        "accuracy": shared.accuracy(pred, labels, task),
        "balanced_accuracy": shared.balanced_accuracy(pred, labels, task, probs.shape[1]),
        "auroc": nanmean(shared.per_label_auroc(probs, labels, task)),
    }
    if task == "multi-label":
        out["finding_accuracy"] = float((pred == np.asarray(labels).astype(pred.dtype)).mean())
    return out


def changed_share(
    clean_probs: np.ndarray,
    probs: np.ndarray,
    task: str,
    thresholds: list[float] | np.ndarray | None = None,
) -> float:
    """Share of images whose prediction differs from the clean image's (multi-label: any
    finding decision differs): the perturbation's fooling rate."""
    a = shared.predictions(clean_probs, task, thresholds)
    b = shared.predictions(probs, task, thresholds)
    return float(shared.changed(a, b, task).mean())


def relative_drop(clean: float, value: float) -> float:
    """``(clean - value) / clean``; ``nan`` when undefined."""
    if not (np.isfinite(clean) and np.isfinite(value)) or clean <= 0:
        return float("nan")
    return (clean - value) / clean


def corruption_summary(
    clean: float, by_perturbation: Mapping[str, Sequence[float]]
) -> dict[str, Any]:
    """Means over severities and perturbations of one metric (higher is better).

    Args:
        clean: the metric on the clean images.
        by_perturbation: perturbation name -> the metric at each evaluated severity.

    Returns ``per_perturbation[name]`` with ``mean`` (the metric over severities),
    ``corruption_error`` (mean of ``1 - metric``), ``relative_corruption_error`` (mean of
    ``clean - metric``) and ``mean_relative_drop`` (mean of ``(clean - metric) / clean``);
    and, over the perturbations, ``mean_metric``, ``mCE`` (mean corruption error),
    ``relative_mCE`` and ``mean_relative_drop``. Undefined values are ``nan``.
    """
    per: dict[str, dict[str, float]] = {}
    for name, values in by_perturbation.items():
        v = [float(x) for x in values]
        per[name] = {
            "mean": nanmean(v),
            "corruption_error": nanmean([1.0 - x for x in v]),
            "relative_corruption_error": nanmean([clean - x for x in v]),
            "mean_relative_drop": nanmean([relative_drop(clean, x) for x in v]),
        }
    return {
        "per_perturbation": per,
        "mean_metric": nanmean([p["mean"] for p in per.values()]),
        "mCE": nanmean([p["corruption_error"] for p in per.values()]),
        "relative_mCE": nanmean([p["relative_corruption_error"] for p in per.values()]),
        "mean_relative_drop": nanmean([p["mean_relative_drop"] for p in per.values()]),
    }
