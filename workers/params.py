"""The range validator shared by the engine's parameter models (attacks, analyses,
defenses), so every range error reads the same: ``"<field> must be in [lo, hi]"`` (a round
bracket for an open end). It lives in the catalogue, next to the models that use it."""

from __future__ import annotations

from app.core.catalogue.limits import Range, in_range

__all__ = ["Range", "in_range"]
