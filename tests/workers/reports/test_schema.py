"""The report schema: valid reports pass, broken ones are refused with the path at fault."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from workers.reports.schema import (
    REPORT_SCHEMA,
    SCHEMA_VERSION,
    ReportValidationError,
    report_errors,
    schema_json,
    validate_report,
)


def test_schema_is_valid_draft_2020_12() -> None:
    Draft202012Validator.check_schema(REPORT_SCHEMA)
    assert REPORT_SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert json.loads(schema_json()) == REPORT_SCHEMA


def test_built_report_validates_and_is_strict_json(report: dict[str, Any]) -> None:
    validate_report(report)
    assert report["schema_version"] == SCHEMA_VERSION
    again = json.loads(json.dumps(report, allow_nan=False))
    validate_report(again)


@pytest.mark.parametrize(
    ("path", "value", "where"),
    [
        (("schema_version",), "0.9", "schema_version"),
        (("summary", "verdict"), "maybe", "summary/verdict"),
        (("attacks", "pgd:eps=4/255", "fooling_rate"), 1.5, "attacks/pgd:eps=4/255/fooling_rate"),
        (("attacks", "pgd:eps=4/255", "adversarial", "accuracy"), -0.1,
         "attacks/pgd:eps=4/255/adversarial/accuracy"),
        (("provenance", "model", "sha256"), "not-a-digest", "provenance/model/sha256"),
        (("sections", "sanity", "reliable"), "yes", "sections/sanity"),
        (("policy", "results"), [{"rule": "min_accuracy"}], "policy/results/0"),
    ],
)
def test_broken_report_is_refused(
    report: dict[str, Any], path: tuple[str, ...], value: Any, where: str
) -> None:
    broken = copy.deepcopy(report)
    node = broken
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    errors = report_errors(broken)
    assert errors
    assert any(e.startswith(where) for e in errors), errors
    with pytest.raises(ReportValidationError, match="does not follow the report schema"):
        validate_report(broken)


@pytest.mark.parametrize("key", ["provenance", "summary", "attacks", "sections", "artifacts"])
def test_missing_top_level_part_is_refused(report: dict[str, Any], key: str) -> None:
    broken = {k: v for k, v in report.items() if k != key}
    with pytest.raises(ReportValidationError, match=key):
        validate_report(broken)


def test_missing_package_version_is_refused(report: dict[str, Any]) -> None:
    broken = copy.deepcopy(report)
    del broken["provenance"]["packages"]["torch"]
    assert any("torch" in e for e in report_errors(broken))


def test_unknown_sections_are_open(report: dict[str, Any]) -> None:
    extended = copy.deepcopy(report)
    extended["sections"]["features"] = {
        "applicable": True, "figures": [], "layers": {"conv1": {"distance": 0.2}},
    }
    validate_report(extended)
    extended["sections"]["features"] = {"figures": []}  # applicable is required
    assert report_errors(extended)
