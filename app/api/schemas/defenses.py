"""Defense requests, checked in full at submission with the catalogue's parameter models
(the ones the training loop builds from); ``eval_attacks`` are attack specs checked the
way an audit's are."""

from __future__ import annotations

from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.api.schemas.audits import AttackSpec
from app.core.catalogue import DEFENSE_METHODS, DEFENSE_PARAMS, defense_params
from models.errors import InvalidParametersError


class DefenseRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{
            "model_id": "3f2a…", "train_dataset_id": "9b1c…", "eval_dataset_id": "77de…",
            "method": "mpadvt", "params": {"epochs": 5, "lr": 0.01}, "seed": 0,
        }]},
    )

    model_id: str
    train_dataset_id: str
    eval_dataset_id: str
    method: Literal[DEFENSE_METHODS]  # type: ignore[valid-type]
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="Training parameters of the method (see x-parameters for each method's "
        "names, defaults and bounds), plus optional eval_attacks (attack specs) for the "
        "before/after report.",
        json_schema_extra={"x-parameters": {
            name: model.model_json_schema() for name, model in sorted(DEFENSE_PARAMS.items())
        }},
    )
    seed: int = Field(default=0, ge=0, le=2**31 - 1, strict=True)

    @model_validator(mode="after")
    def _engine_params(self) -> Self:
        own = {k: v for k, v in self.params.items() if k != "eval_attacks"}
        try:
            defense_params(self.method, own)
        except InvalidParametersError as exc:
            raise ValueError(exc.message) from None
        attacks = self.params.get("eval_attacks")
        if attacks is not None:
            if not isinstance(attacks, list) or not 1 <= len(attacks) <= 8:
                raise ValueError("eval_attacks must be a list of 1 to 8 attack specs")
            for spec in attacks:
                AttackSpec.model_validate(spec)
        return self
