"""Parameters of the ``perturbations`` analysis (see :mod:`workers.analyses.perturbations`):
the catalogue's model (which the API validates with at submission), plus the look-ups of
the perturbations it names."""

from __future__ import annotations

from typing import Any

from app.core.catalogue.analyses import DEFAULT_FRAMES, Metric
from app.core.catalogue.analyses import PerturbationsParams as CataloguePerturbationsParams
from workers.analyses.analysis_params import parse_params
from workers.perturbations import IMAGENET_P, Perturbation, get_perturbation, perturbations_for

NAME = "perturbations"

__all__ = ["DEFAULT_FRAMES", "NAME", "Metric", "PerturbationsParams", "parse"]


class PerturbationsParams(CataloguePerturbationsParams):
    """:class:`app.core.catalogue.analyses.PerturbationsParams` with its perturbations."""

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
