"""Paired baseline comparison: regression, its bootstrap interval, and the decision rule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from app.core import comparison
from models.errors import InvalidParametersError

KEY = "pgd:eps=2/255"


def _outcomes(correct_clean: list[bool], correct_adv: list[bool]) -> comparison.Outcomes:
    clean, adv = np.asarray(correct_clean), np.asarray(correct_adv)
    return comparison.Outcomes(np.arange(clean.shape[0]), {"clean": clean, KEY: adv},
                               {KEY: clean != adv})


def _row(rows: list[comparison.Row], metric: str, setting: str) -> comparison.Row:
    [row] = [r for r in rows if r.metric == metric and r.setting == setting]
    return row


def test_the_same_outcomes_show_no_regression_and_pass_a_zero_margin() -> None:
    rng = np.random.default_rng(0)
    clean = rng.random(200) < 0.9
    adv = clean & (rng.random(200) < 0.5)
    a = comparison.Outcomes(np.arange(200), {"clean": clean, KEY: adv}, {KEY: clean != adv})
    rows = comparison.compare(a, a, {"accuracy": {KEY: 0.0}})
    row = _row(rows, "accuracy", KEY)
    assert row.regression == 0.0
    assert row.ci == (0.0, 0.0)  # paired: every resample has the same images for both
    assert row.passed is True
    assert row.candidate == pytest.approx(adv.mean())


def test_a_clear_regression_fails_and_is_measured_on_paired_images() -> None:
    base = _outcomes([True] * 100, [True] * 60 + [False] * 40)
    cand = _outcomes([True] * 100, [True] * 30 + [False] * 70)
    rows = comparison.compare(cand, base, {"accuracy": {KEY: 0.02}, "fooling_rate": {"*": 0.05}})
    acc = _row(rows, "accuracy", KEY)
    assert acc.regression == pytest.approx(0.30)
    assert acc.ci[0] > 0.2
    assert acc.passed is False
    fool = _row(rows, "fooling_rate", KEY)
    assert fool.regression == pytest.approx(0.30)
    assert fool.passed is False
    assert _row(rows, "accuracy", "clean").margin is None  # '*' does not cover clean


def test_a_small_regression_with_a_wide_interval_is_not_shown_to_be_within_the_margin() -> None:
    # 1 of 50 images worse: point estimate 0.02 (at the margin), interval well beyond it.
    base = _outcomes([True] * 50, [True] * 25 + [False] * 25)
    cand = _outcomes([True] * 50, [True] * 24 + [False] * 26)
    row = _row(comparison.compare(cand, base, {"accuracy": {KEY: 0.02}}), "accuracy", KEY)
    assert row.regression == pytest.approx(0.02)
    assert row.ci[1] > 0.02
    assert row.passed is False
    results = comparison.policy_results([row], "base-1")
    assert results[0]["rule"] == "max_regression.accuracy"
    assert results[0]["passed"] is False
    assert "not shown to be within the margin 0.020" in results[0]["message"]


def test_images_are_paired_by_dataset_position_not_row_order() -> None:
    base = _outcomes([True, True, False, False], [True, False, False, False])
    shuffled = comparison.Outcomes(np.asarray([3, 2, 1, 0]),
                                   {"clean": np.asarray([False, False, True, True]),
                                    KEY: np.asarray([False, False, False, True])},
                                   {KEY: np.asarray([False, False, True, False])})
    row = _row(comparison.compare(shuffled, base), "accuracy", KEY)
    assert row.regression == 0.0
    assert row.ci == (0.0, 0.0)


def test_outcomes_survive_the_file(tmp_path: Path) -> None:
    a = _outcomes([True, False, True], [False, False, True])
    comparison.save_outcomes(tmp_path / "per_image.npz", a.indices, a.correct, a.flipped)
    b = comparison.load_outcomes(tmp_path / "per_image.npz")
    assert b.keys == [KEY]
    assert b.correct["clean"].tolist() == [True, False, True]
    assert b.flipped[KEY].tolist() == [True, False, False]


def test_other_images_or_settings_cannot_be_compared() -> None:
    a = _outcomes([True] * 4, [True] * 4)
    other_images = comparison.Outcomes(np.arange(1, 5), a.correct, a.flipped)
    with pytest.raises(InvalidParametersError, match="same images"):
        comparison.compare(a, other_images)
    other_settings = comparison.Outcomes(a.indices, {"clean": a.correct["clean"],
                                                     "fgsm:eps=2/255": a.correct[KEY]}, {})
    with pytest.raises(InvalidParametersError, match="different attack settings"):
        comparison.compare(a, other_settings)


@pytest.mark.parametrize(("rules", "message"), [
    ({}, "must be an object"),
    ({"auroc": {KEY: 0.1}}, "unknown metric 'auroc'"),
    ({"accuracy": {KEY: 1.5}}, r"margin must be a number in \[0, 1\]"),
    ({"accuracy": {KEY: True}}, "margin must be a number"),
    ({"accuracy": {"pgd:eps=9/255": 0.1}}, "is not a setting of this audit"),
    ({"fooling_rate": {"clean": 0.1}}, "is not a setting of this audit"),
])
def test_malformed_rules_are_refused(rules: dict, message: str) -> None:
    with pytest.raises(InvalidParametersError, match=message):
        comparison.check_rules(rules, [KEY])
