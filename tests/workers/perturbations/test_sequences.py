"""ImageNet-P style sequences: shapes, seeding, noise redraws and smooth sweeps."""

from __future__ import annotations

import pytest
import torch

from models.errors import InvalidParametersError
from workers.perturbations import (
    get_perturbation,
    iter_sequence,
    list_perturbations,
    make_sequence,
    pairs_compared,
    sequence_amounts,
)
from workers.perturbations.base import SequenceRule


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("name", list_perturbations())
def test_shape_range_and_seed(name: str, rgb_images: torch.Tensor) -> None:
    x = rgb_images[2:]
    a = make_sequence(name, x, frames=5, difficulty=2, generator=_gen(1))
    b = make_sequence(name, x, frames=5, difficulty=2, generator=_gen(1))
    assert a.shape == (5, *x.shape)
    assert a.min() >= 0
    assert a.max() <= 1
    assert torch.equal(a, b)
    streamed = torch.stack(list(iter_sequence(name, x, frames=5, difficulty=2, generator=_gen(1))))
    assert torch.equal(a, streamed)


@pytest.mark.parametrize("name", ["gaussian_noise", "rotation", "hair", "translation"])
def test_different_seed_different_frames(name: str, rgb_images: torch.Tensor) -> None:
    a = make_sequence(name, rgb_images, frames=4, generator=_gen(1))
    b = make_sequence(name, rgb_images, frames=4, generator=_gen(2))
    assert not torch.equal(a[1:], b[1:])


def test_noise_frames_are_independent_draws_at_the_difficulty_severity() -> None:
    x = torch.full((4, 1, 32, 32), 0.5)
    p = get_perturbation("gaussian_noise")
    for difficulty in (1, 2, 3):
        seq = make_sequence(p, x, frames=6, difficulty=difficulty, generator=_gen(0))
        noise = seq - x
        assert float(noise.std()) == pytest.approx(p.severities[difficulty - 1], rel=0.05)
        # Independent draws: two frames' noise is uncorrelated.
        corr = torch.corrcoef(torch.stack([noise[0].flatten(), noise[1].flatten()]))[0, 1]
        assert abs(float(corr)) < 0.1


def test_sweep_amounts_are_linear_and_frames_do_not_depend_on_difficulty(
    gray_images: torch.Tensor,
) -> None:
    assert sequence_amounts("rotation", 5) == pytest.approx([-10, -5, 0, 5, 10])
    a = make_sequence("rotation", gray_images, frames=5, difficulty=1, generator=_gen(3))
    b = make_sequence("rotation", gray_images, frames=5, difficulty=3, generator=_gen(3))
    assert torch.equal(a, b)
    assert torch.equal(a[2], gray_images)  # amount 0 is the identity
    with pytest.raises(InvalidParametersError, match="has no sweep"):
        sequence_amounts("shot_noise", 5)


def test_sweep_keeps_the_layout_and_moves_smoothly(rgb_images: torch.Tensor) -> None:
    """Hairs fade in one by one at fixed places: the darkened pixels only grow, and each
    step changes the image less than jumping from the first to the last frame."""
    x = torch.full((3, 3, 48, 48), 0.7)
    seq = make_sequence("hair", x, frames=6, generator=_gen(4))
    assert torch.equal(seq[0], x)
    dark = (seq < 0.69).any(dim=2)
    for t in range(5):
        assert bool((dark[t] <= dark[t + 1]).all())
    step = (seq[1:] - seq[:-1]).abs().mean(dim=(1, 2, 3, 4))
    assert float(step.max()) < float((seq[-1] - seq[0]).abs().mean())
    geo = make_sequence("translation", rgb_images, frames=9, generator=_gen(5))
    gaps = (geo[1:] - geo[:-1]).abs().mean(dim=(1, 2, 3, 4))
    assert float(gaps.max()) < float((geo[-1] - geo[0]).abs().mean())


def test_pairs_compared() -> None:
    assert pairs_compared(SequenceRule.FIRST, 10, 3) == 9
    assert pairs_compared(SequenceRule.CONSECUTIVE, 10, 3) == 7


@pytest.mark.parametrize(
    ("frames", "difficulty", "message"),
    [
        (1, 1, r"frames must be in \[2, 100\]"),
        (101, 1, r"frames must be in \[2, 100\]"),
        (5, 0, r"difficulty must be in \[1, 3\]"),
        (5, 4, r"difficulty must be in \[1, 3\]"),
        (3, 3, "frames must be greater than difficulty"),
    ],
)
def test_invalid_sequence(
    frames: int, difficulty: int, message: str, gray_images: torch.Tensor
) -> None:
    with pytest.raises(InvalidParametersError, match=message):
        make_sequence("brightness", gray_images, frames=frames, difficulty=difficulty)
