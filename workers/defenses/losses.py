"""Head-aware divergences and the MART loss, shared by the defenses.

Shapes: ``outputs`` are the model's logits (``[N, K]``, ``[N, 1]`` for a binary-logit
head); labels follow :mod:`models.heads` (``[N]`` indices for single-label heads, ``[N, K]``
0/1 floats for the sigmoid head). Everything is computed from logits with ``log_softmax``
and ``logsigmoid`` so that saturated outputs give finite losses.

Multi-label (sigmoid) models are treated finding by finding: each finding is a two-outcome
distribution ``(p, 1 - p)``, divergences are per finding and averaged over findings, like
the binary cross-entropy of :func:`models.heads.loss`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from models.card import Head
from models.heads import as_logits


def log_probabilities(outputs: torch.Tensor, head: Head) -> torch.Tensor:
    """``[N, K]`` log-probabilities of a single-label head (binary-logit gives 2 columns)."""
    logits = as_logits(outputs, head)
    if head == Head.SOFTMAX:
        return F.log_softmax(logits, dim=1)
    if head == Head.BINARY_LOGIT:
        return torch.cat([F.logsigmoid(-logits), F.logsigmoid(logits)], dim=1)
    raise ValueError("log_probabilities is for single-label heads; use finding_log_probs")


def finding_log_probs(outputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log p, log(1 - p))``, each ``[N, K]``, of a sigmoid (multi-label) head."""
    return F.logsigmoid(outputs), F.logsigmoid(-outputs)


def kl_per_finding(clean: torch.Tensor, adv: torch.Tensor, head: Head) -> torch.Tensor:
    """KL(clean || adv) of the predicted distributions.

    Returns ``[N, 1]`` for single-label heads (KL over the classes) and ``[N, K]`` for the
    sigmoid head (binary KL of each finding).
    """
    if head == Head.SIGMOID:
        lp, lq_ = finding_log_probs(clean)
        ap, aq_ = finding_log_probs(adv)
        p = lp.exp()
        return p * (lp - ap) + (1.0 - p) * (lq_ - aq_)
    log_p = log_probabilities(clean, head)
    log_q = log_probabilities(adv, head)
    return (log_p.exp() * (log_p - log_q)).sum(dim=1, keepdim=True)


def kl_divergence(clean: torch.Tensor, adv: torch.Tensor, head: Head) -> torch.Tensor:
    """``[N]`` KL(clean || adv), averaged over findings for the sigmoid head."""
    return kl_per_finding(clean, adv, head).mean(dim=1)


def true_log_probs(outputs: torch.Tensor, labels: torch.Tensor, head: Head) -> torch.Tensor:
    """Log-probability of the true outcome: ``[N, 1]`` (single-label) or ``[N, K]``
    (sigmoid: ``log p`` where the finding is present, ``log(1 - p)`` where absent)."""
    if head == Head.SIGMOID:
        log_pos, log_neg = finding_log_probs(as_logits(outputs, head))
        target = labels.to(log_pos.dtype)
        return target * log_pos + (1.0 - target) * log_neg
    log_p = log_probabilities(outputs, head)
    return log_p.gather(1, labels.long().view(-1, 1))


def mart_loss(
    clean: torch.Tensor, adv: torch.Tensor, labels: torch.Tensor, head: Head, beta: float
) -> torch.Tensor:
    """MART (Wang et al., ICLR 2020), the paper's MAAdvT objective; a scalar.

    ``BCE(adv) + beta * mean(KL(clean || adv) * (1 - p_true(clean)))`` where the boosted
    cross-entropy ``BCE = -log p_y(adv) - log(1 - max_{k != y} p_k(adv))`` pushes the true
    class up and the strongest wrong class down. The constants 1.0001 and 1.0000001 are the
    reference implementation's guards against ``log(0)`` and zero weights.

    With two outcomes (binary-logit head, and every finding of a sigmoid head) the
    strongest wrong class is the other outcome, so the boost term is
    ``-log(1.0001 - (1 - p_y)) ~= -log p_y``: MART's objective is then about twice the
    cross-entropy plus the weighted KL, which is what the reference code computes for
    K = 2 too. Sigmoid heads use per-finding ``p_true`` (``p`` if the finding is present,
    ``1 - p`` if absent), per-finding binary KL and per-finding weights, averaged over
    findings.
    """
    log_true_adv = true_log_probs(adv, labels, head)
    p_true_adv = log_true_adv.exp()
    if head == Head.SIGMOID:
        p_wrong_adv = 1.0 - p_true_adv
    else:
        probs_adv = log_probabilities(adv, head).exp()
        masked = probs_adv.scatter(1, labels.long().view(-1, 1), -1.0)
        p_wrong_adv = masked.max(dim=1, keepdim=True).values
    boosted = -log_true_adv - torch.log(1.0001 - p_wrong_adv)
    weight = 1.0000001 - true_log_probs(clean, labels, head).exp()
    robust = kl_per_finding(clean, adv, head) * weight
    return boosted.mean(dim=1).mean() + beta * robust.mean(dim=1).mean()
