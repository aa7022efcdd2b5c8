"""Flip probability, top-k distance and corruption summaries against hand computations and
the ImageNet-P reference code (Hendrycks & Dietterich 2019, ``ImageNet-P/test.py``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import rankdata

from models.card import Head
from workers.perturbations.base import SequenceRule
from workers.perturbations.metrics import (
    FlipCounter,
    classification_metrics,
    corruption_summary,
    flip_counts,
    flip_probability,
    relative_drop,
    sequence_top_k_distance,
    top_k_distance,
    top_k_for,
)

FIRST, CONSECUTIVE = SequenceRule.FIRST, SequenceRule.CONSECUTIVE


# --- the reference implementation, transcribed (numpy, one video = one image) -----------


def _reference_flip_prob(predictions: list[np.ndarray], noise: bool, difficulty: int) -> float:
    result = 0.0
    step_size = 1 if noise else difficulty
    for vid_preds in predictions:
        result_for_vid = []
        for i in range(step_size):
            prev_pred = vid_preds[i]
            for pred in vid_preds[i::step_size][1:]:
                result_for_vid.append(int(prev_pred != pred))
                if not noise:
                    prev_pred = pred
        result += float(np.mean(result_for_vid)) / len(predictions)
    return result


def _reference_top5(
    ranks: list[list[np.ndarray]], noise: bool, difficulty: int, num_classes: int
) -> float:
    cum_sum_top5 = np.cumsum(np.asarray([0] + [1] * 5 + [0] * (num_classes - 1 - 5)))

    def dist(sigma: np.ndarray) -> float:
        return float(np.sum(np.abs(cum_sum_top5[:5] - cum_sum_top5[sigma - 1][:5])))

    result = 0.0
    step_size = 1 if noise else difficulty
    for vid_ranks in ranks:
        result_for_vid = []
        for i in range(step_size):
            perm1 = vid_ranks[i]
            perm1_inv = np.argsort(perm1)
            for rank in vid_ranks[i::step_size][1:]:
                perm2 = rank
                result_for_vid.append(dist(perm2[perm1_inv]))
                if not noise:
                    perm1 = perm2
                    perm1_inv = np.argsort(perm1)
        result += float(np.mean(result_for_vid)) / len(ranks)
    return result


@pytest.mark.parametrize("rule", [FIRST, CONSECUTIVE])
@pytest.mark.parametrize("difficulty", [1, 2, 3])
def test_flip_probability_matches_reference(rule: SequenceRule, difficulty: int) -> None:
    g = torch.Generator().manual_seed(difficulty)
    preds = torch.randint(0, 3, (11, 40), generator=g)
    ours = float(flip_probability(preds, rule, difficulty))
    ref = _reference_flip_prob([preds[:, i].numpy() for i in range(40)], rule == FIRST, difficulty)
    assert ours == pytest.approx(ref)


@pytest.mark.parametrize("rule", [FIRST, CONSECUTIVE])
@pytest.mark.parametrize("difficulty", [1, 3])
def test_top5_distance_matches_reference(rule: SequenceRule, difficulty: int) -> None:
    g = torch.Generator().manual_seed(10 + difficulty)
    k_classes = 10
    # Scores that drift a little from frame to frame, so rankings partly persist.
    base = torch.randn(1, 25, k_classes, generator=g)
    scores = base + 0.4 * torch.randn(8, 25, k_classes, generator=g).cumsum(0)
    ours = float(sequence_top_k_distance(scores, rule, top_k_for(k_classes), difficulty).mean())
    ranks = [
        [rankdata(-frame, method="ordinal").astype(np.int64) for frame in scores[:, i].numpy()]
        for i in range(25)
    ]
    ref = _reference_top5(ranks, rule == FIRST, difficulty, k_classes)
    assert ours == pytest.approx(ref)
    assert ours > 0


def test_flip_counts_by_hand() -> None:
    # One image; predictions over 5 frames: 0 1 1 0 0.
    preds = torch.tensor([[0], [1], [1], [0], [0]])
    flips, pairs = flip_counts(preds, FIRST)
    assert (int(flips[0]), pairs) == (2, 4)  # frames 1, 2 differ from frame 0
    flips, pairs = flip_counts(preds, CONSECUTIVE, 1)
    assert (int(flips[0]), pairs) == (2, 4)  # 0-1 and 2-3 change
    flips, pairs = flip_counts(preds, CONSECUTIVE, 2)
    assert (int(flips[0]), pairs) == (3, 3)  # (0,2), (1,3) and (2,4) all differ
    flips, pairs = flip_counts(torch.tensor([[0], [1], [0], [1], [1]]), CONSECUTIVE, 2)
    assert (int(flips[0]), pairs) == (1, 3)  # only (2,4) differs


def test_top_k_distance_by_hand() -> None:
    ref = torch.tensor([[0.5, 0.3, 0.2]])
    assert int(top_k_distance(ref, ref, 2)[0]) == 0
    swapped = torch.tensor([[0.3, 0.5, 0.2]])  # classes 0 and 1 trade ranks
    assert int(top_k_distance(ref, swapped, 2)[0]) == 2
    dropped = torch.tensor([[0.1, 0.3, 0.6]])  # top class falls to the bottom
    # i=0: class 0 now rank 2 -> |0 - min(2, 2)| = 2; i=1: class 1 stays rank 1 -> 0.
    assert int(top_k_distance(ref, dropped, 2)[0]) == 2
    assert [top_k_for(k) for k in (1, 2, 3, 6, 14)] == [0, 1, 2, 5, 5]


def _stream(
    outputs: torch.Tensor, rule: SequenceRule, difficulty: int, head: Head, top_k: int | None = None
) -> FlipCounter:
    counter = FlipCounter(rule, difficulty, head, top_k=top_k)
    for frame in outputs:
        counter.update(frame)
    return counter


@pytest.mark.parametrize("rule", [FIRST, CONSECUTIVE])
@pytest.mark.parametrize("difficulty", [1, 2])
def test_streaming_counter_equals_batch_computation(rule: SequenceRule, difficulty: int) -> None:
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(7, 12, 4, generator=g)
    counter = _stream(logits, rule, difficulty, Head.SOFTMAX, top_k=3)
    flips, pairs = flip_counts(logits.argmax(dim=2), rule, difficulty)
    assert counter.pairs == pairs
    assert np.array_equal(counter.flips, flips.numpy())
    assert np.array_equal(counter.any_flips, flips.numpy())
    dist = sequence_top_k_distance(logits.softmax(2), rule, 3, difficulty) * pairs
    assert counter.top_k_distance_sum is not None
    assert np.allclose(counter.top_k_distance_sum, dist.numpy())


def test_multi_label_flips_per_finding_and_any() -> None:
    # 2 images, 3 findings, 3 frames of logits (sigmoid head, thresholds 0.5 -> logit 0).
    logits = torch.tensor(
        [
            [[1.0, -1.0, 1.0], [-1.0, -1.0, -1.0]],
            [[-1.0, -1.0, 1.0], [-1.0, -1.0, -1.0]],  # image 0 finding 0 flips
            [[-1.0, 1.0, -1.0], [-1.0, -1.0, -1.0]],  # image 0 findings 1 and 2 flip
        ]
    )
    counter = _stream(logits, CONSECUTIVE, 1, Head.SIGMOID)
    assert counter.flips.tolist() == [[1, 1, 1], [0, 0, 0]]
    assert counter.any_flips.tolist() == [2, 0]
    assert counter.pairs == 2
    first = _stream(logits, FIRST, 1, Head.SIGMOID)
    assert first.flips.tolist() == [[2, 1, 1], [0, 0, 0]]
    assert first.any_flips.tolist() == [2, 0]
    per_finding = flip_probability((logits > 0).long(), CONSECUTIVE, 1)
    assert per_finding.tolist() == pytest.approx([0.25, 0.25, 0.25])


def test_binary_logit_head_flips_on_the_sign() -> None:
    logits = torch.tensor([[[0.5], [-2.0]], [[-0.5], [-1.0]], [[0.1], [3.0]]])
    counter = _stream(logits, CONSECUTIVE, 1, Head.BINARY_LOGIT)
    assert counter.flips.tolist() == [2, 1]


def test_constant_outputs_never_flip() -> None:
    logits = torch.tensor([0.2, 1.5, -0.3]).expand(9, 5, 3)
    for rule in (FIRST, CONSECUTIVE):
        counter = _stream(logits, rule, 2, Head.SOFTMAX, top_k=2)
        assert counter.flips.sum() == 0
        assert counter.top_k_distance_sum is not None
        assert counter.top_k_distance_sum.sum() == 0


def test_classification_metrics_by_hand() -> None:
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    labels = np.array([0, 1, 1, 1])
    m = classification_metrics(probs, labels, "single-label")
    assert m["accuracy"] == pytest.approx(0.75)
    assert m["balanced_accuracy"] == pytest.approx((1.0 + 2 / 3) / 2)
    assert m["auroc"] == pytest.approx(1.0)  # every positive scores above the negative
    ml = classification_metrics(
        np.array([[0.9, 0.2], [0.8, 0.7], [0.1, 0.1]]),
        np.array([[1, 0], [1, 1], [0, 1]]),
        "multi-label",
        [0.5, 0.5],
    )
    assert ml["accuracy"] == pytest.approx(2 / 3)  # every finding right
    assert ml["finding_accuracy"] == pytest.approx(5 / 6)


def test_corruption_summary_by_hand() -> None:
    s = corruption_summary(0.8, {"a": [0.8, 0.6], "b": [0.4, 0.4]})
    a, b = s["per_perturbation"]["a"], s["per_perturbation"]["b"]
    assert a["mean"] == pytest.approx(0.7)
    assert a["corruption_error"] == pytest.approx(0.3)
    assert a["relative_corruption_error"] == pytest.approx(0.1)
    assert a["mean_relative_drop"] == pytest.approx(0.125)
    assert b["mean_relative_drop"] == pytest.approx(0.5)
    assert s["mCE"] == pytest.approx((0.3 + 0.6) / 2)
    assert s["mean_relative_drop"] == pytest.approx((0.125 + 0.5) / 2)
    assert np.isnan(relative_drop(0.0, 0.5))
