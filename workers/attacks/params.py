"""Typed, validated attack parameters: the catalogue's models, used by the engine.

Every attack's parameter model lives in :mod:`app.core.catalogue.attacks` (torch-free, so
the API validates with the same models at submission); this module re-exports them for the
attack modules. Budgets are in pixel units of ``[0, 1]`` images and may be given as
fractions (``"4/255"``). :func:`validate_params` turns pydantic's error into
:class:`models.errors.InvalidParametersError` at the boundary, with exact messages
(``"eps must be in [0, 1]"``, ``"steps must be in [0, 1000]"``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from app.core.catalogue.attacks import (
    AnyEps,
    AttackParams,
    BatchSize,
    Epochs,
    Eps,
    Finding,
    LearningRate,
    Norm,
    NormBudgetParams,
    Overshoot,
    PositiveSteps,
    Restarts,
    Seed,
    Steps,
    StepSize,
    Target,
    TargetedParams,
    check_budget,
)
from app.core.catalogue.limits import parse_fraction, validate_model

P = TypeVar("P", bound=AttackParams)


def validate_params(model: type[P], attack: str, params: Mapping[str, Any]) -> P:
    """Build ``model`` from ``params``; raise :class:`InvalidParametersError` listing what is
    wrong and, for unknown names, which parameters are valid."""
    return validate_model(model, params, f"attack {attack!r}")


__all__ = [
    "AnyEps", "AttackParams", "BatchSize", "Epochs", "Eps", "Finding", "LearningRate", "Norm",
    "NormBudgetParams", "Overshoot", "PositiveSteps", "Restarts", "Seed", "StepSize", "Steps",
    "Target", "TargetedParams", "check_budget", "parse_fraction", "validate_params",
]
