"""Common perturbations of medical images and their robustness metrics.

Batched torch implementations of noise, blur, intensity, compression, geometry and
modality artefacts (five severities each, severity 0 the identity, seeded), ImageNet-P
style sequences, and the flip-probability and corruption-accuracy metrics.

Example (``images``: ``[N, C, H, W]`` floats in ``[0, 1]``)::

    from workers.perturbations import get_perturbation, make_sequence

    g = torch.Generator().manual_seed(0)
    noisy = get_perturbation("gaussian_noise")(images, 3, generator=g)
    frames = make_sequence("rotation", images, frames=10, difficulty=1, generator=g)
"""

from workers.perturbations.base import (
    NUM_SEVERITIES,
    Family,
    Modality,
    Perturbation,
    SequenceRule,
    derive_seed,
)
from workers.perturbations.registry import (
    IMAGENET_P,
    get_perturbation,
    infer_modalities,
    list_perturbations,
    perturbations_for,
)
from workers.perturbations.sequences import (
    iter_sequence,
    make_sequence,
    pairs_compared,
    sequence_amounts,
)

__all__ = [
    "IMAGENET_P",
    "NUM_SEVERITIES",
    "Family",
    "Modality",
    "Perturbation",
    "SequenceRule",
    "derive_seed",
    "get_perturbation",
    "infer_modalities",
    "iter_sequence",
    "list_perturbations",
    "make_sequence",
    "pairs_compared",
    "perturbations_for",
    "sequence_amounts",
]
