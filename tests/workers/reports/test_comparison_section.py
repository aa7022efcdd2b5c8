"""The baseline comparison, decided from per-image outcomes, in the report and its HTML."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from app.core import comparison
from tests.workers.reports.conftest import make_report
from workers.analyses.base import Section
from workers.audit.outcomes import apply_baseline
from workers.reports.html import render_html
from workers.reports.junit import render_junit
from workers.reports.schema import validate_report

KEY = "pgd:eps=8/255"


def _write(folder: Path, correct_adv: list[bool]) -> None:
    folder.mkdir()
    n = len(correct_adv)
    adv = np.asarray(correct_adv)
    comparison.save_outcomes(folder / comparison.PER_IMAGE_FILE, np.arange(n),
                             {"clean": np.ones(n, bool), KEY: adv}, {KEY: ~adv})


def test_a_regression_fails_its_rule_in_the_report_the_junit_and_the_html(
    tmp_path: Path, sections: list[Section]
) -> None:
    _write(tmp_path / "base", [True] * 80 + [False] * 20)
    _write(tmp_path / "cand", [True] * 40 + [False] * 60)
    report = make_report(None)
    apply_baseline(report, tmp_path / "cand", tmp_path / "base",
                   {"baseline": "base-audit", "max_regression": {"accuracy": {KEY: 0.05}}},
                   seed=0)
    validate_report(report)
    assert report["summary"]["verdict"] == "fail"
    [result] = report["policy"]["results"]
    assert result["rule"] == "max_regression.accuracy"
    assert result["observed"] == 0.4
    assert result["passed"] is False
    junit = render_junit(report)
    assert f'name="max_regression.accuracy[{KEY}]"' in junit
    assert "<failure" in junit
    html = render_html(report, sections)
    assert "Against the baseline audit, image by image" in html
    assert "base-audit" in html
    row = re.search(r"<tr><td class=\"key\">accuracy</td><td class=\"key\">pgd:eps=8/255</td>"
                    r"(.*?)</tr>", html)
    assert row is not None
    assert ">FAIL<" in row.group(1)
    assert "0.800" in row.group(1)
    assert "0.400" in row.group(1)
