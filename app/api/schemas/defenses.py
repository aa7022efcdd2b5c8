from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.core.catalogue import DEFENSE_METHODS


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
        description="Training parameters (epochs, lr, schedule, batch_size, eps, steps, "
        "step_size, beta, MPAdvT ranges...), plus optional eval_attacks for the report.",
    )
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
