"""Perturbation sequences in the style of ImageNet-P (Hendrycks & Dietterich 2019).

Each image becomes ``frames`` frames:

- noise perturbations (rule ``first``): independent noise draws at the fixed severity
  ``difficulty`` (ImageNet-P's noise difficulty levels); each frame is later compared with
  the first;
- every other perturbation (rule ``consecutive``): the amount sweeps linearly over the
  perturbation's ``sweep`` range, with the random layout (directions, signs, artefact
  positions) held fixed; frame ``t`` is later compared with frame ``t + difficulty``.

Frames do not depend on ``difficulty`` for ``consecutive`` perturbations; only which frames
are compared does. The step between two compared frames is therefore
``difficulty * (sweep[1] - sweep[0]) / (frames - 1)``: flip probabilities are comparable
between runs with the same ``frames`` and ``difficulty``.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from app.core.catalogue.analyses import check_sequence as catalogue_check_sequence
from models.errors import InvalidParametersError
from workers.perturbations.base import (
    Perturbation,
    SequenceRule,
    check_images,
    default_generator,
)
from workers.perturbations.registry import get_perturbation


def check_sequence(frames: int, difficulty: int) -> None:
    """The catalogue's rule (``2 <= frames <= 100``, ``1 <= difficulty <= 3``, ``frames >
    difficulty``), raised as :class:`InvalidParametersError`."""
    try:
        catalogue_check_sequence(frames, difficulty)
    except ValueError as exc:
        raise InvalidParametersError(str(exc)) from None


def _resolve(perturbation: str | Perturbation) -> Perturbation:
    return (
        perturbation if isinstance(perturbation, Perturbation) else get_perturbation(perturbation)
    )


def sequence_amounts(perturbation: str | Perturbation, frames: int) -> list[float]:
    """The amount of every frame of a ``consecutive`` sequence (linear sweep)."""
    p = _resolve(perturbation)
    if p.sweep is None:
        raise InvalidParametersError(
            f"perturbation {p.name!r} has no sweep (noise sequences "
            "redraw the noise at a fixed severity)"
        )
    lo, hi = p.sweep
    return [lo + (hi - lo) * t / (frames - 1) for t in range(frames)]


def pairs_compared(rule: SequenceRule, frames: int, difficulty: int) -> int:
    """How many frame pairs a sequence contributes per image."""
    return frames - 1 if rule == SequenceRule.FIRST else frames - difficulty


def iter_sequence(
    perturbation: str | Perturbation,
    images: torch.Tensor,
    *,
    frames: int = 10,
    difficulty: int = 1,
    generator: torch.Generator | None = None,
) -> Iterator[torch.Tensor]:
    """Yield the ``frames`` frames (each ``[N, C, H, W]`` in ``[0, 1]``) one at a time, so
    a caller holds one frame in memory."""
    p = _resolve(perturbation)
    check_images(images)
    check_sequence(frames, difficulty)
    gen = generator if generator is not None else default_generator()
    if p.sequence_rule == SequenceRule.FIRST:
        for _ in range(frames):
            yield p(images, difficulty, generator=gen)
        return
    # One layout seed for the whole sequence: every frame redraws the same directions,
    # signs and positions, and only the amount moves.
    layout_seed = int(torch.randint(0, 2**62, (1,), generator=gen, device=gen.device))
    for amount in sequence_amounts(p, frames):
        frame_gen = torch.Generator(device=gen.device).manual_seed(layout_seed)
        yield p.apply(images, amount, generator=frame_gen)


def make_sequence(
    perturbation: str | Perturbation,
    images: torch.Tensor,
    *,
    frames: int = 10,
    difficulty: int = 1,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """All frames at once: ``[T, N, C, H, W]`` (use :func:`iter_sequence` to bound memory)."""
    return torch.stack(
        list(
            iter_sequence(
                perturbation, images, frames=frames, difficulty=difficulty, generator=generator
            )
        )
    )
