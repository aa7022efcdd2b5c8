"""The one catalogue of the engine's names and parameters, shared by the API and the workers.

The API never imports the engine (``workers``), yet it must refuse an unknown attack,
analysis or defense, an unknown parameter or an out-of-range value at submission, with the
message the engine would give. So the names (:mod:`.names`) and the parameter models
(:mod:`.attacks`, :mod:`.analyses`, :mod:`.defenses`, with the ranges of :mod:`.limits`)
live here, torch-free; the engine's registries build their attacks, analyses and defenses
from these very models, and ``tests/test_layering.py`` checks that the two sides agree.

Public surface::

    ATTACK_NAMES, ANALYSIS_NAMES, DEFENSE_METHODS, PERTURBATION_NAMES, POLICY_RULES, ...
    ATTACK_PARAMS, ANALYSIS_PARAMS, DEFENSE_PARAMS        # name -> parameter model
    attack_params(name, params)    -> validated model     # InvalidParametersError otherwise
    analysis_params(name, params)  -> validated model
    defense_params(method, params) -> validated model
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from app.core.catalogue.analyses import (
    ANALYSES_WITHOUT_ATTACKS,
    ANALYSIS_PARAMS,
    INJECTED_KEYS,
)
from app.core.catalogue.attacks import ATTACK_PARAMS, AttackParams
from app.core.catalogue.defenses import DEFENSE_PARAMS, TrainingParams
from app.core.catalogue.limits import (
    MAX_EPS_VALUES,
    MAX_QUERIES,
    MAX_RESTARTS,
    MAX_SETTINGS,
    MAX_STEPS,
    validate_model,
)
from app.core.catalogue.names import (
    ANALYSIS_NAMES,
    ATTACK_NAMES,
    ATTACK_POLICY_RULES,
    BASELINE_POLICY_KEYS,
    BUDGET_POLICY_RULES,
    DATASET_FORMATS,
    DEFENSE_METHODS,
    FLAG_POLICY_RULES,
    GLOBAL_POLICY_RULES,
    MODEL_FORMATS,
    PERTURBATION_NAMES,
    POLICY_RULES,
)
from models.errors import InvalidParametersError


def _unknown(kind: str, name: str, valid: Mapping[str, Any]) -> InvalidParametersError:
    names = sorted(valid)
    return InvalidParametersError(
        f"unknown {kind} {name!r}; valid: {', '.join(names)}", details={"valid": names}
    )


def attack_params(name: str, params: Mapping[str, Any]) -> AttackParams:
    """``params`` of attack ``name`` validated (one eps value, not a list)."""
    if name not in ATTACK_PARAMS:
        raise _unknown("attack", name, ATTACK_PARAMS)
    return validate_model(ATTACK_PARAMS[name], params, f"attack {name!r}")


def analysis_params(name: str, params: Mapping[str, Any] | None) -> BaseModel:
    """``params`` of analysis ``name`` validated (the runner's injected keys left out)."""
    if name not in ANALYSIS_PARAMS:
        raise _unknown("analysis", name, ANALYSIS_PARAMS)
    own = {k: v for k, v in (params or {}).items() if k not in INJECTED_KEYS}
    return validate_model(ANALYSIS_PARAMS[name], own, f"analysis {name!r}")


def defense_params(method: str, params: Mapping[str, Any]) -> TrainingParams:
    """``params`` of defense ``method`` validated."""
    if method not in DEFENSE_PARAMS:
        raise _unknown("defense", method, DEFENSE_PARAMS)
    return validate_model(DEFENSE_PARAMS[method], params, f"defense {method!r}")


__all__ = [
    "ANALYSES_WITHOUT_ATTACKS", "ANALYSIS_NAMES", "ANALYSIS_PARAMS", "ATTACK_NAMES",
    "ATTACK_PARAMS", "ATTACK_POLICY_RULES", "BASELINE_POLICY_KEYS", "BUDGET_POLICY_RULES",
    "DATASET_FORMATS", "DEFENSE_METHODS",
    "DEFENSE_PARAMS", "FLAG_POLICY_RULES", "GLOBAL_POLICY_RULES", "INJECTED_KEYS",
    "MAX_EPS_VALUES", "MAX_QUERIES", "MAX_RESTARTS", "MAX_SETTINGS", "MAX_STEPS",
    "MODEL_FORMATS", "PERTURBATION_NAMES", "POLICY_RULES", "analysis_params",
    "attack_params", "defense_params",
]
