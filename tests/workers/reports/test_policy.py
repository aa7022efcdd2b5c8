"""Policy rules: validation messages, target matching, and pass/fail on known numbers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from models.errors import InvalidParametersError
from workers.reports.policy import RULE_NAMES, evaluate_policy, parse_policy

# Known numbers (see conftest): clean accuracy 1.0; adversarial accuracy 0.7 / 0.4 / 0.6 and
# fooling rate 0.3 / 0.6 / 0.4 for pgd 4/255, pgd 8/255 and square 8/255.


def results(report: dict[str, Any], policy: dict[str, Any]) -> dict[str, tuple[bool, Any]]:
    return {
        (r.rule + (f"[{r.attack}]" if r.attack else "")): (r.passed, r.observed)
        for r in evaluate_policy(report, policy)
    }


def test_unknown_rule_lists_valid_rules() -> None:
    with pytest.raises(InvalidParametersError) as info:
        parse_policy({"min_accuracy": 0.5, "max_foolingrate": 0.2})
    message = str(info.value)
    assert message.startswith("unknown policy rule 'max_foolingrate'; valid rules: ")
    for name in RULE_NAMES:
        assert name in message


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        ({"min_accuracy": {"pgd": 1.5}}, "threshold for 'pgd' must be in [0, 1], got 1.5"),
        ({"min_clean_accuracy": "high"}, "must be a number in [0, 1], got 'high'"),
        ({"max_fooling_rate": {"pgd:eps": 0.2}}, "target 'pgd:eps' is not an attack name or key"),
        ({"require_reliable": "yes"}, "'require_reliable' must be true or false"),
        ({"min_accuracy": {}}, "'min_accuracy' names no attack"),
    ],
)
def test_invalid_policies(policy: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidParametersError) as info:
        parse_policy(policy)
    assert message in str(info.value)


def test_empty_policy_is_no_policy() -> None:
    assert parse_policy(None) is None
    assert parse_policy({}) is None


def test_targets_are_checked_against_the_audit_at_submission() -> None:
    keys = ["pgd:eps=4/255", "pgd:eps=8/255"]
    assert parse_policy({"min_accuracy": {"pgd:eps=0.0157": 0.5}}, keys) is not None
    with pytest.raises(InvalidParametersError, match="'fgsm' matches no attack of the audit"):
        parse_policy({"min_accuracy": {"fgsm": 0.5}}, keys)


def test_exact_key_and_decimal_eps_select_the_same_setting(report: dict[str, Any]) -> None:
    exact = results(report, {"min_accuracy": {"pgd:eps=4/255": 0.6}})
    decimal = results(report, {"min_accuracy": {"pgd:eps=0.0157": 0.6}})
    assert exact == decimal == {"min_accuracy[pgd:eps=4/255]": (True, pytest.approx(0.7))}


def test_attack_name_selects_all_its_settings(report: dict[str, Any]) -> None:
    got = results(report, {"min_accuracy": {"pgd": 0.5}})
    assert got == {
        "min_accuracy[pgd:eps=4/255]": (True, pytest.approx(0.7)),
        "min_accuracy[pgd:eps=8/255]": (False, pytest.approx(0.4)),
    }


def test_bare_threshold_applies_to_every_setting(report: dict[str, Any]) -> None:
    got = results(report, {"max_fooling_rate": 0.5})
    assert {k: v[0] for k, v in got.items()} == {
        "max_fooling_rate[pgd:eps=4/255]": True,
        "max_fooling_rate[pgd:eps=8/255]": False,
        "max_fooling_rate[square:eps=8/255]": True,
    }


def test_every_rule_compares_the_right_number(report: dict[str, Any]) -> None:
    target = {"pgd:eps=8/255": 0.5}
    got = results(report, {
        "min_clean_accuracy": 0.9,
        "min_clean_auroc": 0.9,
        "min_accuracy": target,
        "min_balanced_accuracy": target,
        "min_auroc": target,
        "max_fooling_rate": target,
        "max_attack_success_rate": target,
        "max_accuracy_drop": target,
        "require_reliable": True,
    })
    assert got["min_clean_accuracy"] == (True, 1.0)
    assert got["min_clean_auroc"] == (True, 1.0)
    assert got["min_accuracy[pgd:eps=8/255]"] == (False, pytest.approx(0.4))
    assert got["min_balanced_accuracy[pgd:eps=8/255]"] == (False, pytest.approx(0.4))
    assert got["max_fooling_rate[pgd:eps=8/255]"] == (False, pytest.approx(0.6))
    assert got["max_attack_success_rate[pgd:eps=8/255]"] == (False, pytest.approx(0.6))
    assert got["max_accuracy_drop[pgd:eps=8/255]"] == (False, pytest.approx(0.6))
    assert got["require_reliable"] == (True, True)
    auroc = report["attacks"]["pgd:eps=8/255"]["adversarial"]["mean_auroc"]
    assert got["min_auroc[pgd:eps=8/255]"] == (auroc >= 0.5, pytest.approx(auroc))


def test_target_matching_nothing_fails(report: dict[str, Any]) -> None:
    (result,) = evaluate_policy(report, {"min_accuracy": {"fgsm": 0.1}})
    assert not result.passed
    assert result.observed is None
    assert "no attack setting of the audit matches 'fgsm'" in result.message


def test_unmeasured_metric_fails(report: dict[str, Any]) -> None:
    report["attacks"]["pgd:eps=4/255"]["adversarial"]["mean_auroc"] = None
    (result,) = evaluate_policy(report, {"min_auroc": {"pgd:eps=4/255": 0.1}})
    assert not result.passed
    assert "was not measured" in result.message


def test_require_reliable_without_sanity_fails(
    report: dict[str, Any], make_report: Callable[..., dict[str, Any]]
) -> None:
    del report["sections"]["sanity"]
    (result,) = evaluate_policy(report, {"require_reliable": True})
    assert not result.passed
    assert "did not run" in result.message
    (off,) = evaluate_policy(report, {"require_reliable": False})
    assert off.passed
