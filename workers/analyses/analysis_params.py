"""Parameters of the analyses: validation and the keys the audit runner injects.

An analysis reads two kinds of entries from ``BatchContext.params`` and
``SummaryContext.params``:

- its own parameters, from the audit request (validated by a frozen pydantic model, with
  errors raised as :class:`~models.errors.InvalidParametersError`);
- entries the audit runner injects (:data:`INJECTED_KEYS`), never given by users:

  ``attacks`` (summary): ``{attack key: {"name": str, "eps": float | None, "params": dict}}``
  ``attack_stats`` (batch): ``{attack key: {"linf": [N], "l2": [N], "success": [N]}}``
  ``min_eps`` (batch): ``[N]`` per-image minimum eps (``inf`` = not fooled within the search)
  ``seed`` (summary): the audit's seed, for bootstrap resampling.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel

from app.core.catalogue.analyses import INJECTED_KEYS
from app.core.catalogue.limits import validate_model

P = TypeVar("P", bound=BaseModel)


def parse_params(model: type[P], params: Mapping[str, Any] | None, analysis: str) -> P:
    """Validate the user parameters of ``analysis`` (injected keys are left out)."""
    own = {k: v for k, v in (params or {}).items() if k not in INJECTED_KEYS}
    return validate_model(model, own, f"analysis {analysis!r}")


__all__ = ["INJECTED_KEYS", "parse_params"]
