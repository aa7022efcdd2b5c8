"""JUnit XML: one case per policy result, failures exactly where the policy fails."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Any

from workers.analyses.base import Section
from workers.reports.junit import render_junit


def parse(xml: str) -> ET.Element:
    assert xml.startswith('<?xml version="1.0" encoding="utf-8"?>')
    return ET.fromstring(xml.split("\n", 1)[1])


def suite(root: ET.Element, name: str) -> ET.Element:
    found = root.find(f"testsuite[@name='{name}']")
    assert found is not None
    return found


def test_fails_exactly_the_rule_that_fails(make_report: Callable[..., dict[str, Any]]) -> None:
    report = make_report({
        "min_clean_accuracy": 0.8,                       # 1.0: passes
        "min_accuracy": {"pgd:eps=4/255": 0.6},          # 0.7: passes
        "max_fooling_rate": {"pgd:eps=8/255": 0.5},      # 0.6: fails
        "min_auroc": {"square": 0.1},                    # passes
    })
    root = parse(render_junit(report))
    policy = suite(root, "robustdx.policy")
    cases = policy.findall("testcase")
    names = [c.get("name") for c in cases]
    assert names == ["min_clean_accuracy", "min_accuracy[pgd:eps=4/255]",
                     "max_fooling_rate[pgd:eps=8/255]", "min_auroc[square:eps=8/255]"]
    failed = [c.get("name") for c in cases if c.find("failure") is not None]
    assert failed == ["max_fooling_rate[pgd:eps=8/255]"]
    failure = cases[2].find("failure")
    assert failure is not None
    assert "0.600, above the maximum 0.500" in (failure.get("message") or "")
    assert policy.get("tests") == "4"
    assert policy.get("failures") == "1"
    assert policy.get("errors") == "0"
    assert policy.get("skipped") == "0"
    props = {p.get("name"): p.get("value") for p in policy.iter("property")}
    assert props["verdict"] == "fail"


def test_counts_add_up(make_report: Callable[..., dict[str, Any]]) -> None:
    root = parse(render_junit(make_report({"max_fooling_rate": 0.45})))
    suites = root.findall("testsuite")
    for key in ("tests", "failures", "errors", "skipped"):
        assert int(root.get(key) or -1) == sum(int(s.get(key) or 0) for s in suites)
        for s in suites:
            cases = s.findall("testcase")
            tag = {"failures": "failure", "errors": "error", "skipped": "skipped"}.get(key)
            expected = len(cases) if tag is None else sum(c.find(tag) is not None for c in cases)
            assert int(s.get(key) or -1) == expected
    assert root.get("failures") == "1"  # only pgd 8/255 (0.6) fools more than 0.45


def test_no_policy_is_one_skipped_case(report: dict[str, Any]) -> None:
    policy = suite(parse(render_junit(report)), "robustdx.policy")
    (case,) = policy.findall("testcase")
    assert case.get("name") == "policy"
    assert case.find("skipped") is not None
    assert policy.get("skipped") == "1"


def test_sanity_checks_pass_or_are_skipped(
    make_report: Callable[..., dict[str, Any]], make_sections: Callable[..., list[Section]]
) -> None:
    clean = suite(parse(render_junit(make_report())), "robustdx.sanity")
    assert int(clean.get("tests") or 0) == 8
    # The hand-made arrays have no gradient probe: that check has nothing to judge.
    (probe,) = [c for c in clean.findall("testcase") if c.find("skipped") is not None]
    assert probe.get("name") == "loss_vs_steps"
    probe_skip = probe.find("skipped")
    assert probe_skip is not None
    assert (probe_skip.get("message") or "").startswith("not applicable:")
    flagged_sections = make_sections({"pgd:eps=4/255": 10, "pgd:eps=8/255": 20,
                                      "square:eps=8/255": 70})
    root = parse(render_junit(make_report(sections=flagged_sections)))
    sanity = suite(root, "robustdx.sanity")
    skipped = [c for c in sanity.findall("testcase") if c.find("skipped") is not None]
    assert [c.get("name") for c in skipped] == ["black_box_beats_white_box", "loss_vs_steps"]
    element = skipped[0].find("skipped")
    assert element is not None
    assert "may be unreliable" in (element.get("message") or "")
    assert sanity.get("failures") == "0"  # warnings, not failures: the policy gates


def test_hostile_strings_stay_well_formed(make_report: Callable[..., dict[str, Any]]) -> None:
    report = make_report({"min_accuracy": 0.99}, model_name='<model & "x"> \x07bell')
    root = parse(render_junit(report))
    props = {p.get("name"): p.get("value") for p in root.iter("property")}
    assert props["model"] == '<model & "x"> bell'


def test_budget_rules_are_named_by_budget(make_report: Callable[..., dict[str, Any]]) -> None:
    root = parse(render_junit(make_report({"min_robust_accuracy": 0.5})))
    policy = suite(root, "robustdx.policy")
    names = [c.get("name") for c in policy.findall("testcase")]
    assert names == ["min_robust_accuracy[linf:eps=4/255]", "min_robust_accuracy[linf:eps=8/255]"]
    failed = [c.get("name") for c in policy.findall("testcase") if c.find("failure") is not None]
    assert failed == ["min_robust_accuracy[linf:eps=8/255]"]
