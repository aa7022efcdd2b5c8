"""Clean metrics of a diagnostic model on labelled images, by task.

- multi-label: AUROC per finding and their mean; accuracy and balanced accuracy per
  finding at the card's thresholds, averaged over the findings; exact-match accuracy.
- binary (two labels): AUROC of the second label, accuracy and balanced accuracy at 0.5.
- multi-class: accuracy, balanced accuracy (mean recall), macro one-vs-rest AUROC and the
  quadratic weighted kappa (the usual diabetic-retinopathy grading score).

Findings or classes absent from the labels get no AUROC (``None``) and are left out of
the means.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from sklearn.metrics import balanced_accuracy_score, cohen_kappa_score, roc_auc_score, roc_curve

from models.card import Task
from models.wrapper import DiagnosticModel


@torch.no_grad()
def predict_probabilities(
    model: DiagnosticModel, images: torch.Tensor, batch_size: int = 256
) -> np.ndarray:
    """``[N, K]`` probabilities of ``[N, C, H, W]`` images in [0, 1]."""
    was_training = model.training
    model.eval()
    try:
        device = model.device
        out = [
            model.probabilities(images[i : i + batch_size].to(device)).cpu()
            for i in range(0, images.shape[0], batch_size)
        ]
    finally:
        model.train(was_training)
    return torch.cat(out).numpy().astype(np.float64)


def _auroc(y: np.ndarray, score: np.ndarray) -> float | None:
    if y.min() == y.max():
        return None
    return float(roc_auc_score(y, score))


def multilabel_metrics(
    probs: np.ndarray, labels: np.ndarray, names: Sequence[str], thresholds: Sequence[float]
) -> dict[str, object]:
    labels = labels.astype(np.int64)
    pred = probs >= np.asarray(thresholds)[None, :]
    aurocs = {n: _auroc(labels[:, k], probs[:, k]) for k, n in enumerate(names)}
    accs = [(pred[:, k] == labels[:, k]).mean() for k in range(len(names))]
    baccs = [
        balanced_accuracy_score(labels[:, k], pred[:, k])
        for k in range(len(names))
        if labels[:, k].min() != labels[:, k].max()
    ]
    valid = [v for v in aurocs.values() if v is not None]
    return {
        "per_finding_auroc": aurocs,
        "mean_auroc": float(np.mean(valid)) if valid else None,
        "accuracy": float(np.mean(accs)),
        "balanced_accuracy": float(np.mean(baccs)) if baccs else None,
        "exact_match": float((pred == labels.astype(bool)).all(axis=1).mean()),
    }


def singlelabel_metrics(probs: np.ndarray, labels: np.ndarray) -> dict[str, object]:
    labels = labels.astype(np.int64)
    pred = probs.argmax(axis=1)
    k = probs.shape[1]
    out: dict[str, object] = {
        "accuracy": float((pred == labels).mean()),
        "balanced_accuracy": float(balanced_accuracy_score(labels, pred)),
    }
    if k == 2:
        out["auroc"] = _auroc(labels, probs[:, 1])
    else:
        present = np.unique(labels)
        if present.size == k:
            out["auroc"] = float(roc_auc_score(labels, probs, multi_class="ovr"))
        else:
            out["auroc"] = None
        out["quadratic_kappa"] = float(cohen_kappa_score(labels, pred, weights="quadratic"))
    return out


def metrics(
    task: Task,
    probs: np.ndarray,
    labels: np.ndarray,
    names: Sequence[str],
    thresholds: Sequence[float] | None = None,
) -> dict[str, object]:
    """The task's metrics of ``[N, K]`` probabilities against labels in the head convention."""
    if task == "multi-label":
        return multilabel_metrics(probs, labels, names, thresholds or [0.5] * len(names))
    return singlelabel_metrics(probs, labels)


def youden_thresholds(probs: np.ndarray, labels: np.ndarray) -> list[float]:
    """Per-finding thresholds maximizing sensitivity + specificity - 1 (Youden's J),
    the usual operating point when the findings' prevalences differ a lot.

    ``probs`` and ``labels`` are ``[N, K]``; one ROC curve per finding
    (``sklearn.metrics.roc_curve``, O(N log N)); a finding is positive at ``p >= t``.
    Thresholds are clipped to ``[0.01, 0.99]``; a finding without both classes keeps 0.5.
    """
    out = []
    for k in range(probs.shape[1]):
        y, p = labels[:, k] > 0.5, probs[:, k]
        if y.all() or not y.any():
            out.append(0.5)
            continue
        fpr, tpr, thresholds = roc_curve(y, p, drop_intermediate=False)
        best = int(np.argmax(tpr - fpr))  # the highest threshold among ties
        out.append(float(np.clip(thresholds[best], 0.01, 0.99)))
    return out
