"""build_report: the attacks and summary reflect the sections; provenance is completed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from models.errors import InvalidParametersError
from workers.analyses.base import Section
from workers.reports.builder import build_report
from workers.reports.schema import ReportValidationError


def test_attacks_hold_clean_adversarial_and_fooling_rate(
    report: dict[str, Any], sections: list[Section]
) -> None:
    quantitative = next(s for s in sections if s.name == "quantitative")
    assert list(report["attacks"]) == ["pgd:eps=4/255", "pgd:eps=8/255", "square:eps=8/255"]
    for key, entry in report["attacks"].items():
        measured = quantitative.data["attacks"][key]
        assert entry["clean"] == measured["clean"]
        assert entry["adversarial"] == measured["adversarial"]
        assert entry["fooling_rate"] == measured["fooling_rate"]
    pgd4 = report["attacks"]["pgd:eps=4/255"]
    assert pgd4["name"] == "pgd"
    assert pgd4["params"] == {"eps": pytest.approx(4 / 255), "steps": 10}
    assert pgd4["clean"]["accuracy"] == 1.0
    assert pgd4["adversarial"]["accuracy"] == pytest.approx(0.7)
    assert pgd4["fooling_rate"] == pytest.approx(0.3)
    assert report["attacks"]["pgd:eps=8/255"]["fooling_rate"] == pytest.approx(0.6)


def test_summary(report: dict[str, Any]) -> None:
    summary = report["summary"]
    assert summary["verdict"] == "no policy"
    assert summary["reliable"] is True
    assert summary["n_images"] == 100
    assert summary["clean_accuracy"] == 1.0
    assert summary["worst_attack"] == "pgd:eps=8/255"
    accs = {h["attack"]: h["adversarial_accuracy"] for h in summary["headline"]}
    assert accs == pytest.approx({"pgd:eps=4/255": 0.7, "pgd:eps=8/255": 0.4,
                                  "square:eps=8/255": 0.6})


def test_provenance_is_completed(report: dict[str, Any]) -> None:
    prov = report["provenance"]
    assert set(prov["packages"]) >= {"torch", "torchvision", "numpy", "robustdx"}
    assert prov["packages"]["torch"].startswith("2.")
    assert prov["timings"]["attacks"] == 1.25
    assert prov["model"]["sha256"] == "0" * 64


def test_lone_seed_becomes_seeds(sections: list[Section]) -> None:
    prov = {"model": {"sha256": None}, "dataset": {"sha256": None}, "parameters": {},
            "seed": 7, "device": {"type": "cpu"}, "timings": {}}
    report = build_report({"id": "j", "kind": "audit"}, prov, sections, {}, None)
    assert report["provenance"]["seeds"] == {"audit": 7}


def test_incomplete_provenance_is_refused(sections: list[Section]) -> None:
    prov = {"model": {"sha256": None}, "dataset": {"sha256": None}, "parameters": {}}
    with pytest.raises(ReportValidationError, match="provenance"):
        build_report({"id": "j", "kind": "audit"}, prov, sections, {}, None)


def test_artifacts_list_figures(report: dict[str, Any], sections: list[Section]) -> None:
    figures = [f"{f.name}.png" for s in sections for f in s.figures]
    assert figures
    assert set(figures) <= set(report["artifacts"])
    assert report["sections"]["quantitative"]["figures"] == [
        f"{f.name}.png" for f in sections[0].figures
    ]


def test_extra_artifacts_are_kept(report: dict[str, Any], sections: list[Section]) -> None:
    again = build_report(report["job"], report["provenance"], sections, {}, None,
                         artifacts=["adversarial.zip", "adversarial/0.png"])
    assert again["artifacts"][:2] == ["adversarial.zip", "adversarial/0.png"]
    assert len(again["artifacts"]) == len(set(again["artifacts"]))


def test_verdicts(make_report: Callable[..., dict[str, Any]]) -> None:
    assert make_report({"min_accuracy": {"pgd:eps=4/255": 0.6}})["summary"]["verdict"] == "pass"
    failing = make_report({"min_accuracy": {"pgd:eps=8/255": 0.6}})
    assert failing["summary"]["verdict"] == "fail"
    assert failing["policy"]["passed"] is False
    assert "below the minimum 0.600" in failing["summary"]["messages"][0]
    assert make_report({})["summary"]["verdict"] == "no policy"


def test_invalid_policy_is_refused(make_report: Callable[..., dict[str, Any]]) -> None:
    with pytest.raises(InvalidParametersError, match="unknown policy rule 'min_acc'"):
        make_report({"min_acc": 0.5})


def test_unreliable_evaluation_is_reported(
    make_report: Callable[..., dict[str, Any]],
    make_sections: Callable[..., list[Section]],
) -> None:
    # The black-box attack beats PGD at the same eps: gradient masking suspected.
    sections = make_sections({"pgd:eps=4/255": 10, "pgd:eps=8/255": 20,
                              "square:eps=8/255": 70})
    report = make_report({"require_reliable": True}, sections=sections)
    assert report["summary"]["reliable"] is False
    assert report["summary"]["verdict"] == "fail"
    assert any("may be unreliable" in m for m in report["summary"]["messages"])
