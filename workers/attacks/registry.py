"""Attacks by name.

``register`` is applied to each attack class in its own module; :func:`get_attack` builds
one from validated parameters, and unknown names or parameters raise
:class:`models.errors.InvalidParametersError` saying what is valid.
"""

from __future__ import annotations

from typing import Any, TypeVar

from app.core.catalogue.attacks import ATTACK_PARAMS
from models.errors import InvalidParametersError
from workers.attacks.base import Attack
from workers.attacks.params import validate_params

_REGISTRY: dict[str, type[Attack[Any]]] = {}

A = TypeVar("A", bound=type[Attack[Any]])


def register(cls: A) -> A:
    """Class decorator: make ``cls`` available as ``get_attack(cls.name)``."""
    name = cls.name
    if ATTACK_PARAMS.get(name) is not cls.params_model:
        # The API validates with the catalogue's model; the engine must build from it too.
        raise ValueError(f"attack {name!r} does not use the catalogue's parameter model")
    if name in _REGISTRY and _REGISTRY[name] is not cls:
        raise ValueError(f"attack {name!r} is already registered")
    _REGISTRY[name] = cls
    return cls


def list_attacks() -> list[str]:
    """Names of every registered attack, sorted."""
    return sorted(_REGISTRY)


def attack_class(name: str) -> type[Attack[Any]]:
    """The class registered as ``name``."""
    try:
        return _REGISTRY[name]
    except KeyError:
        valid = ", ".join(list_attacks())
        raise InvalidParametersError(
            f"unknown attack {name!r}; valid: {valid}", details={"valid": list_attacks()}
        ) from None


def get_attack(name: str, **params: Any) -> Attack[Any]:
    """An attack built from ``params`` (validated; eps in pixel units of [0, 1] images)."""
    cls = attack_class(name)
    return cls(validate_params(cls.params_model, name, params))


def describe_attacks() -> dict[str, dict[str, Any]]:
    """Per attack: supported heads, whether it needs a fit, and its parameter JSON schema."""
    return {
        name: {
            "heads": sorted(h.value for h in cls.heads),
            "requires_fit": cls.requires_fit,
            "minimum_norm": cls.minimum_norm,
            "params": cls.params_model.model_json_schema(),
        }
        for name, cls in sorted(_REGISTRY.items())
    }
