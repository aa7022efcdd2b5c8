"""``worst_case``: the union of a budget's attacks per image, on arrays with known answers."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from workers.analyses.alignment import attack_field
from workers.analyses.base import SummaryContext
from workers.analyses.bootstrap import Bootstrap
from workers.analyses.worst_case import summarize_worst_case, union_of

N = 10
A, B, C = "pgd:eps=8/255", "square:eps=8/255", "pgd:eps=4/255"


def _probs(p_true: np.ndarray) -> np.ndarray:
    """Two classes, every image of class 0 with probability ``p_true`` for it."""
    return np.stack([p_true, 1 - p_true], axis=1)


def arrays(broken: dict[str, list[int]], shaken: dict[str, dict[int, float]] | None = None,
           order: list[int] | None = None) -> dict[str, np.ndarray]:
    """Image 9 is wrong on clean; each attack breaks its listed images (p = 0.1) and may
    lower the true-class probability of others without breaking them (``shaken``)."""
    clean = np.full(N, 0.9)
    clean[9] = 0.2
    out: dict[str, np.ndarray] = {"index": np.arange(N), "labels": np.zeros(N, dtype=np.int64),
                                  "clean_probs": _probs(clean)}
    for key, images in broken.items():
        p = clean.copy()
        p[images] = 0.1
        for i, value in (shaken or {}).get(key, {}).items():
            p[i] = value
        idx = np.arange(N) if order is None else np.asarray(order)
        out[attack_field("adv_index", key)] = idx
        out[attack_field("adv_probs", key)] = _probs(p)[idx]
    return out


def ctx(keys: list[str], task: str = "single-label",
        labels: tuple[str, ...] = ("normal", "disease")) -> SummaryContext:
    return SummaryContext(labels=labels, task=task, head="softmax", attack_keys=keys,
                          params={"seed": 0})


@pytest.fixture
def section() -> Any:
    data = arrays({A: [0, 1, 2], B: [2, 3, 4], C: [0]})
    return summarize_worst_case(data, ctx([A, B, C]), Bootstrap(200, 0.95, 0))


def test_an_image_is_robust_only_if_it_survives_every_attack(section: Any) -> None:
    block = section.data["budgets"]["linf:eps=8/255"]
    assert block["attacks"] == [A, B]
    assert block["robust_accuracy"] == pytest.approx(0.4)  # images 5 to 8
    assert block["n_robust"] == 4
    assert block["clean_accuracy"] == pytest.approx(0.9)
    assert block["strongest_single_accuracy"] == pytest.approx(0.6)
    assert block["union_gain"] == pytest.approx(0.2)
    assert section.data["budgets"]["linf:eps=4/255"]["robust_accuracy"] == pytest.approx(0.8)


def test_first_breaking_attack_in_the_stated_order(section: Any) -> None:
    block = section.data["budgets"]["linf:eps=8/255"]
    assert block["first_broken_by"] == {"clean": 1, A: 3, B: 2}
    assert list(block["first_broken_by"]) == ["clean", A, B]
    assert block["not_broken"] == 4
    assert block["broken_by"] == {A: 3, B: 3}
    assert block["only_broken_by"] == {A: 2, B: 2}
    # A tie at 0.6 goes to the first attack of the audit.
    assert block["strongest_single_attack"] == A


def test_order_of_the_audit_decides_the_credit() -> None:
    data = arrays({A: [0, 1, 2], B: [2, 3, 4]})
    sec = summarize_worst_case(data, ctx([B, A]), Bootstrap(0, 0.95, 0))
    block = sec.data["budgets"]["linf:eps=8/255"]
    assert block["first_broken_by"] == {"clean": 1, B: 3, A: 2}
    assert block["robust_accuracy_ci"] is None  # intervals disabled


def test_shards_in_any_order_give_the_same_union() -> None:
    shuffled = [3, 7, 1, 0, 9, 2, 8, 6, 5, 4]
    a = summarize_worst_case(arrays({A: [0, 1, 2], B: [2, 3, 4]}), ctx([A, B]),
                             Bootstrap(50, 0.95, 0))
    b = summarize_worst_case(arrays({A: [0, 1, 2], B: [2, 3, 4]}, order=shuffled), ctx([A, B]),
                             Bootstrap(50, 0.95, 0))
    assert a.data["budgets"] == b.data["budgets"]


def test_worst_output_of_an_unbroken_image_is_the_highest_loss() -> None:
    data = arrays({A: [0], B: [1]}, shaken={B: {5: 0.6}, A: {5: 0.8}})
    u = union_of(data, [A, B], "single-label", None)
    assert u is not None
    worst = u.worst_probs("single-label")
    assert worst[5, 0] == pytest.approx(0.6)  # B's output: the lower true-class probability
    assert worst[0, 0] == pytest.approx(0.1)  # broken by A
    assert worst[9, 0] == pytest.approx(0.2)  # wrong on clean: the clean output


def test_wilson_interval_when_nothing_survives() -> None:
    data = arrays({A: list(range(9))})
    sec = summarize_worst_case(data, ctx([A]), Bootstrap(200, 0.95, 0))
    block = sec.data["budgets"]["linf:eps=8/255"]
    assert block["robust_accuracy"] == 0.0
    assert block["robust_accuracy_ci_method"] == "wilson"
    lo, hi = block["robust_accuracy_ci"]
    assert lo == 0.0
    assert hi == pytest.approx(0.2775, abs=1e-3)  # Wilson 0 of 10 at 95%


def test_multi_label_per_finding() -> None:
    labels = np.array([[1, 0]] * 6)
    clean = np.array([[0.9, 0.1]] * 6)
    a = clean.copy()
    a[0] = [0.2, 0.1]  # finding 0 missed
    b = clean.copy()
    b[1] = [0.9, 0.7]  # false alarm on finding 1
    b[2] = [0.3, 0.8]  # both wrong
    data = {"index": np.arange(6), "labels": labels, "clean_probs": clean,
            attack_field("adv_index", A): np.arange(6), attack_field("adv_probs", A): a,
            attack_field("adv_index", B): np.arange(6), attack_field("adv_probs", B): b}
    sec = summarize_worst_case(data, ctx([A, B], "multi-label", ("effusion", "nodule")),
                               Bootstrap(100, 0.95, 0))
    block = sec.data["budgets"]["linf:eps=8/255"]
    assert block["robust_accuracy"] == pytest.approx(0.5)  # exact match: images 3 to 5
    per = block["per_finding"]
    assert per["effusion"]["robust_accuracy"] == pytest.approx(4 / 6)  # images 0, 2 missed
    assert per["nodule"]["robust_accuracy"] == pytest.approx(4 / 6)  # images 1, 2 alarmed
    assert sec.data["accuracy_definition"].startswith("exact match")


def test_not_applicable_without_budgets() -> None:
    data = arrays({"deepfool": [0]})
    sec = summarize_worst_case(data, ctx(["deepfool"]), Bootstrap(0, 0.95, 0))
    assert sec.applicable is False
    assert "no attack setting of the audit has a budget" in (sec.reason or "")


def test_union_covers_only_the_images_every_attack_ran_on() -> None:
    data = arrays({A: [0, 1, 2], B: [2, 3, 4]})
    # B ran on the first half of the dataset only (a partial audit).
    data[attack_field("adv_index", B)] = data[attack_field("adv_index", B)][:5]
    data[attack_field("adv_probs", B)] = data[attack_field("adv_probs", B)][:5]
    sec = summarize_worst_case(data, ctx([A, B]), Bootstrap(0, 0.95, 0))
    block = sec.data["budgets"]["linf:eps=8/255"]
    assert block["n_images"] == 5
    assert block["robust_accuracy"] == 0.0  # images 0-4: each broken by A or B
