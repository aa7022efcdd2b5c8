from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

EventName = Literal["job.succeeded", "job.failed", "job.cancelled"]


class WebhookCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "url": "https://ci.hospital.org/robustdx-hook",
        "events": ["job.succeeded", "job.failed"],
    }]})

    url: str = Field(min_length=1, max_length=2048)
    events: list[EventName] = Field(min_length=1, max_length=3)


class WebhookPublic(BaseModel):
    id: str
    url: str
    events: list[str]
    created_at: datetime


class WebhookCreated(WebhookPublic):
    secret: str = Field(
        description="Shown once: verify each delivery's RobustDx-Signature with it "
        "(HMAC-SHA256 of '<t>.<body>').")


class DeliveryPublic(BaseModel):
    id: str
    event: str
    job_id: str | None
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    next_attempt_at: datetime | None
    last_status_code: int | None
    last_response: str | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None


class WebhookPage(BaseModel):
    items: list[WebhookPublic]


class DeliveryPage(BaseModel):
    items: list[DeliveryPublic]
    limit: int
    offset: int
