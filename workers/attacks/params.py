"""Typed, validated attack parameters.

Every attack declares a frozen pydantic model derived from :class:`AttackParams`. Budgets
are in pixel units of ``[0, 1]`` images and may be given as fractions (``"4/255"``) so an
audit request can say what it means. Validation errors carry exact messages
(``"eps must be in [0, 1]"``); :func:`validate_params` turns pydantic's error into
:class:`models.errors.InvalidParametersError` at the boundary.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal, Self, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    ValidationError,
    model_validator,
)

from models.errors import InvalidParametersError

Norm = Literal["linf", "l2"]


def parse_fraction(value: Any) -> Any:
    """Accept ``"4/255"`` (and plain numeric strings) for a float parameter."""
    if isinstance(value, str) and "/" in value:
        num, _, den = value.partition("/")
        try:
            return float(num) / float(den)
        except (ValueError, ZeroDivisionError):
            raise ValueError(f"cannot read {value!r} as a fraction") from None
    return value


def _unit_interval(name: str) -> Callable[[float], float]:
    def check(value: float) -> float:
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be in [0, 1]")
        return value

    return check


def _positive(name: str) -> Callable[[float], float]:
    def check(value: float) -> float:
        if not value > 0.0:
            raise ValueError(f"{name} must be > 0")
        return value

    return check


def _at_least(name: str, low: int) -> Callable[[int], int]:
    def check(value: int) -> int:
        if value < low:
            raise ValueError(f"{name} must be >= {low}")
        return value

    return check


def _non_negative(name: str) -> Callable[[float], float]:
    def check(value: float) -> float:
        if value < 0:
            raise ValueError(f"{name} must be >= 0")
        return value

    return check


Eps = Annotated[float, BeforeValidator(parse_fraction), AfterValidator(_unit_interval("eps"))]
StepSize = Annotated[float, BeforeValidator(parse_fraction), AfterValidator(_positive("step_size"))]
Steps = Annotated[int, AfterValidator(_at_least("steps", 0))]
PositiveSteps = Annotated[int, AfterValidator(_at_least("steps", 1))]
Restarts = Annotated[int, AfterValidator(_at_least("restarts", 1))]
Epochs = Annotated[int, AfterValidator(_at_least("epochs", 1))]
BatchSize = Annotated[int, AfterValidator(_at_least("batch_size", 1))]
LearningRate = Annotated[float, AfterValidator(_positive("lr"))]
Overshoot = Annotated[float, AfterValidator(_non_negative("overshoot"))]
Seed = Annotated[int, AfterValidator(_at_least("seed", 0))]
#: ``None`` (untargeted), ``"least-likely"``, a class index or a label name.
Target = int | str | None
#: A multi-label finding by index or name, or ``None`` for all findings.
Finding = int | str | None


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


P = TypeVar("P", bound=AttackParams)


def validate_params(model: type[P], attack: str, params: Mapping[str, Any]) -> P:
    """Build ``model`` from ``params``; raise :class:`InvalidParametersError` listing what is
    wrong and, for unknown names, which parameters are valid."""
    try:
        return model(**params)
    except ValidationError as exc:
        valid = ", ".join(sorted(model.model_fields))
        messages: list[str] = []
        for error in exc.errors():
            field = ".".join(str(part) for part in error["loc"])
            if error["type"] == "extra_forbidden":
                messages.append(
                    f"unknown parameter {field!r} for attack {attack!r}; valid: {valid}"
                )
                continue
            message = str(error["msg"]).removeprefix("Value error, ")
            if field and not message.startswith(field.split(".")[0]):
                message = f"{field}: {message}"
            messages.append(message)
        raise InvalidParametersError(
            "; ".join(messages), details={"attack": attack, "errors": messages}
        ) from exc


#: A budget whose range depends on the norm (checked by the model that holds it).
AnyEps = Annotated[float, BeforeValidator(parse_fraction)]


def check_budget(name: str, value: float, norm: Norm) -> None:
    """``[0, 1]`` for L-infinity budgets, ``>= 0`` for L2 ones."""
    if norm == "linf" and not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1]")
    if norm == "l2" and not value >= 0.0:
        raise ValueError(f"{name} must be >= 0")


class NormBudgetParams(TargetedParams):
    """An ``eps`` budget in a chosen norm: ``[0, 1]`` for L-infinity, ``>= 0`` for L2
    (an L2 budget in pixel units may exceed 1 on large images)."""

    norm: Norm = "linf"
    eps: AnyEps = 4 / 255

    @model_validator(mode="after")
    def _eps_in_range(self) -> Self:
        check_budget("eps", self.eps, self.norm)
        return self
