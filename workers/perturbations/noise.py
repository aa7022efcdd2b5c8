"""Noise: Gaussian (electronic), shot (Poisson, quantum) and speckle (multiplicative).

Severities are milder than ImageNet-C's: medical images are compared at a few grey levels
of difference, and severity 5 should still look like a plausible bad acquisition.
Noise is drawn independently per pixel and channel. Sequences redraw the noise at a fixed
severity (the ``first`` rule).
"""

from __future__ import annotations

import torch

from workers.perturbations.base import Family, Perturbation, normal


def _gaussian(x: torch.Tensor, sigma: float, g: torch.Generator) -> torch.Tensor:
    return x + sigma * normal(g, tuple(x.shape), x.device)


def _shot(x: torch.Tensor, scale: float, g: torch.Generator) -> torch.Tensor:
    # scale = 1 / photons per unit intensity: Poisson(x / scale) * scale has mean x and
    # variance x * scale, the quantum noise of a detector receiving x / scale photons.
    rates = (x.clamp_min(0.0) / scale).to(g.device)
    counts = torch.poisson(rates, generator=g)
    return counts.to(x.device) * scale


def _speckle(x: torch.Tensor, sigma: float, g: torch.Generator) -> torch.Tensor:
    return x + x * sigma * normal(g, tuple(x.shape), x.device)


PERTURBATIONS: tuple[Perturbation, ...] = (
    Perturbation(
        name="gaussian_noise",
        family=Family.NOISE,
        fn=_gaussian,
        severities=(0.02, 0.04, 0.06, 0.09, 0.12),
        units="standard deviation in [0, 1] pixel units",
        description="Additive white Gaussian noise (detector electronics).",
    ),
    Perturbation(
        name="shot_noise",
        family=Family.NOISE,
        fn=_shot,
        severities=(1 / 400, 1 / 200, 1 / 100, 1 / 50, 1 / 25),
        units="inverse photon count per unit intensity (Poisson scale)",
        description="Poisson photon noise (low dose / short exposure).",
    ),
    Perturbation(
        name="speckle_noise",
        family=Family.NOISE,
        fn=_speckle,
        severities=(0.06, 0.12, 0.18, 0.26, 0.35),
        units="relative standard deviation (multiplicative)",
        description="Multiplicative Gaussian speckle.",
    ),
)
