"""Audit reports: the JSON report (source of truth), its schema and policy gate, and its
renderings (HTML, JUnit XML, grid images).

::

    report = build_report(job, provenance, sections, attacks_meta, policy)
    html = render_html(report, sections, samples)
    xml = render_junit(report)
"""

from workers.reports.builder import build_report
from workers.reports.html import render_html
from workers.reports.junit import render_junit
from workers.reports.policy import RuleResult, evaluate_policy, parse_policy
from workers.reports.schema import REPORT_SCHEMA, ReportValidationError, validate_report

__all__ = [
    "REPORT_SCHEMA",
    "ReportValidationError",
    "RuleResult",
    "build_report",
    "evaluate_policy",
    "parse_policy",
    "render_html",
    "render_junit",
    "validate_report",
]
