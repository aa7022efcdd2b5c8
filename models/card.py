"""The model card: what a registered model is, what it expects and what it answers.

A card is stored (as JSON) with every model file. It is the single description the
service, the workers and the engine use to decode images for a model, interpret its
output head and judge its predictions.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Task = Literal["single-label", "multi-label"]
ResizePolicy = Literal["stretch", "pad", "center-crop"]


class Head(StrEnum):
    """How a model's raw outputs turn into probabilities.

    - ``softmax``: ``[N, K]`` logits, one class per image (K >= 2).
    - ``sigmoid``: ``[N, K]`` logits, one independent finding each (multi-label).
    - ``binary-logit``: ``[N, 1]`` (or ``[N]``) logit of the *second* label of a two-label
      single-label model; the probability of the first label is ``1 - sigmoid``.
    """

    SOFTMAX = "softmax"
    SIGMOID = "sigmoid"
    BINARY_LOGIT = "binary-logit"


class InputSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    channels: Literal[1, 3]
    height: int = Field(ge=8, le=1024)
    width: int = Field(ge=8, le=1024)


class DicomWindow(BaseModel):
    """A fixed VOI window (centre, width) in modality units; ``None`` uses the file's own."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    center: float
    width: float = Field(gt=0)


class Preprocessing(BaseModel):
    """What the model wrapper does to a [0, 1] image before the network sees it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    resize: ResizePolicy = "stretch"
    dicom_window: DicomWindow | None = None

    @field_validator("std")
    @classmethod
    def _positive_std(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if any(s <= 0 for s in value):
            raise ValueError("std values must all be > 0")
        return value


class ModelCard(BaseModel):
    """The card sent with an upload (``card`` form field) and stored with the model."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    task: Task
    labels: tuple[str, ...] = Field(min_length=1)
    input: InputSpec
    preprocessing: Preprocessing = Preprocessing()
    head: Head | None = Field(
        default=None,
        description="Output head; inferred from task and output width when omitted.",
    )
    thresholds: dict[str, float] | None = Field(
        default=None, description="Per-finding decision thresholds (multi-label only)."
    )
    architecture: str | None = Field(
        default=None,
        description="Allow-listed architecture name; required for safetensors/.pth weights.",
    )
    sha256: str | None = Field(default=None, description="Filled in by the registry.")

    @field_validator("labels")
    @classmethod
    def _unique_labels(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(value)) != len(value):
            raise ValueError("labels must be unique")
        if any(not label.strip() for label in value):
            raise ValueError("labels must be non-empty strings")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        channels = self.input.channels
        for name in ("mean", "std"):
            values = getattr(self.preprocessing, name)
            if len(values) not in (1, channels):
                raise ValueError(
                    f"preprocessing.{name} must have 1 or {channels} values, got {len(values)}"
                )
        if self.task == "single-label":
            if len(self.labels) < 2:
                raise ValueError("a single-label model needs at least 2 labels")
            if self.thresholds:
                raise ValueError("thresholds apply to multi-label models only")
            if self.head == Head.SIGMOID:
                raise ValueError("head 'sigmoid' is for multi-label models")
            if self.head == Head.BINARY_LOGIT and len(self.labels) != 2:
                raise ValueError("head 'binary-logit' needs exactly 2 labels")
        else:
            if self.head not in (None, Head.SIGMOID):
                raise ValueError("a multi-label model must have head 'sigmoid'")
            unknown = set(self.thresholds or {}) - set(self.labels)
            if unknown:
                raise ValueError(f"thresholds name unknown labels: {sorted(unknown)}")
            for label, t in (self.thresholds or {}).items():
                if not 0.0 < t < 1.0:
                    raise ValueError(f"threshold for {label!r} must be in (0, 1), got {t}")
        return self

    @property
    def num_labels(self) -> int:
        return len(self.labels)

    def resolved_head(self, output_width: int | None = None) -> Head:
        """The head, inferring ``binary-logit`` for a 2-label model with one output."""
        if self.head is not None:
            return self.head
        if self.task == "multi-label":
            return Head.SIGMOID
        if output_width == 1 and len(self.labels) == 2:
            return Head.BINARY_LOGIT
        return Head.SOFTMAX

    def expected_outputs(self, head: Head) -> int:
        return 1 if head == Head.BINARY_LOGIT else len(self.labels)

    def threshold_vector(self, default: float = 0.5) -> list[float]:
        thresholds = self.thresholds or {}
        return [float(thresholds.get(label, default)) for label in self.labels]
