"""Ranges of every engine parameter, and the validators that state them.

A bound is declared once, with :func:`in_range`, and shows up twice: in the error message
(``"steps must be in [0, 1000]"``, a round bracket for an open end) and in the JSON schema
(``minimum``/``maximum``, ``exclusiveMinimum``/``exclusiveMaximum``), so the API's OpenAPI
document states the same limits the engine enforces.

The upper bounds exist so that one request cannot occupy a worker for days: they are
generous for real audits (torchattacks' and AutoAttack's defaults sit far inside them) and
finite for hostile ones.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    ValidationError,
    ValidationInfo,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

from models.errors import InvalidParametersError

#: Iterations of any gradient attack (PGD, BIM, APGD, C&W, DeepFool, the min-eps search).
MAX_STEPS = 1000
#: Random restarts of PGD and APGD.
MAX_RESTARTS = 20
#: Model queries per image of the score-based attacks (Square, AutoAttack's Square stage).
MAX_QUERIES = 10_000
#: Bisection steps of C&W's constant and of the minimum-eps search.
MAX_SEARCH_STEPS = 30
#: Training passes of fitted attacks (GAP, UAP).
MAX_FIT_EPOCHS = 100
#: Batch sizes of attacks, fitting and training.
MAX_BATCH_SIZE = 4096
#: eps values one attack entry may list (each is a setting of its own).
MAX_EPS_VALUES = 16
#: Attack settings (entries times eps values) in one audit.
MAX_SETTINGS = 64
#: An L2 budget in pixel units; a full 3x512x512 image at distance 1 everywhere is ~887.
MAX_L2_EPS = 1000.0


def _fmt(value: float) -> str:
    return f"{value:g}"


@dataclass(frozen=True)
class Range:
    """``lo..hi`` (each end closed unless ``*_open``), enforced after the type check with
    the message ``"<field> must be in [lo, hi]"`` and published in the JSON schema."""

    lo: float
    hi: float
    lo_open: bool = False
    hi_open: bool = False

    def text(self) -> str:
        left, right = ("(" if self.lo_open else "["), (")" if self.hi_open else "]")
        return f"{left}{_fmt(self.lo)}, {_fmt(self.hi)}{right}"

    def contains(self, value: float) -> bool:
        if isinstance(value, float) and math.isnan(value):
            return False
        ok_lo = value > self.lo if self.lo_open else value >= self.lo
        ok_hi = value < self.hi if self.hi_open else value <= self.hi
        return ok_lo and ok_hi

    def check(self, value: Any, info: ValidationInfo) -> Any:
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            return value
        if not self.contains(value):
            raise ValueError(f"{info.field_name} must be in {self.text()}")
        return value

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.with_info_after_validator_function(self.check, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        out = handler(schema)
        target = out
        # ``int | None`` renders as anyOf; put the bounds on the numeric branch.
        for branch in out.get("anyOf", []):
            if branch.get("type") in ("integer", "number"):
                target = branch
        target["exclusiveMinimum" if self.lo_open else "minimum"] = self.lo
        target["exclusiveMaximum" if self.hi_open else "maximum"] = self.hi
        return out


def in_range(lo: float, hi: float, *, lo_open: bool = False, hi_open: bool = False) -> Range:
    """The :class:`Range` ``lo..hi`` (use inside ``Annotated``)."""
    return Range(lo, hi, lo_open, hi_open)


def parse_fraction(value: Any) -> Any:
    """Accept ``"4/255"`` (and plain numeric strings) for a float parameter."""
    if isinstance(value, str) and "/" in value:
        num, _, den = value.partition("/")
        try:
            return float(num) / float(den)
        except (ValueError, ZeroDivisionError):
            raise ValueError(f"cannot read {value!r} as a fraction") from None
    return value


Fraction = BeforeValidator(parse_fraction)

M = TypeVar("M", bound=BaseModel)


def validate_model(model: type[M], params: Mapping[str, Any], what: str) -> M:
    """Build ``model`` from ``params``; raise one :class:`InvalidParametersError` that
    lists every problem, naming the valid parameters when one is unknown.

    Args:
        model: the parameter model.
        params: the user's parameters.
        what: how messages name the owner, e.g. ``"attack 'pgd'"``.
    """
    try:
        return model.model_validate(dict(params))
    except ValidationError as exc:
        valid = sorted(model.model_fields)
        errors: list[dict[str, str]] = []
        for error in exc.errors(include_url=False):
            field = ".".join(str(part) for part in error["loc"])
            if error["type"] == "extra_forbidden":
                message = f"unknown parameter {field!r} for {what}; valid: {', '.join(valid)}"
            else:
                message = str(error["msg"]).removeprefix("Value error, ")
                if field and not message.startswith(field.split(".")[0]):
                    message = f"{field}: {message}"
            errors.append({"field": field or "params", "message": message})
        raise InvalidParametersError(
            "; ".join(e["message"] for e in errors),
            details={"for": what, "errors": errors, "valid": valid},
        ) from exc


__all__ = [
    "MAX_BATCH_SIZE",
    "MAX_EPS_VALUES",
    "MAX_FIT_EPOCHS",
    "MAX_L2_EPS",
    "MAX_QUERIES",
    "MAX_RESTARTS",
    "MAX_SEARCH_STEPS",
    "MAX_SETTINGS",
    "MAX_STEPS",
    "Fraction",
    "Range",
    "in_range",
    "parse_fraction",
    "validate_model",
]
