import numpy as np
import pytest

from workers.defenses.calibration import youden_thresholds


def test_youden_separates_shifted_scores() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, size=(400, 2))
    # Finding 0 is separable around 0.9 (a badly calibrated model); finding 1 around 0.2.
    probs = np.stack([0.85 + 0.1 * labels[:, 0] + rng.uniform(0, 0.04, 400),
                      0.1 + 0.2 * labels[:, 1] + rng.uniform(0, 0.05, 400)], axis=1)
    t0, t1 = youden_thresholds(probs, labels)
    assert 0.89 < t0 <= 0.96
    assert 0.15 < t1 <= 0.31
    assert ((probs[:, 0] >= t0) == (labels[:, 0] == 1)).all()


def test_constant_finding_keeps_half() -> None:
    labels = np.zeros((10, 1))
    assert youden_thresholds(np.random.default_rng(0).uniform(size=(10, 1)), labels) == [0.5]


def test_youden_matches_the_exhaustive_search() -> None:
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, size=(300, 3))
    probs = np.clip(0.3 * labels + rng.normal(0.4, 0.2, size=(300, 3)), 0.0, 1.0)
    chosen = youden_thresholds(probs, labels)
    for k in range(3):
        y, p = labels[:, k] == 1, probs[:, k]

        def j(t: float, y: np.ndarray = y, p: np.ndarray = p) -> float:
            return float((p[y] >= t).mean() + (p[~y] < t).mean() - 1.0)

        best = max(j(t) for t in np.unique(p))
        assert j(chosen[k]) == pytest.approx(best, abs=1e-3)
