"""Audit requests, checked in full at submission.

Names come from :mod:`app.core.catalogue`, and every attack's and analysis's parameters are
validated with the catalogue's own parameter models, the very models the engine builds from:
an unknown parameter or an out-of-range value is a 422 naming the valid ones before anything
is queued. Each model's JSON schema (with its bounds) is published under
``x-parameters`` of the ``params`` field, so the OpenAPI document states the limits too.
"""

from __future__ import annotations

from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from app.core.catalogue import (
    ANALYSES_WITHOUT_ATTACKS,
    ANALYSIS_NAMES,
    ANALYSIS_PARAMS,
    ATTACK_NAMES,
    ATTACK_PARAMS,
    MAX_EPS_VALUES,
    MAX_SETTINGS,
    analysis_params,
    attack_params,
)
from models.errors import InvalidParametersError


def _schemas(models: dict[str, type[BaseModel]]) -> dict[str, Any]:
    return {name: model.model_json_schema() for name, model in sorted(models.items())}


class AttackSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Literal[ATTACK_NAMES]  # type: ignore[valid-type]
    params: dict[str, Any] = Field(
        default_factory=dict,
        description=f"The attack's parameters (see x-parameters for each attack's names, "
        f"defaults and bounds); a list of up to {MAX_EPS_VALUES} eps values runs one "
        "setting per eps.",
        examples=[{"eps": "4/255", "steps": 10}],
        json_schema_extra={"x-parameters": _schemas(dict(ATTACK_PARAMS))},
    )

    @model_validator(mode="after")
    def _engine_params(self) -> Self:
        """Each setting (one per eps value) validated by the engine's own model."""
        eps = self.params.get("eps")
        if isinstance(eps, list):
            if not 1 <= len(eps) <= MAX_EPS_VALUES:
                raise ValueError(f"eps lists must hold 1 to {MAX_EPS_VALUES} values, "
                                 f"got {len(eps)}")
            settings = [{**self.params, "eps": value} for value in eps]
        else:
            settings = [self.params]
        for setting in settings:
            try:
                attack_params(self.name, setting)
            except InvalidParametersError as exc:
                raise ValueError(exc.message) from None
        return self

    @property
    def settings(self) -> int:
        eps = self.params.get("eps")
        return len(eps) if isinstance(eps, list) else 1


class AnalysisSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Literal[ANALYSIS_NAMES]  # type: ignore[valid-type]
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="The analysis's parameters (see x-parameters for each analysis).",
        json_schema_extra={"x-parameters": _schemas(dict(ANALYSIS_PARAMS))},
    )

    @model_validator(mode="after")
    def _engine_params(self) -> Self:
        try:
            analysis_params(self.name, self.params)
        except InvalidParametersError as exc:
            raise ValueError(exc.message) from None
        return self


class AuditOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # strict: JSON's true is not the number 1, nor 1 a boolean.
    batch_size: int = Field(default=32, ge=1, le=1024, strict=True)
    shard_size: int | None = Field(
        default=None, ge=1, le=100_000, strict=True,
        description="Images per shard; by default sized from the attacks' cost so that "
        "progress moves every few seconds.",
    )
    max_images: int | None = Field(default=None, ge=1, strict=True,
                                   description="Audit only the first N.")
    min_eps: bool = Field(
        default=False, strict=True,
        description="Per-image minimum-eps search (bisection over PGD) for the robustness "
        "curve; opt-in, it costs several times the attacks themselves.",
    )
    samples: int = Field(default=8, ge=0, le=64, strict=True,
                         description="Images in the report's grid.")
    save_adversarial: bool = Field(default=True, strict=True,
                                   description="Adversarial PNG/DICOM artifacts.")
    query_budget: int | None = Field(
        default=None, ge=1, strict=True,
        description="Remote models: images the audit may send in all.")
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
    attacks: list[AttackSpec] = Field(
        default_factory=list, max_length=32,
        description="May be empty when only analyses that need no attack are asked for "
        f"({', '.join(ANALYSES_WITHOUT_ATTACKS)}).",
    )
    analyses: list[AnalysisSpec] | None = Field(
        default=None, description="Names or {name, params}; all that apply when omitted."
    )
    policy: dict[str, Any] | None = None
    seed: int = Field(default=0, ge=0, le=2**31 - 1, strict=True)
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

    @model_validator(mode="after")
    def _work_is_bounded(self) -> Self:
        settings = sum(a.settings for a in self.attacks)
        if settings > MAX_SETTINGS:
            raise ValueError(f"an audit may run at most {MAX_SETTINGS} attack settings "
                             f"(attacks x eps values), got {settings}")
        if not self.attacks:
            names = [a.name for a in self.analyses or []]
            need = [n for n in names if n not in ANALYSES_WITHOUT_ATTACKS]
            if not names or need:
                raise ValueError(
                    "an audit without attacks may only ask for analyses that need none "
                    f"({', '.join(ANALYSES_WITHOUT_ATTACKS)}); "
                    + (f"{', '.join(need)} need attacks" if need else "name them in analyses")
                )
        return self
