"""On a trained tiny model, stronger perturbations hurt more and noise flips more."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import torch

from models.card import Head
from workers.perturbations import get_perturbation, iter_sequence
from workers.perturbations.metrics import FlipCounter


def _accuracy(trained: Any, images: torch.Tensor) -> float:
    with torch.inference_mode():
        pred = trained.model(images).argmax(dim=1)
    return float((pred == trained.labels).float().mean())


@pytest.mark.parametrize(
    "name",
    ["gaussian_noise", "speckle_noise", "contrast", "translation", "rotation", "air_bubbles"],
)
def test_accuracy_falls_with_severity(name: str, trained: Any) -> None:
    p = get_perturbation(name)
    clean = _accuracy(trained, trained.images)
    curve = [clean] + [
        _accuracy(trained, p(trained.images, s, generator=torch.Generator().manual_seed(0)))
        for s in range(1, 6)
    ]
    assert clean >= 0.95
    assert curve[5] <= clean - 0.2
    # Non-increasing, up to sampling noise of a 200-image test set.
    assert all(b <= a + 0.03 for a, b in itertools.pairwise(curve)), curve


def test_noise_flips_more_at_higher_difficulty(trained: Any) -> None:
    """Noise sequences redraw the noise at severity = difficulty: the mildest noise leaves
    the trained model's diagnoses stable, the strongest makes some flip between draws."""
    rates = []
    for difficulty in (1, 3):
        counter = FlipCounter("first", difficulty, Head.SOFTMAX)
        gen = torch.Generator().manual_seed(1)
        with torch.inference_mode():
            for frame in iter_sequence(
                "speckle_noise", trained.images, frames=8, difficulty=difficulty, generator=gen
            ):
                counter.update(trained.model(frame))
        rates.append(counter.flips.sum() / (counter.pairs * trained.images.shape[0]))
    assert rates[1] > rates[0]
    assert rates[1] > 0


def test_exposure_sweep_flips_the_trained_model(trained: Any) -> None:
    """A brightness sweep from under- to over-exposure flips some diagnoses, and a wider
    stride between compared frames flips at least as often."""
    rates = []
    for difficulty in (1, 3):
        counter = FlipCounter("consecutive", difficulty, Head.SOFTMAX)
        gen = torch.Generator().manual_seed(2)
        with torch.inference_mode():
            for frame in iter_sequence(
                "brightness", trained.images, frames=10, difficulty=difficulty, generator=gen
            ):
                counter.update(trained.model(frame))
        rates.append(counter.flips.sum() / (counter.pairs * trained.images.shape[0]))
    assert rates[0] > 0
    assert rates[1] >= rates[0]
