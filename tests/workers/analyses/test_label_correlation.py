"""``label_correlation``: correlation of findings, truth vs clean vs adversarial."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from models.card import ModelCard
from models.phantoms import generate
from models.wrapper import DiagnosticModel
from workers.analyses.base import SummaryContext
from workers.analyses.label_correlation import (
    LabelCorrelationAnalysis,
    correlation_matrix,
)


class Oracle(nn.Module):
    """A perfect multi-label model for a fixed set of images: it recognises each image
    (nearest stored image) and answers its true findings with a confident logit."""

    def __init__(self, normalized: Tensor, labels: Tensor) -> None:
        super().__init__()
        self.images: Tensor
        self.answers: Tensor
        self.register_buffer("images", normalized.flatten(1))
        self.register_buffer("answers", 8.0 * (2.0 * labels.float() - 1.0))

    def forward(self, z: Tensor) -> Tensor:
        nearest = torch.cdist(z.flatten(1), self.images).argmin(dim=1)
        return self.answers[nearest]


def chest(n: int = 240) -> tuple[Tensor, Tensor, ModelCard]:
    """Chest-radiograph phantoms: findings that co-occur (cardiomegaly with effusion)."""
    p = generate("chest", n, size=32, seed=3)
    images = torch.from_numpy(p.images).permute(0, 3, 1, 2).float() / 255
    labels = torch.from_numpy(p.labels).float()
    card = ModelCard(name="oracle", task="multi-label", labels=p.label_names,
                     input={"channels": 1, "height": 32, "width": 32},
                     thresholds={p.label_names[0]: 0.7})
    return images, labels, card


def test_truth_correlation_is_recovered_from_perfect_predictions(kit):
    images, labels, card = chest()
    model = DiagnosticModel(Oracle(images, labels), card, card.resolved_head(5)).eval()
    # A perturbation the oracle shrugs off, and one that turns every answer into the
    # first image's: co-occurrence is destroyed (every finding constant).
    shrug = (images + 1 / 255).clamp(0, 1)
    first = images[:1].expand_as(images).clone()
    section, _ = kit.run(LabelCorrelationAnalysis(), model, images, labels,
                         {"tiny": shrug, "collapse": first})
    assert section.applicable
    truth = np.array(section.data["truth"]["matrix"])
    expected = np.corrcoef(labels.numpy().T)
    np.testing.assert_allclose(truth, expected, atol=1e-12)
    # The phantoms' findings really co-occur, so recovering them is not trivial.
    assert truth[0, 1] > 0.2
    np.testing.assert_allclose(section.data["clean"]["binary"]["matrix"], truth, atol=1e-12)
    np.testing.assert_allclose(section.data["clean"]["probability"]["matrix"], truth,
                               atol=1e-9)
    assert section.data["truth_vs_clean"]["frobenius_binary"] == pytest.approx(0.0, abs=1e-12)
    tiny = section.data["attacks"]["tiny"]
    assert tiny["frobenius_binary"]["clean_vs_adversarial"] == pytest.approx(0.0, abs=1e-12)
    collapse = section.data["attacks"]["collapse"]
    assert collapse["binary"]["constant"] == list(card.labels)
    assert np.array_equal(collapse["binary"]["matrix"], np.eye(5))
    moved = collapse["moved_pairs"][0]
    assert moved["findings"] == ["Cardiomegaly", "Effusion"]  # the strongest pair
    assert moved["change"] == pytest.approx(-truth[0, 1])
    assert collapse["frobenius_binary"]["truth_vs_adversarial"] == pytest.approx(
        np.linalg.norm(truth - np.eye(5)))
    assert section.data["thresholds"][0] == 0.7
    assert len(section.figures) == 2


def test_constant_columns_give_zero_not_nan():
    values = np.array([[1, 0, 1], [1, 1, 0], [1, 0, 0], [1, 1, 1]], dtype=float)
    corr, constant = correlation_matrix(values)
    assert constant == [0]
    assert np.all(np.isfinite(corr))
    assert corr[0, 1] == corr[1, 0] == corr[0, 2] == 0.0
    assert corr[0, 0] == 1.0
    assert corr[1, 2] == pytest.approx(np.corrcoef(values[:, 1], values[:, 2])[0, 1])
    one, const = correlation_matrix(values[:1])
    assert np.array_equal(one, np.eye(3))
    assert const == [0, 1, 2]


def test_attack_on_a_trained_model_moves_the_correlations(kit):
    t = kit.trained("multi-label")
    x, y = t.images, t.labels
    adv = {"pgd:eps=16/255": kit.pgd(t.model, x, y, 16 / 255)}
    section, arrays = kit.run(LabelCorrelationAnalysis(), t.model, x, y, adv,
                              params={"top_pairs": 2})
    block = section.data["attacks"]["pgd:eps=16/255"]
    assert block["frobenius_binary"]["clean_vs_adversarial"] > 0.0
    assert len(block["moved_pairs"]) == 2
    assert abs(block["moved_pairs"][0]["change"]) >= abs(block["moved_pairs"][1]["change"])
    assert arrays["clean_probs"].shape == (x.shape[0], 3)


def test_single_label_is_not_applicable(softmax_model, kit):
    t = softmax_model
    analysis = LabelCorrelationAnalysis()
    reason = analysis.not_applicable(t.model)
    assert reason is not None
    assert "multi-label" in reason
    x, y = t.images[:8], t.labels[:8]
    section, _ = kit.run(analysis, t.model, x, y, {"a": x.clone()})
    assert not section.applicable
    assert "multi-label" in (section.reason or "")
    empty = analysis.summarize({}, SummaryContext(labels=("a", "b"), task="multi-label",
                                                  head="sigmoid", attack_keys=[]))
    assert not empty.applicable
