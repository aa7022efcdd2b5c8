"""JUnit XML rendering of a report, for test harnesses and CI dashboards.

Two test suites inside ``<testsuites>``:

- ``robustdx.policy``: one test case per policy result (a rule on one attack setting, named
  like ``min_accuracy[pgd:eps=4/255]``), with a ``<failure>`` when it failed. Without a
  policy, a single skipped case ``policy`` says so.
- ``robustdx.sanity``: one test case per sanity check; a flagged check is **skipped** with
  its message, not failed: sanity flags warn that the numbers may be unreliable, while only
  the policy decides pass or fail (as the CLI's exit status does). A harness that must
  gate on reliability adds the policy rule ``"require_reliable": true``, which fails. A
  check with nothing to compare is skipped too, its message starting "not applicable".

The counts of every suite (tests, failures, errors, skipped) are computed from its cases,
and the document is plain JUnit (the schema Jenkins, GitLab and pytest's junitxml use).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from typing import Any

_INVALID_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _clean(text: Any) -> str:
    """XML 1.0 cannot carry control characters, even escaped; drop them."""
    return _INVALID_XML.sub("", str(text))


def _suite(name: str, properties: Mapping[str, Any] | None = None) -> ET.Element:
    suite = ET.Element("testsuite", {"name": name})
    if properties:
        props = ET.SubElement(suite, "properties")
        for key, value in properties.items():
            ET.SubElement(props, "property", {"name": _clean(key), "value": _clean(value)})
    return suite


def _case(suite: ET.Element, name: str) -> ET.Element:
    return ET.SubElement(
        suite, "testcase", {"classname": suite.get("name", ""), "name": _clean(name), "time": "0"}
    )


def _count(suite: ET.Element) -> dict[str, int]:
    cases = suite.findall("testcase")
    counts = {
        "tests": len(cases),
        "failures": sum(1 for c in cases if c.find("failure") is not None),
        "errors": sum(1 for c in cases if c.find("error") is not None),
        "skipped": sum(1 for c in cases if c.find("skipped") is not None),
    }
    for key, value in counts.items():
        suite.set(key, str(value))
    suite.set("time", "0")
    return counts


def _reliable(value: Any) -> str:
    return "unknown" if value is None else str(bool(value)).lower()


def _result_name(result: Mapping[str, Any]) -> str:
    """``min_accuracy[pgd:eps=4/255]``, ``min_robust_accuracy[linf:eps=4/255]``: the same
    names as :attr:`workers.reports.policy.RuleResult.name`."""
    where = result.get("attack") or result.get("budget") or (
        result.get("target") if result.get("target") not in (None, "*") else None
    )
    return f"{result['rule']}[{where}]" if where else str(result["rule"])


def render_junit(report: Mapping[str, Any]) -> str:
    """The JUnit XML document (UTF-8 text with an XML declaration) of a report."""
    job = report.get("job") or {}
    summary = report.get("summary") or {}
    model = (report.get("provenance") or {}).get("model") or {}
    props = {
        "job": job.get("id", ""),
        "model": model.get("name", ""),
        "model_sha256": model.get("sha256") or "",
        "verdict": summary.get("verdict", ""),
        "reliable": _reliable(summary.get("reliable")),
        "schema_version": report.get("schema_version", ""),
    }
    root = ET.Element("testsuites", {"name": _clean(f"robustdx audit {job.get('id', '')}")})

    policy_suite = _suite("robustdx.policy", props)
    policy = report.get("policy") or {}
    results = policy.get("results") or []
    if not results:
        case = _case(policy_suite, "policy")
        ET.SubElement(case, "skipped", {"message": "no policy given"})
    for result in results:
        case = _case(policy_suite, _result_name(result))
        if not result.get("passed"):
            failure = ET.SubElement(
                case, "failure", {"message": _clean(result.get("message", "")),
                                  "type": "PolicyFailure"}
            )
            failure.text = _clean(
                f"rule: {result['rule']}\ntarget: {result.get('target')}\n"
                f"attack: {result.get('attack')}\nbudget: {result.get('budget')}\n"
                f"threshold: {result.get('threshold')}\n"
                f"observed: {result.get('observed')}"
            )
        else:
            out = ET.SubElement(case, "system-out")
            out.text = _clean(result.get("message", ""))
    suites = [policy_suite]

    sanity = (report.get("sections") or {}).get("sanity")
    if sanity and sanity.get("applicable"):
        sanity_suite = _suite("robustdx.sanity")
        for check in sanity.get("checks") or []:
            case = _case(sanity_suite, str(check.get("name", "check")))
            if check.get("flagged"):
                ET.SubElement(case, "skipped", {"message": _clean(check.get("message", ""))})
            elif check.get("status") == "not applicable":
                ET.SubElement(case, "skipped", {
                    "message": _clean("not applicable: " + str(check.get("message", "")))})
            else:
                out = ET.SubElement(case, "system-out")
                out.text = _clean(check.get("message", ""))
        suites.append(sanity_suite)

    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for suite in suites:
        for key, value in _count(suite).items():
            totals[key] += value
        root.append(suite)
    for key, value in totals.items():
        root.set(key, str(value))
    root.set("time", "0")
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode")
