"""Look-up of defenses by name."""

from __future__ import annotations

from typing import Any

from app.core.catalogue.defenses import DEFENSE_PARAMS
from models.errors import InvalidParametersError
from workers.defenses.base import Defense
from workers.defenses.clean import Clean
from workers.defenses.maadvt import MAAdvT
from workers.defenses.mpadvt import MPAdvT
from workers.defenses.noise import Noise
from workers.defenses.pgd_at import PGDAT
from workers.defenses.trades import TRADES

DEFENSES: dict[str, type[Defense]] = {
    cls.name: cls for cls in (Clean, PGDAT, TRADES, MPAdvT, MAAdvT, Noise)
}
# Each method trains with the catalogue's parameter model, the one the API validates with.
for _name, _cls in DEFENSES.items():
    if DEFENSE_PARAMS.get(_name) is not _cls.Params:
        raise RuntimeError(f"defense {_name!r} does not use the catalogue's parameter model")


def list_defenses() -> list[str]:
    """The registered method names, sorted."""
    return sorted(DEFENSES)


def defense_class(name: str) -> type[Defense]:
    """The class registered under ``name``; unknown names list the valid ones."""
    try:
        return DEFENSES[name]
    except KeyError:
        valid = ", ".join(list_defenses())
        raise InvalidParametersError(
            f"unknown defense {name!r}; valid: {valid}", {"valid": list_defenses()}
        ) from None


def get_defense(name: str, **params: Any) -> Defense:
    """An instance of defense ``name`` with validated ``params`` (defaults filled in).

    Raises:
        InvalidParametersError: unknown name, unknown parameter or a value out of range.
    """
    return defense_class(name).from_params(**params)
