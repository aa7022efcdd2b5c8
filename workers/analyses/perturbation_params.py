"""Parameters of the ``perturbations`` analysis (see :mod:`workers.analyses.perturbations`)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from models.errors import InvalidParametersError
from workers.analyses.analysis_params import parse_params
from workers.perturbations import (
    IMAGENET_P,
    Modality,
    Perturbation,
    get_perturbation,
    list_perturbations,
    perturbations_for,
)
from workers.perturbations.sequences import check_sequence

NAME = "perturbations"
DEFAULT_FRAMES = 8

Metric = Literal["accuracy", "balanced_accuracy", "auroc"]


class PerturbationsParams(BaseModel):
    """Parameters of ``perturbations``.

    Attributes:
        perturbations: names to evaluate at each severity; default every generic
            perturbation plus the artefacts of the modality. ``[]`` skips corruption
            accuracy.
        severities: the severities (1..5) to evaluate.
        sequences: names to run as flip-probability sequences; default the ImageNet-P set
            among the selected perturbations. ``[]`` skips sequences.
        frames: frames per sequence (2..100).
        difficulty: 1..3; the comparison stride of swept sequences and the noise severity
            of noise sequences (ImageNet-P).
        modality: ``radiograph``, ``dermoscopy`` or ``fundus``; inferred from the channel
            count when omitted (greyscale: radiograph; colour: dermoscopy and fundus).
        metric: the headline metric; ``accuracy`` for single-label, ``auroc`` for
            multi-label models when omitted.
        example_index: dataset position of the image shown in the example strips.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    perturbations: tuple[str, ...] | None = None
    severities: tuple[int, ...] = (1, 2, 3, 4, 5)
    sequences: tuple[str, ...] | None = None
    frames: int = DEFAULT_FRAMES
    difficulty: int = 1
    modality: Modality | None = None
    metric: Metric | None = None
    example_index: int = 0

    @field_validator("perturbations", "sequences")
    @classmethod
    def _known(cls, names: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if names is None:
            return None
        valid = list_perturbations()
        for name in names:
            if name not in valid:
                raise ValueError(f"unknown perturbation {name!r}; valid: {', '.join(valid)}")
        if len(set(names)) != len(names):
            raise ValueError("perturbation names must be unique")
        return names

    @field_validator("severities")
    @classmethod
    def _severities(cls, values: tuple[int, ...]) -> tuple[int, ...]:
        if not values:
            raise ValueError("severities must not be empty")
        if any(not 1 <= s <= 5 for s in values):
            raise ValueError("severities must be in 1..5")
        return tuple(sorted(set(values)))

    @field_validator("example_index")
    @classmethod
    def _example(cls, value: int) -> int:
        if value < 0:
            raise ValueError("example_index must be >= 0")
        return value

    @model_validator(mode="after")
    def _sequence(self) -> PerturbationsParams:
        try:
            check_sequence(self.frames, self.difficulty)
        except InvalidParametersError as exc:
            raise ValueError(exc.message) from exc
        return self

    def corruptions(self, channels: int) -> list[Perturbation]:
        names = (
            self.perturbations
            if self.perturbations is not None
            else perturbations_for(channels, self.modality)
        )
        return [get_perturbation(n) for n in names]

    def sequence_list(self, channels: int) -> list[Perturbation]:
        if self.sequences is not None:
            return [get_perturbation(n) for n in self.sequences]
        chosen = {p.name for p in self.corruptions(channels)}
        return [get_perturbation(n) for n in IMAGENET_P if n in chosen]

    def headline(self, task: str) -> str:
        return self.metric or ("auroc" if task == "multi-label" else "accuracy")


def parse(params: dict[str, Any]) -> PerturbationsParams:
    """Validate the parameters (errors as :class:`InvalidParametersError`)."""
    return parse_params(PerturbationsParams, params, NAME)


