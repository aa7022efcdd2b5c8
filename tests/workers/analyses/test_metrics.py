"""Metric functions against scikit-learn and hand computations."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, recall_score, roc_auc_score

from workers.analyses import metrics as M


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def test_auroc_matches_sklearn_with_ties(rng: np.random.Generator) -> None:
    scores = np.round(rng.random(400), 1)  # coarse rounding: many ties
    positive = rng.random(400) < 0.3
    assert M.auroc(scores, positive) == pytest.approx(roc_auc_score(positive, scores))


def test_weighted_auroc_matches_sklearn_sample_weights(rng: np.random.Generator) -> None:
    scores = np.round(rng.random(200), 2)
    positive = rng.random(200) < 0.5
    weights = rng.integers(0, 4, size=(5, 200)).astype(float)
    got = M.weighted_auroc(scores, positive, weights)
    want = [roc_auc_score(positive, scores, sample_weight=w) for w in weights]
    np.testing.assert_allclose(got, want)


def test_auroc_hand_cases() -> None:
    assert M.auroc(np.array([0.1, 0.2, 0.8, 0.9]), np.array([0, 0, 1, 1])) == 1.0
    assert M.auroc(np.array([0.9, 0.8, 0.2, 0.1]), np.array([0, 0, 1, 1])) == 0.0
    assert M.auroc(np.array([0.5, 0.5]), np.array([0, 1])) == 0.5
    assert np.isnan(M.auroc(np.array([0.1, 0.2]), np.array([1, 1])))


def test_single_label_accuracy_and_balanced_accuracy(rng: np.random.Generator) -> None:
    labels = rng.integers(0, 3, 300)
    probs = rng.dirichlet(np.ones(3), 300)
    pred = M.predictions(probs, "single-label")
    assert M.accuracy(pred, labels, "single-label") == pytest.approx(np.mean(pred == labels))
    assert M.balanced_accuracy(pred, labels, "single-label", 3) == pytest.approx(
        balanced_accuracy_score(labels, pred)
    )


def test_multi_label_accuracy_is_exact_match_and_thresholds_apply() -> None:
    probs = np.array([[0.9, 0.2], [0.6, 0.8], [0.1, 0.1]])
    labels = np.array([[1, 0], [0, 1], [0, 0]])
    pred_default = M.predictions(probs, "multi-label")
    np.testing.assert_array_equal(pred_default, [[1, 0], [1, 1], [0, 0]])
    assert M.accuracy(pred_default, labels, "multi-label") == pytest.approx(2 / 3)
    pred_strict = M.predictions(probs, "multi-label", [0.7, 0.5])
    np.testing.assert_array_equal(pred_strict, [[1, 0], [0, 1], [0, 0]])
    assert M.accuracy(pred_strict, labels, "multi-label") == 1.0


def test_sensitivity_specificity_against_sklearn(rng: np.random.Generator) -> None:
    truth = (rng.random((250, 4)) < 0.3).astype(int)
    pred = (rng.random((250, 4)) < 0.4).astype(int)
    sens, spec = M.sensitivity_specificity(pred, truth)
    for j in range(4):
        assert sens[j] == pytest.approx(recall_score(truth[:, j], pred[:, j]))
        assert spec[j] == pytest.approx(recall_score(1 - truth[:, j], 1 - pred[:, j]))


def test_sensitivity_undefined_without_positives() -> None:
    sens, spec = M.sensitivity_specificity(np.array([[0], [1]]), np.array([[0], [0]]))
    assert np.isnan(sens[0])
    assert spec[0] == 0.5


def test_multi_label_balanced_accuracy_is_mean_of_per_finding() -> None:
    truth = np.array([[1, 0], [1, 1], [0, 0], [0, 1]])
    pred = np.array([[1, 1], [0, 1], [0, 1], [0, 1]])
    # finding 0: sens 1/2, spec 2/2 -> 0.75; finding 1: sens 2/2, spec 0/2 -> 0.5
    assert M.balanced_accuracy(pred, truth, "multi-label", 2) == pytest.approx(0.625)


def test_mean_confidence_wrong() -> None:
    probs = np.array([[0.9, 0.1], [0.3, 0.7], [0.6, 0.4]])
    labels = np.array([0, 0, 1])  # rows 1 and 2 wrong with confidence 0.7 and 0.6
    assert M.mean_confidence_wrong(probs, labels, "single-label") == pytest.approx(0.65)
    ml_probs = np.array([[0.8, 0.3]])  # finding 0 false positive (0.8), finding 1 right
    assert M.mean_confidence_wrong(ml_probs, np.array([[0, 0]]), "multi-label") == (
        pytest.approx(0.8)
    )
    assert np.isnan(M.mean_confidence_wrong(probs[:1], labels[:1], "single-label"))


def test_bootstrap_weights_are_deterministic_resamples() -> None:
    a = np.concatenate(list(M.bootstrap_weights(50, 300, seed=7)))
    b = np.concatenate(list(M.bootstrap_weights(50, 300, seed=7)))
    c = np.concatenate(list(M.bootstrap_weights(50, 300, seed=8)))
    assert a.shape == (300, 50)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    np.testing.assert_array_equal(a.sum(axis=1), 50)


def test_bootstrap_interval_contains_estimate_and_narrows(rng: np.random.Generator) -> None:
    widths = []
    for n in (50, 800):
        ok = rng.random(n) < 0.7
        lo, hi = M.bootstrap_ci(M.accuracy_statistic(ok), n, n_boot=500, seed=0)
        assert lo <= ok.mean() <= hi
        widths.append(hi - lo)
    assert widths[1] < widths[0] / 2  # width ~ 1/sqrt(n): 4x narrower for 16x images


def test_bootstrap_accuracy_interval_matches_normal_approximation(
    rng: np.random.Generator,
) -> None:
    n = 2000
    ok = rng.random(n) < 0.6
    lo, hi = M.bootstrap_ci(M.accuracy_statistic(ok), n, n_boot=2000, seed=3)
    se = np.sqrt(ok.mean() * (1 - ok.mean()) / n)
    assert hi - lo == pytest.approx(2 * 1.96 * se, rel=0.1)


def test_mean_auroc_statistic_with_unit_weights_is_the_mean_auroc(
    rng: np.random.Generator,
) -> None:
    probs = rng.random((120, 3))
    truth = (rng.random((120, 3)) < 0.4).astype(int)
    stat = M.mean_auroc_statistic(probs, truth)
    want = np.mean([roc_auc_score(truth[:, j], probs[:, j]) for j in range(3)])
    assert stat(np.ones((1, 120)))[0] == pytest.approx(want)


def test_per_label_auroc_single_label_is_one_vs_rest(rng: np.random.Generator) -> None:
    labels = rng.integers(0, 3, 200)
    probs = rng.dirichlet(np.ones(3), 200)
    got = M.per_label_auroc(probs, labels, "single-label")
    for j in range(3):
        assert got[j] == pytest.approx(roc_auc_score(labels == j, probs[:, j]))


def test_changed_is_fooling_indicator() -> None:
    assert M.changed(np.array([0, 1, 2]), np.array([0, 2, 2]), "single-label").tolist() == [
        False,
        True,
        False,
    ]
    a = np.array([[1, 0], [0, 0]])
    b = np.array([[1, 1], [0, 0]])
    assert M.changed(a, b, "multi-label").tolist() == [True, False]
