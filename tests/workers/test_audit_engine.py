"""The audit engine's derived sections: worst case and subgroups from the quantitative
arrays, in report order, with metadata when the dataset has it."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.blobs import trained_model
from workers.audit import run_audit

ATTACKS = [{"name": "pgd", "params": {"eps": [4 / 255, 8 / 255], "steps": 5}},
           {"name": "fgsm", "params": {"eps": 8 / 255}}]


def _audit(**kwargs: Any) -> dict[str, Any]:
    trained = trained_model("softmax")
    report, _ = run_audit(trained.model, trained.images[:32], trained.labels[:32], ATTACKS,
                          **kwargs)
    return report


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    meta = [{"PatientSex": "F" if i % 2 else "M"} for i in range(32)]
    return _audit(analyses=[{"name": "quantitative", "params": {"n_bootstrap": 50}},
                            {"name": "sanity", "params": {"probe_steps": 2}}],
                  metadata=meta)


def test_derived_sections_follow_quantitative(report: dict[str, Any]) -> None:
    assert list(report["sections"]) == ["quantitative", "worst_case", "subgroups", "sanity",
                                        "evidence_map"]


def test_worst_case_unions_the_budget(report: dict[str, Any]) -> None:
    budget = report["sections"]["worst_case"]["budgets"]["linf:eps=8/255"]
    assert budget["attacks"] == ["pgd:eps=8/255,steps=5", "fgsm:eps=8/255"]
    singles = [report["attacks"][k]["adversarial"]["accuracy"] for k in budget["attacks"]]
    assert budget["robust_accuracy"] <= min(singles)
    assert budget["robust_accuracy"] >= min(singles) - budget["union_gain"] - 1e-12


def test_subgroups_use_the_metadata(report: dict[str, Any]) -> None:
    groups = report["sections"]["subgroups"]["attributes"]["PatientSex"]["groups"]
    assert {g: v["n_images"] for g, v in groups.items()} == {"F": 16, "M": 16}


def test_without_metadata_subgroups_do_not_apply() -> None:
    report = _audit(analyses=[{"name": "quantitative", "params": {"n_bootstrap": 0}}])
    assert report["sections"]["subgroups"]["applicable"] is False
    assert report["sections"]["subgroups"]["reason"] == "the dataset has no metadata"


def test_without_quantitative_the_derived_sections_say_why() -> None:
    report = _audit(analyses=[{"name": "sanity", "params": {"probe_steps": 0}}])
    for name in ("worst_case", "subgroups"):
        assert report["sections"][name]["applicable"] is False
        assert "quantitative analysis, which did not run" in report["sections"][name]["reason"]
