"""Head-aware attack objectives: what an attack maximizes and when it has succeeded.

One :class:`Objective` per attacked batch translates the model's head into the quantities
every attack needs, so that no attack assumes a softmax over three or more classes:

===============  ===========================  ===============================================
head             loss maximized (untargeted)   success
===============  ===========================  ===============================================
softmax          cross-entropy of the label    predicted class != label
binary-logit     BCE of the single logit       predicted class != label
sigmoid          BCE over all findings (or     at least one finding's thresholded prediction
(multi-label)    the chosen ``finding``)       differs from its label (or the chosen one)
===============  ===========================  ===============================================

Targeted attacks minimize the loss of the target instead. Single-label targets are class
indices; success means the prediction *is* the target. For multi-label models the only
target is "every finding flipped" (``target="least-likely"``, Xu et al.'s GAP), and
success then means every finding (or the chosen one) was flipped.

Score-based attacks (Square, DeepFool, C&W) use *margins* instead: real numbers that are
negative exactly when the attack has succeeded (up to ties), built from logits so that
they stay informative where probabilities saturate. For multi-label findings the margin
is measured against the finding's decision threshold (as a logit).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from models import heads
from models.card import Head
from models.errors import InvalidParametersError, LabelMismatchError

#: Any value a ``target`` parameter may take (validated by the attack's parameters).
TargetSpec = str | int | None


@dataclass(frozen=True)
class Objective:
    """The attack objective for one batch.

    Attributes:
        head: the model's output head.
        labels: true labels, ``[N]`` class indices or ``[N, K]`` 0/1 findings.
        num_classes: number of card labels (2 for a binary-logit head).
        thresholds: ``[K]`` probability thresholds of the findings (multi-label).
        target: ``[N]`` target classes (single-label), ``[N, K]`` target findings
            (multi-label, every finding flipped), or ``None`` (untargeted).
        finding: restrict a multi-label objective to this finding index.
    """

    head: Head
    labels: Tensor
    num_classes: int
    thresholds: Tensor | None = None
    target: Tensor | None = None
    finding: int | None = None

    @property
    def targeted(self) -> bool:
        return self.target is not None

    @property
    def multilabel(self) -> bool:
        return self.head == Head.SIGMOID

    def subset(self, index: Tensor) -> Objective:
        """The objective for the images selected by ``index`` (bool mask or indices)."""
        return Objective(
            head=self.head,
            labels=self.labels[index],
            num_classes=self.num_classes,
            thresholds=self.thresholds,
            target=None if self.target is None else self.target[index],
            finding=self.finding,
        )

    def with_target(self, target: Tensor | None) -> Objective:
        return Objective(
            self.head, self.labels, self.num_classes, self.thresholds, target, self.finding
        )

    # -- differentiable losses ------------------------------------------------------------

    def true_loss(self, outputs: Tensor) -> Tensor:
        """``[N]`` head loss of the true labels (reported as ``AttackResult.loss``)."""
        return head_loss(outputs, self.labels, self.head, self.finding)

    def loss(self, outputs: Tensor) -> Tensor:
        """``[N]`` loss to maximize: the true label's loss, or minus the target's."""
        if self.target is None:
            return self.true_loss(outputs)
        return -head_loss(outputs, self.target, self.head, self.finding)

    def dlr(self, outputs: Tensor) -> Tensor:
        """``[N]`` difference-of-logits-ratio loss to maximize (Croce & Hein 2020).

        Untargeted DLR needs a softmax head with at least 3 classes; targeted DLR at
        least 4 (it divides by the gap between the first and the third/fourth logits).
        """
        check_dlr(self.head, self.num_classes, self.targeted)
        z = outputs
        top = z.sort(dim=1, descending=True).values
        z_y = z.gather(1, self.labels.view(-1, 1)).squeeze(1)
        if self.target is None:
            other = _max_other(z, self.labels)
            return -(z_y - other) / (top[:, 0] - top[:, 2] + 1e-12)
        z_t = z.gather(1, self.target.view(-1, 1)).squeeze(1)
        return -(z_y - z_t) / (top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + 1e-12)

    # -- margins (score-based attacks) -----------------------------------------------------

    def margins(self, outputs: Tensor) -> Tensor:
        """``[N, M]`` untargeted margins; the attack has succeeded when any is negative.

        Softmax: ``z_y - z_j`` for every class ``j != y`` (``M = K - 1``). Binary-logit:
        the logit signed toward the label (``M = 1``). Multi-label: for each finding,
        ``(2y - 1) * (z - logit(threshold))`` (``M = K``, or 1 with ``finding``).
        """
        z = heads.as_logits(outputs, self.head)
        if self.head == Head.SOFTMAX:
            z_y = z.gather(1, self.labels.view(-1, 1))
            keep = torch.ones_like(z, dtype=torch.bool).scatter_(1, self.labels.view(-1, 1), False)
            return (z_y - z)[keep].view(z.shape[0], z.shape[1] - 1)
        if self.head == Head.BINARY_LOGIT:
            sign = self.labels.to(z.dtype).mul(2.0).sub(1.0).view(-1, 1)
            return sign * z
        per = self._finding_margins(z, self.labels)
        return per if self.finding is None else per[:, self.finding : self.finding + 1]

    def margin(self, outputs: Tensor) -> Tensor:
        """``[N]`` margin, negative exactly when the attack has succeeded (ties aside)."""
        if self.target is None:
            return self.margins(outputs).min(dim=1).values
        z = heads.as_logits(outputs, self.head)
        if self.head == Head.SOFTMAX:
            z_t = z.gather(1, self.target.view(-1, 1)).squeeze(1)
            return _max_other(z, self.target) - z_t
        if self.head == Head.BINARY_LOGIT:
            return (1.0 - 2.0 * self.target.to(z.dtype)) * z[:, 0]
        # Every finding must reach its target: the worst one decides.
        per = self._finding_margins(z, 1.0 - self.target)
        if self.finding is not None:
            return per[:, self.finding]
        return per.max(dim=1).values

    def _finding_margins(self, z: Tensor, labels: Tensor) -> Tensor:
        t = self.thresholds
        t = torch.full_like(z[0], 0.5) if t is None else t.to(z)
        offset = torch.logit(t.clamp(1e-6, 1 - 1e-6))
        return (labels.to(z.dtype) * 2.0 - 1.0) * (z - offset)

    # -- decisions -------------------------------------------------------------------------

    def predict(self, outputs: Tensor) -> Tensor:
        return heads.predict(outputs, self.head, self.thresholds)

    def wrong(self, outputs: Tensor) -> Tensor:
        """Bool ``[N]`` (single-label) or ``[N, K]`` (multi-label): prediction != label."""
        pred = self.predict(outputs)
        if self.multilabel:
            return pred != self.labels.to(pred.dtype)
        return pred != self.labels

    def flipped(self, outputs: Tensor) -> Tensor:
        """Long ``[N]``: number of findings that differ from their labels (0/1 single-label)."""
        w = self.wrong(outputs)
        return w.sum(dim=1) if w.dim() == 2 else w.long()

    def success(self, outputs: Tensor) -> Tensor:
        """Bool ``[N]``: untargeted, the prediction left the label (multi-label: at least one
        finding, or the chosen one, flipped); targeted, the prediction reached the target
        (multi-label: every finding, or the chosen one, flipped)."""
        if not self.multilabel:
            pred = self.predict(outputs)
            return pred != self.labels if self.target is None else pred == self.target
        w = self.wrong(outputs)
        if self.finding is not None:
            return w[:, self.finding]
        return w.any(dim=1) if self.target is None else w.all(dim=1)


def head_loss(outputs: Tensor, labels: Tensor, head: Head, finding: int | None = None) -> Tensor:
    """``[N]`` the loss of :func:`models.heads.loss` (same values), with gradients that do
    not vanish on confident sigmoid outputs.

    Binary cross-entropy on a logit ``z`` equals ``softplus(-(2y - 1) z)``. Autograd of the
    usual form computes ``sigmoid(z) - y``, which is exactly 0 in float32 once ``|z|`` passes
    about 17 on the right side, so an attack on a confident binary or multi-label model
    would not move at all; the softplus form keeps the (tiny, but signed) gradient.
    """
    z = heads.as_logits(outputs, head)
    if head == Head.SOFTMAX:
        return torch.nn.functional.cross_entropy(z, labels.long(), reduction="none")
    signed = z * (labels.to(z.dtype).view(z.shape[0], -1) * 2.0 - 1.0)
    per = torch.nn.functional.softplus(-signed)
    if head == Head.BINARY_LOGIT:
        return per[:, 0]
    return per.mean(dim=1) if finding is None else per[:, finding]


def _max_other(z: Tensor, exclude: Tensor) -> Tensor:
    """``[N]`` largest logit of each row other than column ``exclude[n]``."""
    masked = z.scatter(1, exclude.view(-1, 1), float("-inf"))
    return masked.max(dim=1).values


def check_dlr(head: Head, num_classes: int, targeted: bool) -> None:
    """Raise unless the DLR loss is defined for this head and class count."""
    if head != Head.SOFTMAX:
        raise InvalidParametersError(
            f"the DLR loss needs a softmax head; this model's head is {head.value!r}"
            " (use loss='ce')"
        )
    need = 4 if targeted else 3
    if num_classes < need:
        kind = "targeted" if targeted else "untargeted"
        raise InvalidParametersError(
            f"the {kind} DLR loss needs at least {need} classes; this model has {num_classes}"
            " (use loss='ce')"
        )


def check_labels(labels: Tensor, head: Head, num_classes: int, n: int) -> Tensor:
    """Validate labels against the head (conventions in :mod:`models.heads`)."""
    if head == Head.SIGMOID:
        if labels.shape != (n, num_classes):
            raise LabelMismatchError(
                f"multi-label labels must be a 0/1 tensor [{n}, {num_classes}], "
                f"got shape {tuple(labels.shape)}"
            )
        labels = labels.float()
        if bool(((labels != 0) & (labels != 1)).any()):
            raise LabelMismatchError("multi-label labels must be 0 or 1")
        return labels
    if labels.shape != (n,) or labels.dtype.is_floating_point:
        raise LabelMismatchError(
            f"single-label labels must be an integer tensor [{n}] of class indices, "
            f"got {labels.dtype} of shape {tuple(labels.shape)}"
        )
    labels = labels.long()
    if n and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise LabelMismatchError(f"class indices must be in [0, {num_classes - 1}]")
    return labels


def resolve_target(
    spec: TargetSpec,
    *,
    head: Head,
    labels: Tensor,
    label_names: tuple[str, ...] | None,
    num_classes: int,
    clean_outputs: Tensor | None,
) -> Tensor | None:
    """The target tensor for a ``target`` parameter.

    - ``None``: untargeted.
    - ``"least-likely"``: single-label, the class the model finds least likely on the clean
      image (never the true label); multi-label, every finding flipped (``1 - labels``).
    - an int or a label name: that class for every image (single-label only).
    """
    if spec is None:
        return None
    if spec == "least-likely":
        if head == Head.SIGMOID:
            return 1.0 - labels
        assert clean_outputs is not None
        probs = heads.probabilities(clean_outputs, head)
        probs = probs.scatter(1, labels.view(-1, 1), float("inf"))
        return probs.argmin(dim=1)
    if head == Head.SIGMOID:
        raise InvalidParametersError(
            "a class target applies to single-label models; for a multi-label model use "
            "target='least-likely' (every finding flipped) or finding=<name> "
        )
    if isinstance(spec, str):
        if label_names is None or spec not in label_names:
            valid = ", ".join(label_names or ())
            raise InvalidParametersError(
                f"unknown target label {spec!r}; valid: 'least-likely', {valid}"
                if valid
                else f"unknown target label {spec!r}: the model has no label names",
            )
        index = label_names.index(spec)
    else:
        index = int(spec)
    if not 0 <= index < num_classes:
        raise InvalidParametersError(f"target must be in [0, {num_classes - 1}], got {index}")
    return torch.full_like(labels, index)


def resolve_finding(
    spec: int | str | None, *, head: Head, label_names: tuple[str, ...] | None, num_classes: int
) -> int | None:
    """Index of the ``finding`` parameter (multi-label only)."""
    if spec is None:
        return None
    if head != Head.SIGMOID:
        raise InvalidParametersError("finding applies to multi-label (sigmoid) models only")
    if isinstance(spec, str):
        if label_names is None or spec not in label_names:
            valid = ", ".join(label_names or ())
            raise InvalidParametersError(f"unknown finding {spec!r}; valid: {valid}")
        return label_names.index(spec)
    if not 0 <= spec < num_classes:
        raise InvalidParametersError(f"finding must be in [0, {num_classes - 1}], got {spec}")
    return spec
