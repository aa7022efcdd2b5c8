"""Audit requests. The API checks the shape and the names (from :mod:`app.core.catalogue`,
which a test keeps equal to the engine's registries); the worker's engine checks each
attack's parameters in full when the job starts (the API never imports the engine)."""

from __future__ import annotations

from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from app.core.catalogue import ANALYSIS_NAMES, ATTACK_NAMES


def _eps_value(value: Any) -> Any:
    """Accept ``"4/255"`` as well as ``0.0157`` for any eps-like parameter (or a list)."""
    if isinstance(value, list):
        return [_eps_value(v) for v in value]
    if isinstance(value, str) and "/" in value:
        num, _, den = value.partition("/")
        try:
            return float(num) / float(den)
        except (ValueError, ZeroDivisionError):
            raise ValueError(f"cannot read {value!r} as a number") from None
    return value


class AttackSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Literal[ATTACK_NAMES]  # type: ignore[valid-type]
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="Engine parameters; a list of eps values runs one setting per eps.",
        examples=[{"eps": "4/255", "steps": 10}],
    )

    @field_validator("params")
    @classmethod
    def _numbers(cls, params: dict[str, Any]) -> dict[str, Any]:
        out = {k: _eps_value(v) for k, v in params.items()}
        for key in ("eps", "step_size"):
            value = out.get(key)
            if value is not None:
                if isinstance(value, list):
                    bad = [v for v in value if not isinstance(v, (int, float)) or not 0 <= v <= 1]
                    if bad:
                        raise ValueError(f"{key} values must be numbers in [0, 1], got {bad}")
                elif not isinstance(value, (int, float)) or not 0 <= value <= 1:
                    raise ValueError(f"{key} must be in [0, 1] (pixel units), got {value!r}")
        return out


class AnalysisSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Literal[ANALYSIS_NAMES]  # type: ignore[valid-type]
    params: dict[str, Any] = Field(default_factory=dict)


class AuditOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    batch_size: int = Field(default=32, ge=1, le=1024)
    shard_size: int | None = Field(default=None, ge=1, description="Images per shard.")
    max_images: int | None = Field(default=None, ge=1, description="Audit only the first N.")
    min_eps: bool = Field(default=True, description="Per-image minimum-eps search (bisection).")
    samples: int = Field(default=8, ge=0, le=64, description="Images in the report's grid.")
    save_adversarial: bool = Field(default=True, description="Adversarial PNG/DICOM artifacts.")
    query_budget: int | None = Field(
        default=None, ge=1, description="Remote models: images the audit may send in all.")
    query_rate: float | None = Field(
        default=None, gt=0, description="Remote models: images per second at most.")


class AuditRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{
                "model_id": "3f2a…",
                "dataset_id": "9b1c…",
                "attacks": [
                    {"name": "fgsm", "params": {"eps": "4/255"}},
                    {"name": "pgd", "params": {"eps": ["2/255", "4/255", "8/255"], "steps": 10}},
                ],
                "analyses": ["quantitative", "clinical", "sanity"],
                "policy": {"min_accuracy": {"pgd:eps=4/255": 0.6},
                           "max_fooling_rate": {"fgsm": 0.5}},
                "seed": 0,
            }]
        },
    )

    model_id: str
    dataset_id: str
    attacks: list[AttackSpec] = Field(min_length=1, max_length=32)
    analyses: list[AnalysisSpec] | None = Field(
        default=None, description="Names or {name, params}; all that apply when omitted."
    )
    policy: dict[str, Any] | None = None
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    options: AuditOptions = AuditOptions()

    @field_validator("analyses", mode="before")
    @classmethod
    def _names_to_specs(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"name": v} if isinstance(v, str) else v for v in value]
        return value

    @model_validator(mode="after")
    def _unique_analyses(self) -> Self:
        names = [a.name for a in self.analyses or []]
        if len(set(names)) != len(names):
            raise ValueError("each analysis may be named once")
        return self
