"""Classification metrics shared by the analyses, on numpy arrays, head-aware.

Conventions (those of :mod:`models.heads`):

- ``probs``: ``[N, K]`` probabilities in [0, 1], one column per card label (a binary-logit
  model reports both classes).
- ``labels``: single-label -> ``[N]`` integer class indices; multi-label -> ``[N, K]`` 0/1.
- predictions: single-label -> argmax class ``[N]``; multi-label -> ``probs >= thresholds``
  (the card's per-finding thresholds, 0.5 by default), ``[N, K]`` 0/1.

Undefined values (an AUROC without positives, a rate over zero images) are ``nan`` here and
``null`` in the JSON report.

Bootstrap intervals resample the images with replacement. A resample is drawn as a row of
multinomial counts ``w`` (how often each image is drawn), so every statistic is a weighted
statistic of the original arrays and ``B`` resamples are one ``[B, N]`` matrix operation
(no Python loop over resamples). The same seed gives the same resamples to every statistic,
so the intervals of clean and adversarial metrics are paired.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Literal

import numpy as np

from workers.analyses.stats import nanmean

Task = Literal["single-label", "multi-label"]
#: Bootstrap statistic: weights ``[B, N]`` (resample counts) -> values ``[B]`` (nan = undefined).
Statistic = Callable[[np.ndarray], np.ndarray]

_BOOT_CHUNK_ELEMENTS = 2_000_000


# --------------------------------------------------------------------------- predictions


def predictions(
    probs: np.ndarray, task: str, thresholds: np.ndarray | list[float] | None = None
) -> np.ndarray:
    """Predicted labels: argmax ``[N]`` (single-label) or thresholded 0/1 ``[N, K]``."""
    probs = np.asarray(probs, dtype=np.float64)
    if task == "multi-label":
        t = _thresholds(thresholds, probs.shape[1])
        return (probs >= t).astype(np.int8)
    return probs.argmax(axis=1)


def _thresholds(thresholds: np.ndarray | list[float] | None, k: int) -> np.ndarray:
    if thresholds is None:
        return np.full(k, 0.5)
    t = np.asarray(thresholds, dtype=np.float64).reshape(-1)
    if t.shape[0] != k:
        raise ValueError(f"expected {k} thresholds, got {t.shape[0]}")
    return t


def correct(pred: np.ndarray, labels: np.ndarray, task: str) -> np.ndarray:
    """Boolean ``[N]``: right class, or (multi-label) every finding right."""
    if task == "multi-label":
        return np.all(np.asarray(pred) == np.asarray(labels).astype(pred.dtype), axis=1)
    return np.asarray(pred) == np.asarray(labels).astype(np.int64)


def one_hot(labels: np.ndarray, k: int) -> np.ndarray:
    """``[N]`` class indices -> ``[N, K]`` 0/1 (one-vs-rest view of a single-label task)."""
    out = np.zeros((labels.shape[0], k), dtype=np.int8)
    out[np.arange(labels.shape[0]), labels.astype(np.int64)] = 1
    return out


def binary_matrix(values: np.ndarray, task: str, k: int) -> np.ndarray:
    """Labels or predictions as ``[N, K]`` 0/1, whatever the task."""
    values = np.asarray(values)
    if task == "multi-label":
        return values.astype(np.int8)
    return one_hot(values, k)


# --------------------------------------------------------------------------- point metrics


def accuracy_definition(task: str) -> str:
    """What "accuracy" means for ``task``, as reports state it."""
    if task == "multi-label":
        return "exact match: every finding right"
    return "top-1: the predicted class is the true class"


def accuracy(pred: np.ndarray, labels: np.ndarray, task: str) -> float:
    """Share of images predicted right (multi-label: exact match over all findings)."""
    c = correct(pred, labels, task)
    return float(c.mean()) if c.size else float("nan")


def sensitivity_specificity(
    pred_bin: np.ndarray, true_bin: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per-column sensitivity (TP / P) and specificity (TN / N) of ``[N, K]`` 0/1 arrays.

    For a single-label task pass one-hot matrices: the columns are one-vs-rest per class.
    Columns without positives (negatives) get a nan sensitivity (specificity).
    """
    pred_b = np.asarray(pred_bin).astype(bool)
    true_b = np.asarray(true_bin).astype(bool)
    pos = true_b.sum(axis=0)
    neg = (~true_b).sum(axis=0)
    tp = (pred_b & true_b).sum(axis=0)
    tn = (~pred_b & ~true_b).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        sens = np.where(pos > 0, tp / np.maximum(pos, 1), np.nan)
        spec = np.where(neg > 0, tn / np.maximum(neg, 1), np.nan)
    return sens.astype(np.float64), spec.astype(np.float64)


def balanced_accuracy(pred: np.ndarray, labels: np.ndarray, task: str, k: int) -> float:
    """Single-label: mean recall over the classes present (sklearn's definition).

    Multi-label: mean over findings of ``(sensitivity + specificity) / 2``, each finding's
    own balanced accuracy, over the findings where both are defined (a finding with only
    positives or only negatives counts its one defined rate).
    """
    if np.asarray(labels).shape[0] == 0:
        return float("nan")
    if task == "multi-label":
        sens, spec = sensitivity_specificity(pred, labels)
        both = np.stack([sens, spec])
        defined = ~np.isnan(both)
        with np.errstate(invalid="ignore"):
            per = np.where(defined, both, 0.0).sum(axis=0) / defined.sum(axis=0)
        return nanmean(per)
    labels = np.asarray(labels).astype(np.int64)
    sens, _ = sensitivity_specificity(one_hot(np.asarray(pred), k), one_hot(labels, k))
    return nanmean(sens)



def weighted_auroc(scores: np.ndarray, positive: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUROC under per-image weights, for ``B`` weightings at once.

    Args:
        scores: ``[N]`` scores (higher = more positive).
        positive: ``[N]`` booleans.
        weights: ``[B, N]`` non-negative weights (bootstrap counts; ones for the plain AUROC).

    Returns:
        ``[B]``: the probability that a (weighted) random positive scores above a random
        negative, ties counting one half (the Mann-Whitney statistic); nan where a weighting
        has no positive or no negative mass.
    """
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive).astype(bool)
    weights = np.atleast_2d(np.asarray(weights))
    if weights.dtype.kind != "f":
        weights = weights.astype(np.float64)
    neg_idx = np.flatnonzero(~positive)
    pos_idx = np.flatnonzero(positive)
    neg_idx = neg_idx[np.argsort(scores[neg_idx], kind="stable")]
    neg_scores = scores[neg_idx]
    # The negatives below a positive are a prefix of the sorted negatives, whatever the
    # weights: only a cumulative sum per weighting is needed, no sort per resample.
    lo = np.searchsorted(neg_scores, scores[pos_idx], side="left")
    hi = np.searchsorted(neg_scores, scores[pos_idx], side="right")
    cum = np.zeros((weights.shape[0], neg_idx.size + 1), dtype=weights.dtype)
    np.cumsum(weights[:, neg_idx], axis=1, out=cum[:, 1:])
    pos_w = weights[:, pos_idx]
    credit = cum[:, lo] + cum[:, hi]  # twice (negatives below + half of the tied ones)
    wins = 0.5 * np.einsum("bn,bn->b", pos_w, credit, dtype=np.float64)
    total_pos = pos_w.sum(axis=1, dtype=np.float64)
    total_neg = cum[:, -1].astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = wins / (total_pos * total_neg)
    return np.where((total_pos > 0) & (total_neg > 0), auc, np.nan)


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """The AUROC of one score column; nan without both classes."""
    n = np.asarray(scores).shape[0]
    if n == 0:
        return float("nan")
    return float(weighted_auroc(scores, positive, np.ones((1, n)))[0])


def per_label_auroc(probs: np.ndarray, labels: np.ndarray, task: str) -> np.ndarray:
    """``[K]`` AUROC per finding (multi-label) or one-vs-rest per class (single-label)."""
    probs = np.asarray(probs, dtype=np.float64)
    k = probs.shape[1]
    truth = binary_matrix(labels, task, k).astype(bool)
    return np.array([auroc(probs[:, j], truth[:, j]) for j in range(k)], dtype=np.float64)


def mean_confidence_wrong(probs: np.ndarray, labels: np.ndarray, task: str,
                          thresholds: np.ndarray | list[float] | None = None) -> float:
    """How sure the model is when it is wrong.

    Single-label: the mean probability of the predicted class over misclassified images.
    Multi-label: over every wrong finding decision, the probability of the decision taken
    (``p`` for a false positive, ``1 - p`` for a false negative). nan when nothing is wrong.
    """
    probs = np.asarray(probs, dtype=np.float64)
    pred = predictions(probs, task, thresholds)
    if task == "multi-label":
        wrong = pred != np.asarray(labels).astype(pred.dtype)
        conf = np.where(pred == 1, probs, 1.0 - probs)
        return float(conf[wrong].mean()) if wrong.any() else float("nan")
    wrong = pred != np.asarray(labels).astype(np.int64)
    conf = probs.max(axis=1)
    return float(conf[wrong].mean()) if wrong.any() else float("nan")


def per_image_loss(probs: np.ndarray, labels: np.ndarray, task: str) -> np.ndarray:
    """``[N]`` loss of each image from its probabilities, in nats.

    Single-label: cross-entropy of the true class, ``-log p[y]`` (a binary-logit model
    reports both classes, so this is its binary cross-entropy too). Multi-label: the binary
    cross-entropy averaged over the findings. Probabilities are clipped to ``[1e-12, 1]``
    so a saturated wrong answer has a large finite loss.
    """
    p = np.clip(np.asarray(probs, dtype=np.float64), 1e-12, 1.0)
    if task == "multi-label":
        y = np.asarray(labels).astype(np.float64)
        q = np.clip(1.0 - np.asarray(probs, dtype=np.float64), 1e-12, 1.0)
        return -(y * np.log(p) + (1.0 - y) * np.log(q)).mean(axis=1)
    y_idx = np.asarray(labels).astype(np.int64)
    return -np.log(p[np.arange(p.shape[0]), y_idx])


def changed(pred_a: np.ndarray, pred_b: np.ndarray, task: str) -> np.ndarray:
    """Boolean ``[N]``: the prediction differs (multi-label: any finding decision differs)."""
    if task == "multi-label":
        return np.any(np.asarray(pred_a) != np.asarray(pred_b), axis=1)
    return np.asarray(pred_a) != np.asarray(pred_b)


# --------------------------------------------------------------------------- bootstrap


def bootstrap_weights(n: int, n_boot: int, seed: int) -> Iterator[np.ndarray]:
    """Chunks of resample counts, ``[b, n]`` float32, ``n_boot`` rows in all.

    Row ``r`` counts how often each image is drawn in ``n`` draws with replacement.
    Deterministic for ``(n, n_boot, seed)``: every statistic bootstrapped with the same
    seed sees the same resamples, which pairs clean and adversarial intervals. Counts are
    exact in float32 (below 2**24).
    """
    rng = np.random.default_rng(seed)
    chunk = max(1, _BOOT_CHUNK_ELEMENTS // max(n, 1))
    done = 0
    while done < n_boot:
        b = min(chunk, n_boot - done)
        draws = rng.integers(0, n, size=(b, n)) + (np.arange(b) * n)[:, None]
        counts = np.bincount(draws.ravel(), minlength=b * n).reshape(b, n)
        yield counts.astype(np.float32)
        done += b


def bootstrap_distribution(
    statistic: Statistic,
    n: int,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    weights: Iterable[np.ndarray] | None = None,
) -> np.ndarray:
    """``[n_boot]`` values of ``statistic`` over bootstrap resamples (nan = undefined).

    ``weights`` may pass the chunks of :func:`bootstrap_weights` already drawn (to reuse
    them across statistics); they are drawn from ``(n, n_boot, seed)`` otherwise.
    """
    if n == 0 or n_boot <= 0:
        return np.empty(0)
    chunks = weights if weights is not None else bootstrap_weights(n, n_boot, seed)
    return np.concatenate([statistic(w) for w in chunks])


def percentile_interval(values: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """The percentile interval of a bootstrap distribution, ignoring undefined resamples."""
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[~np.isnan(finite)]
    if finite.size == 0:
        return (float("nan"), float("nan"))
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(finite, [alpha, 1.0 - alpha])
    return (float(lo), float(hi))


def bootstrap_ci(
    statistic: Statistic,
    n: int,
    *,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    weights: Iterable[np.ndarray] | None = None,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic`` (see :func:`bootstrap_distribution`)."""
    return percentile_interval(
        bootstrap_distribution(statistic, n, n_boot=n_boot, seed=seed, weights=weights),
        confidence,
    )


def accuracy_statistic(correct_mask: np.ndarray) -> Statistic:
    """Bootstrap statistic of the share of ``True`` in ``correct_mask`` ``[N]``."""
    c = np.asarray(correct_mask, dtype=np.float64)

    def stat(w: np.ndarray) -> np.ndarray:
        return (w @ c) / w.sum(axis=1, dtype=np.float64)

    return stat


def mean_auroc_statistic(probs: np.ndarray, truth_bin: np.ndarray) -> Statistic:
    """Bootstrap statistic of the mean over columns of the per-column AUROC.

    ``truth_bin`` is ``[N, K]`` 0/1; columns undefined in a resample are left out of that
    resample's mean (nan when none is defined).
    """
    probs = np.asarray(probs, dtype=np.float64)
    truth = np.asarray(truth_bin).astype(bool)

    def stat(w: np.ndarray) -> np.ndarray:
        per = np.stack(
            [weighted_auroc(probs[:, j], truth[:, j], w) for j in range(probs.shape[1])]
        )
        defined = ~np.isnan(per)
        count = defined.sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(count > 0, np.where(defined, per, 0.0).sum(axis=0) / count, np.nan)

    return stat


def auroc_statistic(scores: np.ndarray, positive: np.ndarray) -> Statistic:
    """Bootstrap statistic of one column's AUROC."""

    def stat(w: np.ndarray) -> np.ndarray:
        return weighted_auroc(scores, positive, w)

    return stat
