"""Registering a remote model: an Open Inference Protocol v2 endpoint plus its card."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from models.card import ModelCard

_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$"


class RemoteModelCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(max_length=2000, description="Base URL of the server, e.g. "
                     "https://triton.hospital.org:8000 (checked against the allow-list).")
    model: str = Field(pattern=_NAME, description="The model's name on that server.")
    version: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._-]{1,64}$")
    card: ModelCard
    outputs: Literal["probabilities", "logits"] = Field(
        default="probabilities",
        description="What the output tensor holds: probabilities (softmax or per-finding "
        "sigmoid) or raw logits of the card's head.")
    input: str = Field(default="image", pattern=_NAME, description="Input tensor name.")
    output: str = Field(default="probabilities", pattern=_NAME,
                        description="Output tensor name.")
    bearer_token: str | None = Field(
        default=None, max_length=4096,
        description="Sent as `Authorization: Bearer` to the endpoint; never returned.")
