"""What a common perturbation is: a named, batched, seeded image transform with five severities.

Every perturbation maps ``[N, C, H, W]`` float images in ``[0, 1]`` to images of the same
shape, dtype and device, clipped to ``[0, 1]``. It is driven by one continuous *amount*
(its units are in :attr:`Perturbation.units`): severity ``s`` in ``1..5`` applies
``severities[s - 1]``, and amount ``0`` (severity 0) returns the images unchanged, bit for
bit. Sequences (ImageNet-P, Hendrycks & Dietterich 2019) either redraw the noise at a fixed
severity (noise family) or sweep the amount over :attr:`Perturbation.sweep` frame by frame.

Randomness (noise fields, directions, artefact layouts) comes only from the
``torch.Generator`` passed in, so a seed fixes the output on a given device. Random numbers
are drawn on the generator's device and moved to the images' device: pass a generator on
the images' device to keep the draws there.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import torch

from models.errors import InvalidParametersError

#: Number of severities above the identity (ImageNet-C convention).
NUM_SEVERITIES = 5


class Family(StrEnum):
    """The kind of acquisition change a perturbation models."""

    NOISE = "noise"
    BLUR = "blur"
    INTENSITY = "intensity"
    COMPRESSION = "compression"
    GEOMETRY = "geometry"
    ARTEFACT = "artefact"


class SequenceRule(StrEnum):
    """How the frames of a sequence are compared for the flip probability (ImageNet-P).

    - ``first``: frames are independent noise draws at one severity; every frame is compared
      with the first one.
    - ``consecutive``: frames sweep the amount smoothly; frame ``t`` is compared with frame
      ``t + difficulty``.
    """

    FIRST = "first"
    CONSECUTIVE = "consecutive"


class Modality(StrEnum):
    """Imaging modalities that have their own artefacts."""

    RADIOGRAPH = "radiograph"
    DERMOSCOPY = "dermoscopy"
    FUNDUS = "fundus"


#: ``fn(images, amount, generator) -> images``: images are float32 ``[N, C, H, W]``; the
#: result need not be clipped (``Perturbation.apply`` clips).
PerturbFn = Callable[[torch.Tensor, float, torch.Generator], torch.Tensor]


@dataclass(frozen=True)
class Perturbation:
    """One registered perturbation.

    Attributes:
        name: registry key (``snake_case``).
        family: see :class:`Family`; noise perturbations use the ``first`` sequence rule.
        fn: the batched transform at a continuous amount.
        severities: the amounts of severities 1..5 (increasing strength).
        units: what the amount measures (pixel units are in ``[0, 1]`` space; lengths are
            fractions of the shorter image side so severities mean the same at every
            resolution).
        description: one sentence for reports.
        sweep: ``(first, last)`` amounts of a ``consecutive`` sequence; ``None`` for noise.
        modalities: the modalities it fits; empty means every modality.
        channels: the channel counts it is meant for.
    """

    name: str
    family: Family
    fn: PerturbFn = field(repr=False, compare=False)
    severities: tuple[float, float, float, float, float]
    units: str
    description: str
    sweep: tuple[float, float] | None = None
    modalities: frozenset[Modality] = frozenset()
    channels: frozenset[int] = frozenset({1, 3})

    @property
    def sequence_rule(self) -> SequenceRule:
        return SequenceRule.FIRST if self.family == Family.NOISE else SequenceRule.CONSECUTIVE

    def amount(self, severity: int) -> float:
        """The amount of a severity in ``0..5`` (0 is the identity)."""
        check_severity(severity)
        return 0.0 if severity == 0 else float(self.severities[severity - 1])

    def fits(self, modality: Modality | str | None, channels: int) -> bool:
        """Whether it belongs in an audit of that modality (``None``: generic only)."""
        if channels not in self.channels:
            return False
        if not self.modalities:
            return True
        return modality is not None and Modality(modality) in self.modalities

    def __call__(
        self,
        images: torch.Tensor,
        severity: int,
        *,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Apply at a severity in ``0..5``; ``[N, C, H, W]`` in ``[0, 1]`` -> same shape."""
        return self.apply(images, self.amount(severity), generator=generator)

    def apply(
        self,
        images: torch.Tensor,
        amount: float,
        *,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Apply at a continuous amount (0 is the identity); the result is in ``[0, 1]``."""
        check_images(images)
        if amount == 0:
            return images.clone()
        gen = generator if generator is not None else default_generator()
        out = self.fn(images.float(), float(amount), gen)
        return out.clamp_(0.0, 1.0).to(images.dtype)

    def describe(self) -> dict[str, Any]:
        """JSON metadata for reports and the API."""
        return {
            "name": self.name,
            "family": self.family.value,
            "description": self.description,
            "units": self.units,
            "severities": list(self.severities),
            "sweep": list(self.sweep) if self.sweep is not None else None,
            "sequence_rule": self.sequence_rule.value,
            "modalities": sorted(m.value for m in self.modalities),
            "channels": sorted(self.channels),
        }


def check_severity(severity: int) -> None:
    if isinstance(severity, bool) or not isinstance(severity, int):
        raise InvalidParametersError(f"severity must be an integer, got {severity!r}")
    if not 0 <= severity <= NUM_SEVERITIES:
        raise InvalidParametersError(f"severity must be in 0..{NUM_SEVERITIES}, got {severity}")


def check_images(images: torch.Tensor) -> None:
    if images.dim() != 4:
        raise InvalidParametersError(
            f"images must be [N, C, H, W], got shape {tuple(images.shape)}"
        )
    if not images.is_floating_point():
        raise InvalidParametersError(f"images must be floating point in [0, 1], got {images.dtype}")


def default_generator() -> torch.Generator:
    """The generator used when none is given: seed 0, so results stay deterministic."""
    return torch.Generator().manual_seed(0)


def derive_seed(base: int, *parts: object) -> int:
    """A stable 63-bit seed from a base seed and labels (unlike ``hash``, not salted)."""
    text = "\x1f".join([str(int(base)), *map(str, parts)])
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def uniform(
    generator: torch.Generator,
    shape: tuple[int, ...],
    low: float,
    high: float,
    device: torch.device,
) -> torch.Tensor:
    """Float32 uniform draws in ``[low, high)`` from ``generator``, moved to ``device``."""
    u = torch.rand(shape, generator=generator, device=generator.device)
    return (low + (high - low) * u).to(device)


def normal(
    generator: torch.Generator, shape: tuple[int, ...], device: torch.device
) -> torch.Tensor:
    """Float32 standard normal draws from ``generator``, moved to ``device``."""
    return torch.randn(shape, generator=generator, device=generator.device).to(device)


def random_sign(generator: torch.Generator, n: int, device: torch.device) -> torch.Tensor:
    """``[n]`` values in ``{-1, +1}`` with equal probability."""
    bits = torch.randint(0, 2, (n,), generator=generator, device=generator.device)
    return (2.0 * bits.float() - 1.0).to(device)


def short_side(images: torch.Tensor) -> int:
    return int(min(images.shape[-2], images.shape[-1]))
