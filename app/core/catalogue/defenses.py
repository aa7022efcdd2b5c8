"""Parameters of every defense (training method): frozen pydantic models, torch-free.

The training loop (``workers.defenses``) builds each method from its model here, and the
API checks a defense job's parameters with the same model at submission. All budgets are
in **[0, 1] pixel units** (``eps=4/255`` is four grey levels of an 8-bit image).
"""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, model_validator

from app.core.catalogue.limits import MAX_BATCH_SIZE, in_range

#: Budget used to select the model of the ``clean`` baseline's epochs when none is given.
DEFAULT_EVAL_EPS = 4 / 255

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
    batch_size: Annotated[int, in_range(1, MAX_BATCH_SIZE)] = 64
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


class CleanParams(TrainingParams):
    """Training parameters only; the epoch is picked by clean validation accuracy unless
    ``select_by="robust"``, and robust accuracy is still measured at ``eval_eps`` (4/255)."""

    select_by: Literal["robust", "clean"] = "clean"


class PGDATParams(AdversarialParams):
    """``eps`` (default 4/255), ``steps`` (7), ``step_size`` (``2.5 * eps / steps``)."""


class TRADESParams(AdversarialParams):
    """``beta`` (default 6.0), ``eps`` (4/255), ``steps`` (7), ``step_size``."""

    beta: Beta = 6.0


class MAAdvTParams(AdversarialParams):
    """``beta`` (default 6.0), ``eps`` (4/255), ``steps`` (7), ``step_size``."""

    beta: Beta = 6.0


class MPAdvTParams(TrainingParams):
    """``eps_min``/``eps_max`` (0.01/0.04 in [0, 1] pixel units), ``steps_min``/
    ``steps_max`` (1/9), ``p`` (0.5), ``step_scale`` (2.5), ``draw`` (``sample``).
    Validation PGD defaults to the middle of the eps range."""

    eps_min: Eps = 0.01
    eps_max: Eps = 0.04
    steps_min: Steps = 1
    steps_max: Steps = 9
    p: Probability = 0.5
    step_scale: Annotated[float, in_range(0.0, 10.0, lo_open=True)] = 2.5
    draw: Literal["sample", "batch"] = "sample"

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.eps_min > self.eps_max:
            raise ValueError("eps_min must be <= eps_max")
        if self.steps_min > self.steps_max:
            raise ValueError("steps_min must be <= steps_max")
        return self

    def default_eval_eps(self) -> float:
        return (self.eps_min + self.eps_max) / 2


class NoiseParams(TrainingParams):
    """Gaussian data augmentation for randomized smoothing (Cohen, Rosenfeld, Kolter,
    "Certified adversarial robustness via randomized smoothing", ICML 2019).

    Attributes:
        sigma: standard deviation of the noise in [0, 1] pixel units; train at the
            sigma you will smooth with (0.25 is one of the paper's three levels).
        p: share of each batch's images that get noise (1.0, as the paper trains).

    The epoch is picked by clean validation accuracy (``select_by="clean"``): a smoothed
    classifier is only as good as the base model on noisy images, which tracks it.
    """

    sigma: Annotated[float, in_range(0.0, 1.0, lo_open=True)] = 0.25
    p: Probability = 1.0
    select_by: Literal["robust", "clean"] = "clean"


#: method -> parameter model; ``workers.defenses`` registers one method per entry.
DEFENSE_PARAMS: dict[str, type[TrainingParams]] = {
    "clean": CleanParams,
    "maadvt": MAAdvTParams,
    "mpadvt": MPAdvTParams,
    "noise": NoiseParams,
    "pgd_at": PGDATParams,
    "trades": TRADESParams,
}
