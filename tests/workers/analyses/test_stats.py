"""Shared statistics: nan-skipping means, Wilson intervals, Fisher and Holm."""

from __future__ import annotations

import math

import numpy as np
import pytest

from workers.analyses.stats import (
    fisher_less,
    holm,
    nanmean,
    proportion_interval,
    wilson_interval,
)


def test_nanmean_skips_undefined_values() -> None:
    assert nanmean([1.0, None, float("nan"), 3.0, float("inf")]) == 2.0
    assert nanmean(np.array([np.nan, 2.0, 4.0])) == 3.0
    assert math.isnan(nanmean([None, float("nan")]))
    assert math.isnan(nanmean(np.zeros(0)))


def test_wilson_is_valid_at_the_edges() -> None:
    z2 = 1.959963984540054**2
    lo, hi = wilson_interval(0, 50)
    assert lo == 0.0
    assert hi == pytest.approx(z2 / (50 + z2))
    lo, hi = wilson_interval(50, 50)
    assert hi == 1.0
    assert lo == pytest.approx(50 / (50 + z2))
    lo, hi = wilson_interval(20, 40)
    assert lo < 0.5 < hi
    assert hi - 0.5 == pytest.approx(0.5 - lo)


def test_proportion_interval_falls_back_only_when_the_bootstrap_degenerates() -> None:
    ci, method = proportion_interval(np.zeros(30, dtype=bool), [0.0, 0.0])
    assert method == "wilson"
    assert ci is not None
    assert ci[1] > 0.1
    ci, method = proportion_interval(np.arange(30) < 10, [0.2, 0.5])
    assert (ci, method) == ([0.2, 0.5], "bootstrap")
    assert proportion_interval(np.zeros(30, dtype=bool), None) == (None, None)


def test_fisher_one_sided() -> None:
    assert fisher_less(0, 20, 20, 20) < 1e-9
    assert fisher_less(20, 20, 0, 20) == pytest.approx(1.0)
    assert fisher_less(5, 10, 0, 0) == 1.0


def test_holm_adjustment() -> None:
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert holm([]) == []
