"""Parameters of every attack: frozen pydantic models, torch-free.

The engine builds its attacks from these models (``workers.attacks``) and the API checks
an audit's attack parameters with the same models at submission, so a typo or an absurd
value is a 422 before anything is queued. Budgets are in pixel units of ``[0, 1]`` images
and may be given as fractions (``"4/255"``). Every count has an upper bound (see
:mod:`app.core.catalogue.limits`) so a single request cannot hold a worker for days.
"""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.core.catalogue.limits import (
    MAX_BATCH_SIZE,
    MAX_FIT_EPOCHS,
    MAX_L2_EPS,
    MAX_QUERIES,
    MAX_RESTARTS,
    MAX_SEARCH_STEPS,
    MAX_STEPS,
    Fraction,
    in_range,
)

Norm = Literal["linf", "l2"]

Eps = Annotated[float, Fraction, in_range(0.0, 1.0)]
StepSize = Annotated[float, Fraction, in_range(0.0, 1.0, lo_open=True)]
Steps = Annotated[int, in_range(0, MAX_STEPS)]
PositiveSteps = Annotated[int, in_range(1, MAX_STEPS)]
Restarts = Annotated[int, in_range(1, MAX_RESTARTS)]
Epochs = Annotated[int, in_range(1, MAX_FIT_EPOCHS)]
BatchSize = Annotated[int, in_range(1, MAX_BATCH_SIZE)]
LearningRate = Annotated[float, in_range(0.0, 10.0, lo_open=True)]
Overshoot = Annotated[float, in_range(0.0, 10.0)]
Seed = Annotated[int, in_range(0, 2**31 - 1)]
SearchSteps = Annotated[int, in_range(1, MAX_SEARCH_STEPS)]
#: A budget whose range depends on the norm (checked by the model that holds it).
AnyEps = Annotated[
    float, Fraction,
    Field(description=f"[0, 1] for norm linf, [0, {MAX_L2_EPS:g}] for norm l2 (pixel units)"),
]
#: ``None`` (untargeted), ``"least-likely"``, a class index or a label name.
Target = int | str | None
#: A multi-label finding by index or name, or ``None`` for all findings.
Finding = int | str | None


def check_budget(name: str, value: float, norm: Norm) -> None:
    """``[0, 1]`` for L-infinity budgets, ``[0, MAX_L2_EPS]`` for L2 ones."""
    if norm == "linf" and not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1]")
    if norm == "l2" and not 0.0 <= value <= MAX_L2_EPS:
        raise ValueError(f"{name} must be in [0, {MAX_L2_EPS:g}]")


class AttackParams(BaseModel):
    """Parameters every attack shares.

    Attributes:
        quantize: round adversarial images to 8 bits (within the budget) before judging
            success; an adversarial PNG that no longer fools the model is no success.
        autocast: run the model under CUDA autocast (float16); ignored on the CPU.
        seed: seed of the attack's random generator when none is passed to the call.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    quantize: bool = True
    autocast: bool = False
    seed: Seed = 0


class TargetedParams(AttackParams):
    """Parameters of attacks that may be targeted or restricted to one finding.

    Attributes:
        target: ``None`` (untargeted), ``"least-likely"``, a class index or label name
            (single-label); multi-label models accept ``"least-likely"`` (every finding
            flipped) only.
        finding: multi-label only: attack (and judge success on) this finding alone.
    """

    target: Target = None
    finding: Finding = None


class NormBudgetParams(TargetedParams):
    """An ``eps`` budget in a chosen norm: ``[0, 1]`` for L-infinity, ``[0, 1000]`` for L2
    (an L2 budget in pixel units may exceed 1 on large images)."""

    norm: Norm = "linf"
    eps: AnyEps = 4 / 255

    @model_validator(mode="after")
    def _eps_in_range(self) -> Self:
        check_budget("eps", self.eps, self.norm)
        return self


class FGSMParams(TargetedParams):
    """FGSM: the L-infinity budget ``eps`` in ``[0, 1]``."""

    eps: Eps = 4 / 255


class BIMParams(NormBudgetParams):
    """BIM: ``eps`` budget, ``steps`` steps of ``step_size`` (default ``2.5 * eps / steps``)."""

    step_size: StepSize | None = None
    steps: Steps = 10

    def resolved_step(self) -> float:
        if self.step_size is not None:
            return self.step_size
        return 2.5 * self.eps / max(self.steps, 1)


class PGDParams(BIMParams):
    """PGD: BIM plus a uniform random start in the ball and ``restarts``."""

    random_start: bool = True
    restarts: Restarts = 1


ApgdLoss = Literal["ce", "dlr"]


class APGDParams(NormBudgetParams):
    """APGD: ``eps`` budget (``norm``), ``steps`` iterations, ``loss`` ``ce`` | ``dlr``."""

    steps: PositiveSteps = 100
    loss: ApgdLoss = "ce"
    restarts: Restarts = 1


class AutoAttackParams(AttackParams):
    """Cascade: APGD ``steps``, up to ``target_classes`` targeted DLR runs, Square ``queries``
    (0 skips Square). ``finding`` restricts a multi-label model to one finding."""

    eps: Eps = 4 / 255
    steps: PositiveSteps = 100
    target_classes: Annotated[int, in_range(1, 99)] = 9
    queries: Annotated[int, in_range(0, MAX_QUERIES)] = 5000
    finding: Finding = None


class SquareParams(TargetedParams):
    """Square: L-infinity ``eps``, ``queries`` per image, initial window fraction ``p_init``."""

    eps: Eps = 4 / 255
    queries: Annotated[int, in_range(1, MAX_QUERIES)] = 1000
    p_init: Annotated[float, in_range(0.0, 1.0, lo_open=True)] = 0.8


class DeepFoolParams(AttackParams):
    """DeepFool: at most ``steps`` linearizations, ``overshoot``, ``candidates`` classes."""

    norm: Norm = "l2"
    steps: PositiveSteps = 50
    overshoot: Overshoot = 0.02
    candidates: Annotated[int, in_range(1, 1000)] = 10
    finding: Finding = None


class CWParams(TargetedParams):
    """C&W L2: initial ``c``, ``search_steps`` bisections of ``steps`` Adam steps at ``lr``,
    and the margin ``confidence`` (kappa, in logits) required beyond the boundary."""

    c: Annotated[float, in_range(0.0, 1e10, lo_open=True)] = 1.0
    search_steps: SearchSteps = 5
    steps: PositiveSteps = 100
    lr: LearningRate = 0.01
    confidence: Annotated[float, in_range(0.0, 1e6)] = 0.0


class GAPParams(AttackParams):
    """GAP: L-infinity ``eps``; generator ``width`` (first-layer channels) and residual
    ``blocks``; training ``epochs``, ``batch_size`` and Adam ``lr``."""

    eps: Eps = 4 / 255
    width: Annotated[int, in_range(1, 256)] = 16
    blocks: Annotated[int, in_range(0, 32)] = 3
    epochs: Epochs = 10
    batch_size: BatchSize = 32
    lr: LearningRate = 2e-4
    finding: Finding = None


class UAPParams(NormBudgetParams):
    """UAP: ``eps`` budget in ``norm``; sign (L-infinity) or normalized (L2) ascent steps
    of ``step_size`` (default ``eps / 8``) over ``epochs`` passes of ``batch_size``."""

    step_size: StepSize | None = None
    epochs: Epochs = 5
    batch_size: BatchSize = 32

    def resolved_step(self) -> float:
        return self.step_size if self.step_size is not None else max(self.eps / 8.0, 1e-12)


class MinEpsParams(TargetedParams):
    """Bisection over PGD: ``eps_max``, PGD ``steps``, ``search_steps`` halvings."""

    norm: Norm = "linf"
    eps_max: AnyEps = 16 / 255
    steps: PositiveSteps = 20
    search_steps: Annotated[int, in_range(0, MAX_SEARCH_STEPS)] = 8
    random_start: bool = True

    @model_validator(mode="after")
    def _eps_max_in_range(self) -> Self:
        check_budget("eps_max", self.eps_max, self.norm)
        return self


#: name -> parameter model; ``workers.attacks`` registers one attack per entry.
ATTACK_PARAMS: dict[str, type[AttackParams]] = {
    "apgd": APGDParams,
    "autoattack": AutoAttackParams,
    "bim": BIMParams,
    "cw_l2": CWParams,
    "deepfool": DeepFoolParams,
    "fgsm": FGSMParams,
    "gap": GAPParams,
    "min_eps": MinEpsParams,
    "pgd": PGDParams,
    "square": SquareParams,
    "uap": UAPParams,
}
