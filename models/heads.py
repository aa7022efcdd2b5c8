"""Head-aware probabilities, predictions and losses.

Label conventions used throughout RobustDx:

- single-label (``softmax`` and ``binary-logit`` heads): ``labels`` is a ``LongTensor [N]`` of
  class indices into the card's labels.
- multi-label (``sigmoid`` head): ``labels`` is a ``FloatTensor [N, K]`` of 0/1 findings.

``probabilities`` always returns ``[N, K]`` with K the number of card labels, so a binary-logit
model reports both classes like a softmax model does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from models.card import Head


def as_logits(outputs: torch.Tensor, head: Head) -> torch.Tensor:
    """Shape raw outputs as ``[N, K]`` (``[N, 1]`` for a binary-logit head)."""
    if head == Head.BINARY_LOGIT:
        return outputs.reshape(outputs.shape[0], 1)
    if outputs.dim() != 2:
        raise ValueError(f"expected [N, K] outputs, got shape {tuple(outputs.shape)}")
    return outputs


def probabilities(outputs: torch.Tensor, head: Head) -> torch.Tensor:
    """``[N, K]`` probabilities: softmax rows, independent sigmoids, or ``[1 - p, p]``."""
    logits = as_logits(outputs, head)
    if head == Head.SOFTMAX:
        return logits.softmax(dim=1)
    p = torch.sigmoid(logits)
    if head == Head.BINARY_LOGIT:
        return torch.cat([1.0 - p, p], dim=1)
    return p


def predict(
    outputs: torch.Tensor, head: Head, thresholds: torch.Tensor | None = None
) -> torch.Tensor:
    """Predicted labels in the label convention of the head (indices or 0/1 matrix)."""
    probs = probabilities(outputs, head)
    if head == Head.SIGMOID:
        t = thresholds if thresholds is not None else torch.full_like(probs[0], 0.5)
        return (probs >= t.to(probs)).to(probs.dtype)
    return probs.argmax(dim=1)


def loss(
    outputs: torch.Tensor,
    labels: torch.Tensor,
    head: Head,
    reduction: str = "mean",
    finding: int | None = None,
) -> torch.Tensor:
    """The training/attack loss that matches the head.

    Softmax: cross-entropy. Sigmoid: binary cross-entropy averaged over the findings (or
    only ``finding`` when given). Binary-logit: BCE on the single logit.
    With ``reduction="none"`` the result is ``[N]``.
    """
    logits = as_logits(outputs, head)
    if head == Head.SOFTMAX:
        return F.cross_entropy(logits, labels.long(), reduction=reduction)
    if head == Head.BINARY_LOGIT:
        per = _bce(logits[:, 0], labels.to(logits.dtype))
    else:
        target = labels.to(logits.dtype)
        if finding is not None:
            per = _bce(logits[:, finding], target[:, finding])
        else:
            per = _bce(logits, target).mean(1)
    if reduction == "none":
        return per
    if reduction == "sum":
        return per.sum()
    return per.mean()


def _bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy as ``y softplus(-z) + (1 - y) softplus(z)``.

    Equal to ``binary_cross_entropy_with_logits``, but its gradient stays non-zero on
    confident logits: that one computes ``sigmoid(z) - y``, which is exactly 0 in float32
    once ``|z|`` passes about 17, so attacks (and adversarial training) would not move a
    confidently classified image at all.
    """
    return target * F.softplus(-logits) + (1.0 - target) * F.softplus(logits)


def correct(
    outputs: torch.Tensor, labels: torch.Tensor, head: Head, thresholds: torch.Tensor | None = None
) -> torch.Tensor:
    """Boolean ``[N]``: right class (single-label) or every finding right (multi-label)."""
    pred = predict(outputs, head, thresholds)
    if head == Head.SIGMOID:
        return (pred == labels.to(pred.dtype)).all(dim=1)
    return pred == labels.long()
