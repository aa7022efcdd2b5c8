"""The analysis registry: names, lazy imports, defaults and parameter validation."""

from __future__ import annotations

import pytest
from torch import nn

from models.card import Head, ModelCard
from models.errors import InvalidParametersError
from models.wrapper import DiagnosticModel
from workers.analyses import registry
from workers.analyses.base import Analysis
from workers.analyses.clinical import ClinicalAnalysis
from workers.analyses.quantitative import QuantitativeAnalysis
from workers.analyses.sanity import SanityAnalysis


def model() -> DiagnosticModel:
    card = ModelCard(name="m", task="single-label", labels=("normal", "pneumonia"),
                     input={"channels": 1, "height": 8, "width": 8})
    return DiagnosticModel(nn.Sequential(nn.Flatten(), nn.Linear(64, 2)), card, Head.SOFTMAX)


def test_own_analyses_are_registered_in_report_order() -> None:
    names = registry.list_analyses()
    assert names[:3] == ["quantitative", "clinical", "sanity"]
    assert isinstance(registry.get_analysis("quantitative"), QuantitativeAnalysis)
    assert registry.analysis_class("clinical") is ClinicalAnalysis
    assert registry.analysis_class("sanity") is SanityAnalysis
    for name in names:
        assert registry.analysis_class(name).name == name


def test_unknown_name_lists_the_valid_ones() -> None:
    with pytest.raises(InvalidParametersError, match="unknown analysis 'nope'; valid: "
                       "quantitative, clinical, sanity"):
        registry.get_analysis("nope")


def test_missing_module_does_not_break_the_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(registry.ANALYSES, "ghost", "workers.analyses.no_such_module:Ghost")
    assert "ghost" not in registry.list_analyses()
    assert "quantitative" in registry.list_analyses()
    with pytest.raises(registry.AnalysisUnavailableError, match="'ghost' is not available"):
        registry.get_analysis("ghost")


def test_a_class_with_the_wrong_name_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(registry.ANALYSES, "other",
                        "workers.analyses.quantitative:QuantitativeAnalysis")
    with pytest.raises(registry.AnalysisUnavailableError, match="is named 'quantitative'"):
        registry.get_analysis("other")


def test_defaults_are_the_available_analyses_that_apply(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class NeverApplies(Analysis):
        name = "never"

        def not_applicable(self, model: DiagnosticModel) -> str | None:
            return "never applies"

        def collect(self, ctx):
            return {}

        def summarize(self, arrays, ctx):
            raise AssertionError

    import sys
    import types

    module = types.ModuleType("fake_never_analysis")
    module.NeverApplies = NeverApplies  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fake_never_analysis", module)
    monkeypatch.setitem(registry.ANALYSES, "never", "fake_never_analysis:NeverApplies")
    assert "never" in registry.list_analyses()
    defaults = registry.default_analyses_for(model())
    assert "never" not in defaults
    assert defaults[:3] == ["quantitative", "clinical", "sanity"]


def test_parameters_are_validated_at_submission() -> None:
    filled = registry.validate_analysis_params("quantitative", {"n_bootstrap": 50})
    assert filled["n_bootstrap"] == 50
    assert filled["confidence"] == 0.95
    with pytest.raises(InvalidParametersError, match="unknown parameter 'bins'"):
        registry.validate_analysis_params("quantitative", {"bins": 3})
    assert registry.validate_analysis_params("clinical", {"healthy_label": "normal"}) == {
        "healthy_label": "normal"
    }
