"""Phantom datasets: procedurally drawn images with the structure of real modalities.

Three kinds, looked up by name in :data:`PHANTOMS`:

- ``chest``: PA chest radiograph, 1 channel, multi-label (5 co-occurring findings).
- ``derm``: dermoscopy, RGB, binary (``benign`` nevus vs ``melanoma``) by the ABCD cues.
- ``fundus``: fundus photograph, RGB, five diabetic-retinopathy grades by lesion counts.

Each is deterministic from ``(n, size, seed)`` (same arguments, same bytes), vectorized
(thousands of 64 x 64 images per second or two), and emits lesion masks. The label model
of each kind is documented in its module and tested.
"""

from __future__ import annotations

import numpy as np

from models.errors import InvalidParametersError
from models.phantoms import chest, derm, fundus
from models.phantoms.base import PhantomKind, PhantomSet

PHANTOMS: dict[str, PhantomKind] = {k.name: k for k in (chest.KIND, derm.KIND, fundus.KIND)}

MIN_SIZE, MAX_SIZE = 32, 512
MAX_COUNT = 1_000_000


def get_kind(kind: str) -> PhantomKind:
    """The registered kind; an unknown name lists the valid ones."""
    try:
        return PHANTOMS[kind]
    except KeyError:
        valid = ", ".join(sorted(PHANTOMS))
        raise InvalidParametersError(
            f"unknown phantom kind {kind!r}; valid: {valid}", {"valid": sorted(PHANTOMS)}
        ) from None


def generate(kind: str, n: int, size: int = 64, seed: int = 0) -> PhantomSet:
    """Generate ``n`` phantom images of ``kind`` at ``size x size`` pixels from ``seed``.

    Raises:
        InvalidParametersError: unknown kind, ``n`` not in [1, 1e6], ``size`` not in
            [32, 512] or a negative seed.
    """
    spec = get_kind(kind)
    if not 1 <= n <= MAX_COUNT:
        raise InvalidParametersError(f"n must be in [1, {MAX_COUNT}], got {n}")
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise InvalidParametersError(f"size must be in [{MIN_SIZE}, {MAX_SIZE}], got {size}")
    if seed < 0:
        raise InvalidParametersError(f"seed must be >= 0, got {seed}")
    rng = np.random.default_rng([seed, spec.salt])
    images, labels, masks = spec.render(n, size, rng)
    return PhantomSet(
        kind=spec.name,
        images=images,
        labels=labels,
        label_names=spec.label_names,
        task=spec.task,
        masks=masks,
        seed=seed,
        size=size,
    )


__all__ = ["PHANTOMS", "PhantomKind", "PhantomSet", "generate", "get_kind"]
