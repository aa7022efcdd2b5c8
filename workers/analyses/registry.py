"""Analyses by name.

Each analysis lives in its own module and is imported only when it is asked for, so an
analysis whose module (or whose optional dependency) is missing leaves the others usable:
it is simply not listed. An unknown name raises
:class:`~models.errors.InvalidParametersError` listing the valid ones.

========================  ===============================================================
name                      what it reports
========================  ===============================================================
``quantitative``          clean vs adversarial metrics, robustness curve, minimum eps
``clinical``              missed diseases and false alarms caused by the attacks
``sanity``                flags of an unreliable evaluation (AutoAttack-style checks)
``features``              how far intermediate activations move under attack
``gradcam``               class-activation maps, and how their area shifts off the lesion
``discriminability``      2-D embedding of deep features, clean vs adversarial
``label_correlation``     correlation of predicted findings, clean vs adversarial
``perturbations``         flip probability under common perturbations (ImageNet-P style)
========================  ===============================================================
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

from models.errors import InvalidParametersError
from models.wrapper import DiagnosticModel
from workers.analyses.base import Analysis

logger = logging.getLogger(__name__)

#: name -> "module:Class", in report order.
ANALYSES: dict[str, str] = {
    "quantitative": "workers.analyses.quantitative:QuantitativeAnalysis",
    "clinical": "workers.analyses.clinical:ClinicalAnalysis",
    "sanity": "workers.analyses.sanity:SanityAnalysis",
    "features": "workers.analyses.features:FeaturesAnalysis",
    "gradcam": "workers.analyses.gradcam:GradCAMAnalysis",
    "discriminability": "workers.analyses.discriminability:DiscriminabilityAnalysis",
    "label_correlation": "workers.analyses.label_correlation:LabelCorrelationAnalysis",
    "perturbations": "workers.analyses.perturbations:PerturbationsAnalysis",
}


class AnalysisUnavailableError(InvalidParametersError):
    """A registered analysis whose module cannot be imported here."""

    code = "analysis_unavailable"


def _load(name: str) -> type[Analysis]:
    path = ANALYSES[name]
    module_name, _, class_name = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        # Only the analysis's own module (or a dependency it lacks) being absent makes it
        # unavailable; any other error is a bug and must surface.
        raise AnalysisUnavailableError(
            f"analysis {name!r} is not available in this installation "
            f"({exc.name or module_name} is missing)",
            details={"analysis": name, "missing": exc.name},
        ) from exc
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, Analysis)):
        raise AnalysisUnavailableError(
            f"analysis {name!r}: {path} is not an Analysis subclass",
            details={"analysis": name},
        )
    if getattr(cls, "name", None) != name:
        raise AnalysisUnavailableError(
            f"analysis {name!r}: {path} is named {getattr(cls, 'name', None)!r}",
            details={"analysis": name},
        )
    return cls


def analysis_class(name: str) -> type[Analysis]:
    """The class registered as ``name``.

    Raises:
        InvalidParametersError: unknown name (the message lists the valid names), or an
            :class:`AnalysisUnavailableError` when its module cannot be imported.
    """
    if name not in ANALYSES:
        valid = ", ".join(list_analyses())
        raise InvalidParametersError(
            f"unknown analysis {name!r}; valid: {valid}",
            details={"valid": list_analyses()},
        )
    return _load(name)


def get_analysis(name: str) -> Analysis:
    """A new instance of the analysis registered as ``name`` (see :func:`analysis_class`)."""
    return analysis_class(name)()


def list_analyses() -> list[str]:
    """The names of the analyses available in this installation, in report order."""
    names = []
    for name in ANALYSES:
        try:
            _load(name)
        except AnalysisUnavailableError as exc:
            own_module = ANALYSES[name].partition(":")[0]
            if exc.details.get("missing") == own_module:
                logger.debug("analysis %s not installed", name)
            else:  # installed but broken or missing a dependency: worth a look
                logger.warning("analysis %s unavailable: %s", name, exc.message)
            continue
        names.append(name)
    return names


def default_analyses_for(model: DiagnosticModel) -> list[str]:
    """Every available analysis that applies to ``model`` (the audit's default)."""
    return [name for name in list_analyses() if get_analysis(name).not_applicable(model) is None]


def validate_analysis_params(name: str, params: dict[str, Any] | None) -> dict[str, Any]:
    """Check an analysis's parameters at submission time (before any image is attacked).

    Analyses that declare a ``parse_params`` method validate here; the others accept any
    parameters. Returns the parameters with their defaults filled in when validated.
    """
    analysis = get_analysis(name)
    parse = getattr(analysis, "parse_params", None)
    if parse is None:
        return dict(params or {})
    parsed = parse(params or {})
    dumped = parsed.model_dump() if hasattr(parsed, "model_dump") else dict(params or {})
    return dict(dumped)
