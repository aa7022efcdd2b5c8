"""The contract every defense (adversarial-training method) follows.

A defense is a training objective: given a batch of ``[N, C, H, W]`` images in ``[0, 1]``
and labels in the head's convention (see :mod:`models.heads`), it returns the scalar loss
to minimize. The training loop (:mod:`workers.defenses.training`) owns the optimizer, the
schedule, data order, checkpoints and model selection; a subclass writes only the
objective, and reaches the inner maximization (PGD, L-infinity) through
:meth:`Defense.attack`, which puts the model in eval mode and restores it in ``finally``.

All budgets are in **[0, 1] pixel units** (the model wrapper normalizes inside), so
``eps=4/255`` is four grey levels of an 8-bit image.

Parameters are frozen pydantic models. :class:`TrainingParams` holds what every method
shares (epochs, learning rate and schedule, optimizer, batch size, weight decay,
``from_scratch``, the validation attack used for model selection); each method's
``Params`` subclass adds its own fields and defaults.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict, ValidationError

from models.errors import InvalidParametersError
from models.wrapper import DiagnosticModel
from workers.params import in_range

#: Budget used to select the model of the ``clean`` baseline's epochs when none is given.
DEFAULT_EVAL_EPS = 4 / 255

LossFn = Callable[[torch.Tensor], torch.Tensor]


Eps = Annotated[float, in_range(0.0, 1.0, lo_open=True)]
Steps = Annotated[int, in_range(1, 1000)]
Beta = Annotated[float, in_range(0.0, 100.0)]
Probability = Annotated[float, in_range(0.0, 1.0)]


class TrainingParams(BaseModel):
    """What every method shares.

    Attributes:
        epochs: passes over the training split.
        lr: peak learning rate.
        schedule: ``cosine`` (per batch, down to 0), ``step`` (x0.1 after 50 % and again
            after 75 % of the epochs, as in Madry et al. and Rice et al.) or ``constant``.
        optimizer: ``sgd`` (with ``momentum``, Nesterov off) or ``adam``.
        momentum: SGD momentum (ignored by Adam).
        batch_size: training and validation batch size.
        weight_decay: L2 penalty added to the gradients (``torch.optim`` SGD/Adam semantics).
        from_scratch: re-initialize the card's allow-listed architecture (seeded) instead
            of fine-tuning the given weights.
        select_by: the validation metric that picks the returned epoch: ``robust``
            accuracy under the validation PGD (default of the adversarial methods) or
            ``clean`` accuracy (default of the ``clean`` baseline).
        eval_eps: L-infinity budget of the validation PGD in [0, 1] pixel units; ``None``
            uses the method's training budget (``4/255`` for ``clean``).
        eval_steps: iterations of the validation PGD.
        eval_step_size: its step; ``None`` uses ``2.5 * eval_eps / eval_steps``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    epochs: Annotated[int, in_range(1, 1000)] = 10
    lr: Annotated[float, in_range(0.0, 10.0, lo_open=True)] = 0.01
    schedule: Literal["cosine", "step", "constant"] = "cosine"
    optimizer: Literal["sgd", "adam"] = "sgd"
    momentum: Annotated[float, in_range(0.0, 1.0, hi_open=True)] = 0.9
    batch_size: Annotated[int, in_range(1, 4096)] = 64
    weight_decay: Annotated[float, in_range(0.0, 1.0)] = 5e-4
    from_scratch: bool = False
    select_by: Literal["robust", "clean"] = "robust"
    eval_eps: Annotated[float | None, in_range(0.0, 1.0, lo_open=True)] = None
    eval_steps: Steps = 10
    eval_step_size: Annotated[float | None, in_range(0.0, 1.0, lo_open=True)] = None

    def validation_budget(self) -> tuple[float, int, float]:
        """``(eps, steps, step_size)`` of the PGD used on the validation split."""
        eps = self.eval_eps if self.eval_eps is not None else self.default_eval_eps()
        step = self.eval_step_size
        if step is None:
            step = 2.5 * eps / self.eval_steps
        return eps, self.eval_steps, step

    def default_eval_eps(self) -> float:
        return DEFAULT_EVAL_EPS


class AdversarialParams(TrainingParams):
    """A single L-infinity PGD budget for the inner maximization.

    Attributes:
        eps: budget in [0, 1] pixel units (default ``4/255``).
        steps: PGD iterations (default 7, Madry et al.'s CIFAR recipe).
        step_size: ``None`` uses ``2.5 * eps / steps`` (Madry et al.'s rule of thumb).
    """

    eps: Eps = 4 / 255
    steps: Steps = 7
    step_size: Annotated[float | None, in_range(0.0, 1.0, lo_open=True)] = None

    def attack_step(self) -> float:
        return self.step_size if self.step_size is not None else 2.5 * self.eps / self.steps

    def default_eval_eps(self) -> float:
        return self.eps


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
    try:
        return cls(**params)
    except ValidationError as exc:
        problems: list[str] = []
        errors: list[dict[str, Any]] = []
        for err in exc.errors(include_url=False):
            field = ".".join(str(p) for p in err["loc"]) or "params"
            if err["type"] == "extra_forbidden":
                valid = ", ".join(sorted(cls.model_fields))
                message = f"unknown parameter {field!r} for {what}; valid: {valid}"
            elif err["type"] == "value_error":
                message = str(err["msg"]).removeprefix("Value error, ")
            else:
                message = f"{field}: {err['msg']}"
            problems.append(message)
            errors.append({"field": field, "message": message})
        raise InvalidParametersError("; ".join(problems), {"errors": errors}) from exc
