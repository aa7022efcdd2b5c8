"""The worst case, subgroups and evidence map in the report, and the rules that gate on them.

Known numbers (see conftest): pgd 4/255 flips images 0-29, pgd 8/255 images 0-59, square
8/255 images 0-39; women are images 0-29 and 80-99.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from models.errors import InvalidParametersError
from workers.reports.builder import strongest_attack
from workers.reports.policy import evaluate_policy, parse_policy


def by_name(report: dict[str, Any], policy: dict[str, Any]) -> dict[str, tuple[bool, Any]]:
    return {r.name: (r.passed, r.observed) for r in evaluate_policy(report, policy)}


def test_worst_case_in_the_summary(report: dict[str, Any]) -> None:
    rows = {r["budget"]: r for r in report["summary"]["worst_case"]}
    assert set(rows) == {"linf:eps=4/255", "linf:eps=8/255"}
    assert rows["linf:eps=4/255"]["robust_accuracy"] == pytest.approx(0.7)
    assert rows["linf:eps=8/255"]["robust_accuracy"] == pytest.approx(0.4)
    assert rows["linf:eps=8/255"]["attacks"] == ["pgd:eps=8/255", "square:eps=8/255"]
    budget = report["sections"]["worst_case"]["budgets"]["linf:eps=8/255"]
    assert budget["first_broken_by"] == {"clean": 0, "pgd:eps=8/255": 60,
                                         "square:eps=8/255": 0}


@pytest.mark.parametrize(("target", "passes"), [
    ("linf:eps=4/255", True), ("eps=4/255", True), ("linf:eps=0.0157", True),
    ("eps=8/255", False),
])
def test_min_robust_accuracy_by_budget(report: dict[str, Any], target: str,
                                       passes: bool) -> None:
    results = evaluate_policy(report, {"min_robust_accuracy": {target: 0.6}})
    assert [r.passed for r in results] == [passes]
    assert results[0].budget in ("linf:eps=4/255", "linf:eps=8/255")
    assert results[0].name == f"min_robust_accuracy[{results[0].budget}]"


def test_bare_threshold_applies_to_every_budget(report: dict[str, Any]) -> None:
    got = by_name(report, {"min_robust_accuracy": 0.5})
    assert got["min_robust_accuracy[linf:eps=4/255]"][0] is True
    assert got["min_robust_accuracy[linf:eps=8/255]"] == (False, pytest.approx(0.4))


def test_budget_matching_nothing_fails(report: dict[str, Any]) -> None:
    (result,) = evaluate_policy(report, {"min_robust_accuracy": {"l2:eps=0.5": 0.1}})
    assert result.passed is False
    assert "no budget of the audit's worst case matches 'l2:eps=0.5'" in result.message


@pytest.mark.parametrize(("policy", "message"), [
    ({"min_robust_accuracy": {"pgd:eps=4/255": 0.5}}, "is not [norm:]eps=value"),
    ({"min_robust_accuracy": {"eps=4/255": 2}}, "must be in [0, 1]"),
    ({"min_subgroup_robust_accuracy": {}}, "names no budget"),
])
def test_invalid_budget_rules(policy: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidParametersError, match=message.replace("[", r"\[")):
        parse_policy(policy)


def test_budgets_checked_at_submission() -> None:
    keys = ["pgd:eps=4/255", "square:eps=8/255"]
    parse_policy({"min_robust_accuracy": {"eps=8/255": 0.1}}, keys)
    with pytest.raises(InvalidParametersError, match="budgets: linf:eps=4/255, linf:eps=8/255"):
        parse_policy({"min_robust_accuracy": {"eps=2/255": 0.1}}, keys)


def test_subgroup_rules_gate_on_the_worst_group(report: dict[str, Any]) -> None:
    got = by_name(report, {"min_subgroup_robust_accuracy": {"eps=4/255": 0.5},
                           "min_subgroup_clean_accuracy": 0.9})
    assert got["min_subgroup_robust_accuracy[linf:eps=4/255]"] == (False, pytest.approx(0.4))
    assert got["min_subgroup_clean_accuracy"] == (True, 1.0)
    worst = report["sections"]["subgroups"]["worst_group"]["linf:eps=4/255"]
    assert (worst["attribute"], worst["group"]) == ("PatientSex", "F")
    flagged = report["sections"]["subgroups"]["flagged"]
    assert {(f["attribute"], f["group"], f["measure"]) for f in flagged} == {
        ("PatientSex", "F", "linf:eps=4/255")}


def test_subgroup_rule_without_metadata_fails(
    make_report: Callable[..., dict[str, Any]], make_sections: Callable[..., Any]
) -> None:
    report = make_report(sections=make_sections())
    assert report["sections"]["subgroups"] == {
        "applicable": False, "reason": "the dataset has no metadata", "figures": []}
    results = evaluate_policy(report, {"min_subgroup_robust_accuracy": 0.1})
    assert [r.budget for r in results] == ["linf:eps=4/255", "linf:eps=8/255"]
    assert all(r.passed is False and r.observed is None for r in results)
    assert "was not measured" in results[0].message


def test_strongest_attack_order() -> None:
    rows = [
        {"attack": "fgsm", "adversarial_accuracy": 0.5, "adversarial_mean_auroc": 0.8,
         "adversarial_mean_loss": 1.0},
        {"attack": "pgd", "adversarial_accuracy": 0.5, "adversarial_mean_auroc": 0.6,
         "adversarial_mean_loss": 0.5},
        {"attack": "square", "adversarial_accuracy": 0.5, "adversarial_mean_auroc": 0.6,
         "adversarial_mean_loss": 2.0},
        {"attack": "gap", "adversarial_accuracy": None},
    ]
    assert strongest_attack(rows) == "square"  # equal accuracy and AUROC: higher loss
    rows[2]["adversarial_mean_auroc"] = 0.7
    assert strongest_attack(rows) == "pgd"  # equal accuracy: lower AUROC, not list order
    rows[0]["adversarial_accuracy"] = 0.4
    assert strongest_attack(rows) == "fgsm"
    assert strongest_attack(rows[3:]) is None


def test_evidence_map_states_coverage(report: dict[str, Any]) -> None:
    evidence = report["sections"]["evidence_map"]
    status = {t["threat"]: t["status"] for t in evidence["threats"]}
    assert status == {
        "evasion_white_box": "tested", "evasion_black_box": "tested",
        "evasion_universal": "not tested", "evaluation_reliability": "tested",
        "common_corruptions": "not tested", "subgroup_shift": "tested",
        "data_poisoning": "out of scope", "model_extraction": "out of scope",
        "membership_inference": "out of scope",
    }
    black = next(t for t in evidence["threats"] if t["threat"] == "evasion_black_box")
    assert black["evidence"] == ["square:eps=8/255"]
    refs = " ".join(r["title"] for r in evidence["references"])
    for cited in ("Article 15", "January 2025", "TIR34971"):
        assert cited in refs
    assert "not a claim of compliance" in evidence["statement"]


def test_every_registered_attack_has_a_threat() -> None:
    from workers.attacks import list_attacks
    from workers.reports.evidence import ATTACK_THREATS

    assert sorted(list_attacks()) == sorted(ATTACK_THREATS)
