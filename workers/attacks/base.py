"""The attack contract: a small typed base class.

An :class:`Attack` is built from validated parameters (``get_attack(name, **params)``) and
called on a model and a batch::

    attack = get_attack("pgd", eps=4 / 255, steps=10)
    result = attack(model, images, labels)

``__call__`` does everything attacks share, so a subclass writes only its algorithm
(:meth:`Attack._attack`):

1. resolves the head (``model.head``, or ``head=`` for a plain module), the number of
   classes, the multi-label thresholds and label names;
2. validates images (``[N, C, H, W]`` float in ``[0, 1]``), labels (class indices
   ``[N]``, or 0/1 findings ``[N, K]``) and the optional mask, and moves them to the
   model's device;
3. puts the model in eval mode and turns off ``requires_grad`` on its parameters, and
   restores every module's mode and every parameter's flag in ``finally``, also on error;
4. after the algorithm, clips to ``[0, 1]``, quantizes to 8 bits within the budget
   (``quantize=True``), runs the model once more and reports success on those images.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from typing import ClassVar, Generic, TypeVar

import torch
from torch import Tensor, nn

from models.card import Head
from models.errors import InvalidParametersError
from workers.attacks import functional as F
from workers.attacks.context import (
    AttackContext,
    as_2d,
    check_images,
    check_mask,
    frozen,
    model_device,
)
from workers.attacks.objectives import Objective, check_labels, resolve_finding, resolve_target
from workers.attacks.params import AttackParams
from workers.attacks.result import AttackResult, Outcome

logger = logging.getLogger(__name__)

ALL_HEADS: frozenset[Head] = frozenset(Head)

P = TypeVar("P", bound=AttackParams)


class Attack(ABC, Generic[P]):
    """Base class of every attack.

    Class attributes:
        name: registry name.
        params_model: the frozen pydantic parameter model.
        heads: heads the attack supports (others raise :class:`InvalidParametersError`).
        requires_fit: the attack must be fitted on a dataset (``fit``/``load``) first.
        minimum_norm: the attack searches for the smallest perturbation and reports
            ``norm_found``.
    """

    name: ClassVar[str]
    params_model: ClassVar[type[AttackParams]]
    heads: ClassVar[frozenset[Head]] = ALL_HEADS
    requires_fit: ClassVar[bool] = False
    minimum_norm: ClassVar[bool] = False

    def __init__(self, params: P) -> None:
        self.params = params

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.params!r})"

    def __call__(
        self,
        model: nn.Module,
        images: Tensor,
        labels: Tensor,
        *,
        mask: Tensor | None = None,
        generator: torch.Generator | None = None,
        head: Head | str | None = None,
        should_stop: F.ShouldStop | None = None,
    ) -> AttackResult:
        """Attack a batch.

        Args:
            model: a :class:`models.wrapper.DiagnosticModel`, or any module taking
                ``[N, C, H, W]`` images in ``[0, 1]`` (then pass ``head``).
            images: ``[N, C, H, W]`` float images in ``[0, 1]``.
            labels: ``[N]`` class indices, or ``[N, K]`` 0/1 findings (multi-label).
            mask: optional ``[N, 1, H, W]`` (or ``[1, 1, H, W]``) 0/1 region the
                perturbation may touch.
            generator: random source; defaults to one seeded with ``params.seed``.
            head: the output head, overriding ``model.head``.
            should_stop: polled inside the attack's loop (every iteration); ``True``
                raises :class:`~workers.attacks.functional.AttackStoppedError` (a
                :class:`~models.errors.JobCancelledError`).
        """
        with frozen(model):
            ctx = self.context(model, images, head)
            ctx.should_stop = should_stop
            x = check_images(images, ctx.device)
            n = x.shape[0]
            y = check_labels(labels.to(ctx.device), ctx.head, ctx.num_classes, n)
            m = check_mask(mask, x)
            if generator is None:
                generator = torch.Generator(device=ctx.device).manual_seed(self.params.seed)
            objective = self.objective(ctx, x, y)
            with torch.enable_grad():
                outcome = self._attack(ctx, x, objective, m, generator)
            if outcome.outputs is None:
                final, outputs = ctx.evaluate(outcome.images, x, outcome.budget, outcome.norm)
            else:
                final, outputs = outcome.images, outcome.outputs
            return self._result(x, final, outputs, objective, outcome)

    # -- hooks for subclasses ---------------------------------------------------------------

    @abstractmethod
    def _attack(
        self,
        ctx: AttackContext,
        x: Tensor,
        objective: Objective,
        mask: Tensor | None,
        generator: torch.Generator,
    ) -> Outcome:
        """The algorithm: adversarial images for ``x`` ``[N, C, H, W]`` in ``[0, 1]``."""

    def check_support(self, ctx: AttackContext, objective: Objective) -> None:
        """Raise :class:`InvalidParametersError` for settings the model cannot support."""

    # -- shared machinery -------------------------------------------------------------------

    def context(
        self, model: nn.Module, images: Tensor | None = None, head: Head | str | None = None
    ) -> AttackContext:
        """Resolve head, class count, thresholds and device of ``model``."""
        resolved = _resolve_head(model, head)
        if resolved not in self.heads:
            supported = ", ".join(sorted(h.value for h in self.heads))
            raise InvalidParametersError(
                f"attack {self.name!r} does not support head {resolved.value!r}; "
                f"supported: {supported}"
            )
        device = model_device(model)
        label_names = getattr(model, "labels", None)
        label_names = tuple(label_names) if isinstance(label_names, (tuple, list)) else None
        if resolved == Head.BINARY_LOGIT:
            num_classes = 2
        elif label_names is not None:
            num_classes = len(label_names)
        else:
            if images is None:
                raise InvalidParametersError("cannot infer the number of classes without images")
            with torch.no_grad():
                num_classes = int(as_2d(model(images[:1].to(device).float())).shape[1])
        thresholds = getattr(model, "thresholds", None)
        if not isinstance(thresholds, Tensor) or resolved != Head.SIGMOID:
            thresholds = None
        return AttackContext(
            model=model,
            head=resolved,
            num_classes=num_classes,
            thresholds=thresholds,
            label_names=label_names,
            device=device,
            autocast=self.params.autocast,
            quantize=self.params.quantize,
        )

    def objective(self, ctx: AttackContext, x: Tensor, labels: Tensor) -> Objective:
        """The head-aware objective, with ``target`` and ``finding`` resolved."""
        target_spec = getattr(self.params, "target", None)
        finding_spec = getattr(self.params, "finding", None)
        finding = resolve_finding(
            finding_spec, head=ctx.head, label_names=ctx.label_names, num_classes=ctx.num_classes
        )
        clean = None
        if target_spec == "least-likely" and ctx.head != Head.SIGMOID:
            with torch.no_grad():
                clean = ctx.forward(x)
        target = resolve_target(
            target_spec,
            head=ctx.head,
            labels=labels,
            label_names=ctx.label_names,
            num_classes=ctx.num_classes,
            clean_outputs=clean,
        )
        objective = Objective(
            head=ctx.head,
            labels=labels,
            num_classes=ctx.num_classes,
            thresholds=ctx.thresholds,
            target=target,
            finding=finding,
        )
        self.check_support(ctx, objective)
        return objective

    def _result(
        self, x: Tensor, final: Tensor, outputs: Tensor, objective: Objective, outcome: Outcome
    ) -> AttackResult:
        with torch.no_grad():
            delta = final - x
            linf = F.linf_norms(delta)
            l2 = F.l2_norms(delta)
            success = objective.success(outputs)
            norm_found = outcome.norm_found
            if norm_found is None and self.minimum_norm:
                size = linf if outcome.norm == "linf" else l2
                norm_found = torch.where(success, size, torch.full_like(size, float("inf")))
            return AttackResult(
                images=final,
                success=success,
                linf=linf,
                l2=l2,
                iterations=outcome.iterations.long(),
                loss=objective.true_loss(outputs),
                flipped=objective.flipped(outputs),
                predictions=objective.predict(outputs),
                outputs=outputs,
                norm_found=norm_found,
                attack=self.name,
                params=self.params.model_dump(),
            )


def _resolve_head(model: nn.Module, head: Head | str | None) -> Head:
    value = head if head is not None else getattr(model, "head", None)
    if value is None:
        raise InvalidParametersError(
            "the model has no head; pass head= (one of: "
            + ", ".join(h.value for h in Head)
            + ")"
        )
    try:
        return Head(value)
    except ValueError:
        valid = ", ".join(h.value for h in Head)
        raise InvalidParametersError(f"unknown head {value!r}; valid: {valid}") from None
