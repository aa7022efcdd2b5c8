"""Validators shared by the engine's parameter models (attacks, analyses, defenses), so
every range error reads the same: ``"<field> must be in [lo, hi]"`` (a round bracket for an
open end)."""

from __future__ import annotations

import math
from typing import Any

from pydantic import AfterValidator, ValidationInfo


def _fmt(value: float) -> str:
    return f"{value:g}"


def in_range(
    lo: float, hi: float, *, lo_open: bool = False, hi_open: bool = False
) -> AfterValidator:
    """A validator that rejects values outside ``lo..hi`` with the message
    ``"<field> must be in (lo, hi]"`` (brackets show which ends are open)."""

    def check(value: Any, info: ValidationInfo) -> Any:
        if value is None:
            return value
        ok_lo = value > lo if lo_open else value >= lo
        ok_hi = value < hi if hi_open else value <= hi
        if not (ok_lo and ok_hi and not (isinstance(value, float) and math.isnan(value))):
            left = "(" if lo_open else "["
            right = ")" if hi_open else "]"
            raise ValueError(f"{info.field_name} must be in {left}{_fmt(lo)}, {_fmt(hi)}{right}")
        return value

    return AfterValidator(check)
