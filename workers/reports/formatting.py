"""How numbers read in the HTML report: the template filters.

Each filter returns plain text; the template engine escapes it (autoescaping is on), so a
filter never builds markup.

- :func:`num`: rates and scores with 3 decimals (``0.700``), very small or large values with
  3 significant digits, integers as they are, ``None`` as an em dash.
- :func:`ci`: an interval as ``[0.512, 0.688]`` (empty when absent).
- :func:`eps`: a budget as grey levels of 255 (``4/255``), or ``0.0157 (4.00/255)`` off the
  grid.
- :func:`r2`: a correlation with 2 decimals, signed (``+0.25``).
"""

from __future__ import annotations

import math
from typing import Any

DASH = "—"


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def num(value: Any, digits: int = 3) -> str:
    """A value as a table shows it (see the module docstring)."""
    if value is None:
        return DASH
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value != 0 and (abs(value) < 10.0 ** -digits or abs(value) >= 1e5):
            return f"{value:.{digits}g}"
        return f"{value:.{digits}f}"
    return str(value)


def ci(value: Any) -> str:
    """``[lo, hi]`` of a two-number interval; empty otherwise."""
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(_number(v) for v in value):
        return f"[{num(float(value[0]))}, {num(float(value[1]))}]"
    return ""


def eps(value: Any) -> str:
    """An L-infinity budget in [0, 1] pixel units, as grey levels of 255."""
    if not _number(value):
        return DASH
    if value == 0:
        return "0"
    grey = float(value) * 255.0
    if abs(grey - round(grey)) < 1e-6:
        return f"{round(grey)}/255"
    return f"{float(value):.4f} ({grey:.2f}/255)"


def r2(value: Any) -> str:
    """A correlation or change with 2 decimals and its sign."""
    if not _number(value):
        return DASH
    return f"{float(value):+.2f}"


def pct(value: Any) -> str:
    """A share as a percentage with no decimals (``0.031`` -> ``3%``)."""
    if not _number(value):
        return DASH
    return f"{100 * float(value):.0f}%"


FILTERS = {"num": num, "ci": ci, "eps": eps, "r2": r2, "pct": pct}
