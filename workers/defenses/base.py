"""The contract every defense (adversarial-training method) follows.

A defense is a training objective: given a batch of ``[N, C, H, W]`` images in ``[0, 1]``
and labels in the head's convention (see :mod:`models.heads`), it returns the scalar loss
to minimize. The training loop (:mod:`workers.defenses.training`) owns the optimizer, the
schedule, data order, checkpoints and model selection; a subclass writes only the
objective, and reaches the inner maximization (PGD, L-infinity) through
:meth:`Defense.attack`, which puts the model in eval mode and restores it in ``finally``.

All budgets are in **[0, 1] pixel units** (the model wrapper normalizes inside), so
``eps=4/255`` is four grey levels of an 8-bit image.

Parameters are the catalogue's frozen pydantic models (:mod:`app.core.catalogue.defenses`,
which the API validates with too). :class:`TrainingParams` holds what every method
shares (epochs, learning rate and schedule, optimizer, batch size, weight decay,
``from_scratch``, the validation attack used for model selection); each method's
``Params`` subclass adds its own fields and defaults.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from app.core.catalogue.defenses import (
    DEFAULT_EVAL_EPS,
    AdversarialParams,
    Beta,
    Eps,
    Probability,
    Steps,
    TrainingParams,
)
from app.core.catalogue.limits import in_range, validate_model
from models.errors import InvalidParametersError
from models.wrapper import DiagnosticModel

LossFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class DefenseRandom:
    """The random streams a defense may draw from (seeded by the training loop).

    Attributes:
        cpu: CPU generator for scalar draws (which batches are replaced, budgets).
        attack: generator on the model's device for PGD random starts.
    """

    cpu: torch.Generator
    attack: torch.Generator


class Defense(ABC):
    """Base class: ``loss(model, x, y, rng)`` is the objective of one training batch.

    Subclasses set ``name`` and ``Params`` and implement :meth:`loss`. The model is in
    train mode when :meth:`loss` is called and must be in train mode when it returns.
    """

    name: ClassVar[str]
    Params: ClassVar[type[TrainingParams]] = TrainingParams

    def __init__(self, params: TrainingParams | None = None) -> None:
        if params is None:
            params = self.Params()
        if not isinstance(params, self.Params):
            raise InvalidParametersError(
                f"defense {self.name!r} needs {self.Params.__name__}, got {type(params).__name__}"
            )
        self.params = params

    @classmethod
    def from_params(cls, **params: Any) -> Defense:
        """Validate ``params`` into ``cls.Params``; errors become
        :class:`InvalidParametersError` with the validators' exact messages."""
        return cls(parse_params(cls.Params, params, what=f"defense {cls.name!r}"))

    @abstractmethod
    def loss(
        self, model: DiagnosticModel, x: torch.Tensor, y: torch.Tensor, rng: DefenseRandom
    ) -> torch.Tensor:
        """Scalar training loss for a batch ``x`` ``[N, C, H, W]`` in [0, 1], labels ``y``."""

    @staticmethod
    def attack(
        model: DiagnosticModel,
        x: torch.Tensor,
        loss_fn: LossFn,
        *,
        eps: float | torch.Tensor,
        steps: int | torch.Tensor,
        step_size: float | torch.Tensor,
        rng: DefenseRandom,
    ) -> torch.Tensor:
        """L-infinity PGD with a uniform random start that maximizes ``loss_fn(model(x'))``
        over ``||x' - x||_inf <= eps``, ``x'`` in [0, 1]; returns detached ``[N, C, H, W]``.

        The model runs in eval mode during the attack (as in the TRADES and MART reference
        code), so BatchNorm statistics are neither used from the adversarial batch nor
        updated by the attack's forward passes; train mode is restored in ``finally``.
        Per-sample ``eps``/``steps``/``step_size`` may be ``[N]`` tensors.
        """
        from workers.attacks.functional import pgd

        was_training = model.training
        model.eval()
        try:
            with torch.enable_grad():
                adv = pgd(
                    model,
                    x,
                    loss_fn,
                    eps=eps,
                    step_size=step_size,
                    steps=steps,
                    norm="linf",
                    random_start=True,
                    generator=rng.attack,
                )
        finally:
            model.train(was_training)
        return adv.detach()


def parse_params(cls: type[TrainingParams], params: dict[str, Any], *, what: str) -> Any:
    """``cls(**params)`` with pydantic errors turned into one
    :class:`InvalidParametersError` whose message lists every problem."""
    return validate_model(cls, params, what)


__all__ = [
    "DEFAULT_EVAL_EPS", "AdversarialParams", "Beta", "Defense", "DefenseRandom", "Eps",
    "LossFn", "Probability", "Steps", "TrainingParams", "in_range", "parse_params",
]
