"""Intensity: brightness, contrast, gamma, a DICOM window shift and bit-depth reduction.

Deterministic (no randomness). Negative amounts, used by sequences that sweep through the
identity, darken (brightness), raise contrast, brighten (gamma) or move the window the
other way.
"""

from __future__ import annotations

import math

import torch

from workers.perturbations.base import Family, Perturbation


def _brightness(x: torch.Tensor, shift: float, g: torch.Generator) -> torch.Tensor:
    return x + shift


def _contrast(x: torch.Tensor, amount: float, g: torch.Generator) -> torch.Tensor:
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (1.0 - amount) + mean


def _gamma(x: torch.Tensor, log_gamma: float, g: torch.Generator) -> torch.Tensor:
    return x.clamp_min(0.0).pow(math.exp(log_gamma))


def _window_shift(x: torch.Tensor, shift: float, g: torch.Generator) -> torch.Tensor:
    # The displayed image is a VOI window of the stored values; re-windowing with the
    # centre moved by `shift` (display units) and the width narrowed by |shift| saturates
    # both ends, as a different viewer or protocol preset would.
    width = 1.0 - abs(shift)
    return (x - 0.5 - shift) / width + 0.5


def _bit_depth(x: torch.Tensor, bits_removed: float, g: torch.Generator) -> torch.Tensor:
    levels = max(2, round(2.0 ** (8.0 - bits_removed)))
    return torch.round(x * (levels - 1)) / (levels - 1)


PERTURBATIONS: tuple[Perturbation, ...] = (
    Perturbation(
        name="brightness",
        family=Family.INTENSITY,
        fn=_brightness,
        severities=(0.05, 0.1, 0.15, 0.2, 0.3),
        units="additive shift in [0, 1] pixel units",
        description="Brightness shift (over-exposure).",
        sweep=(-0.2, 0.2),
    ),
    Perturbation(
        name="contrast",
        family=Family.INTENSITY,
        fn=_contrast,
        severities=(0.15, 0.3, 0.45, 0.6, 0.75),
        units="contrast reduction (1 - factor around the image mean)",
        description="Contrast loss around the image mean (under-penetration, flat exposure).",
        sweep=(-0.4, 0.4),
    ),
    Perturbation(
        name="gamma",
        family=Family.INTENSITY,
        fn=_gamma,
        severities=(0.15, 0.3, 0.45, 0.6, 0.8),
        units="log of the gamma exponent (y = x ** exp(amount))",
        description="Gamma change (a different display or detector response curve).",
        sweep=(-0.5, 0.5),
    ),
    Perturbation(
        name="dicom_window_shift",
        family=Family.INTENSITY,
        fn=_window_shift,
        severities=(0.03, 0.06, 0.1, 0.15, 0.2),
        units="window centre shift in display units (width narrowed by the same)",
        description="A shifted and narrowed DICOM VOI window (clips shadows and highlights).",
        sweep=(-0.15, 0.15),
    ),
    Perturbation(
        name="bit_depth",
        family=Family.INTENSITY,
        fn=_bit_depth,
        severities=(1.0, 2.0, 3.0, 4.0, 5.0),
        units="bits removed from 8 (severity 5 keeps 3 bits)",
        description="Bit-depth reduction (posterization).",
        sweep=(0.0, 5.0),
    ),
)
