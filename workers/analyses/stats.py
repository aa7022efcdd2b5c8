"""Small statistics shared by the analyses: means that skip undefined values, intervals for
proportions that stay valid at 0 and 1, and tests for comparing groups.

- :func:`nanmean`: the mean of the defined values (``None``, ``nan`` and infinities are
  left out); ``nan`` when none is defined.
- :func:`wilson_interval`: the Wilson score interval of a binomial proportion (Wilson,
  1927, *Probable inference, the law of succession, and statistical inference*, JASA 22).
  Unlike a percentile bootstrap, it does not collapse to ``[0, 0]`` when every image fails
  (or ``[1, 1]`` when every image passes): 0 of 50 correct gives ``[0, 0.071]`` at 95%.
- :func:`proportion_interval`: the bootstrap interval where it has spread, the Wilson
  interval where it degenerates (every image agrees).
- :func:`fisher_less` and :func:`holm`: a one-sided Fisher exact test of "the group's rate
  is below the rest's", and the Holm (1979) step-down correction for many such tests.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
from scipy import stats as _scipy_stats

#: How a reported interval was made (the ``*_ci_method`` fields of the report).
BOOTSTRAP = "bootstrap"
WILSON = "wilson"


def nanmean(values: Iterable[float | None] | np.ndarray) -> float:
    """Mean of the finite values; ``nan`` when there are none."""
    if isinstance(values, np.ndarray) and values.dtype.kind in "fiub":
        arr = values.astype(np.float64).reshape(-1)
    else:
        arr = np.asarray([np.nan if v is None else float(v) for v in values], dtype=np.float64)
    kept = arr[np.isfinite(arr)]
    return float(kept.mean()) if kept.size else float("nan")


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval of ``successes / n``; ``(nan, nan)`` when ``n == 0``."""
    if n <= 0:
        return (float("nan"), float("nan"))
    z = float(_scipy_stats.norm.ppf(0.5 + confidence / 2.0))
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # Exact bounds at the edges: floating error must not push 0 of n above 0.
    lo = 0.0 if successes == 0 else max(0.0, centre - half)
    hi = 1.0 if successes == n else min(1.0, centre + half)
    return (lo, hi)


def proportion_interval(
    mask: np.ndarray, bootstrap: Sequence[float] | None, confidence: float = 0.95
) -> tuple[list[float] | None, str | None]:
    """``(interval, method)`` for the share of ``True`` in ``mask``.

    ``bootstrap`` is the percentile interval already computed (or ``None`` when disabled).
    When every value of ``mask`` is the same the bootstrap has no spread and would claim
    certainty (``[0, 0]``); the Wilson interval is given instead.
    """
    m = np.asarray(mask).astype(bool).reshape(-1)
    n = int(m.size)
    if n == 0 or bootstrap is None:
        return (None, None)
    k = int(m.sum())
    if k in (0, n):
        lo, hi = wilson_interval(k, n, confidence)
        return ([lo, hi], WILSON)
    return ([float(bootstrap[0]), float(bootstrap[1])], BOOTSTRAP)


def fisher_less(k_group: int, n_group: int, k_rest: int, n_rest: int) -> float:
    """One-sided Fisher exact p-value that the group's success rate is below the rest's.

    ``1.0`` when either side is empty (nothing to compare).
    """
    if n_group <= 0 or n_rest <= 0:
        return 1.0
    table = [[k_group, n_group - k_group], [k_rest, n_rest - k_rest]]
    _, p = _scipy_stats.fisher_exact(table, alternative="less")
    return float(p)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (same order as given), capped at 1.

    Rejecting where the adjusted value is below alpha controls the family-wise error rate
    at alpha over all the tests (Holm, 1979, *A simple sequentially rejective multiple test
    procedure*, Scand. J. Statist. 6).
    """
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [1.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * float(p_values[i])))
        adjusted[i] = running
    return adjusted
