"""The phantom data model: a generated set of images, labels and lesion masks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from models.card import Task

# images uint8 [N, H, W, C], labels, masks uint8 [N, H, W]
Rendered = tuple[np.ndarray, np.ndarray, np.ndarray]

#: Images rendered per vectorized step; bounds memory at ~10 float arrays of this many images.
CHUNK = 256


@dataclass(frozen=True, eq=False)
class PhantomSet:
    """Phantom images with their labels and lesion masks.

    - ``images``: uint8 ``[N, H, W, C]`` (C = 1 for chest, 3 for derm and fundus).
    - ``labels``: single-label: int64 ``[N]`` class indices into ``label_names``;
      multi-label: uint8 ``[N, K]`` 0/1 findings (the label convention of ``models.heads``).
    - ``masks``: uint8 ``[N, H, W]``, 1 where a finding or lesion is drawn, 0 elsewhere
      (all zero for an image without findings).
    """

    kind: str
    images: np.ndarray
    labels: np.ndarray
    label_names: tuple[str, ...]
    task: Task
    masks: np.ndarray
    seed: int
    size: int

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def channels(self) -> int:
        return int(self.images.shape[3])

    def label_names_of(self, index: int) -> list[str]:
        """The label names of image ``index`` (every positive finding for multi-label)."""
        if self.task == "multi-label":
            return [n for n, v in zip(self.label_names, self.labels[index], strict=True) if v]
        return [self.label_names[int(self.labels[index])]]

    def subset(self, indices: np.ndarray | list[int]) -> PhantomSet:
        idx = np.asarray(indices, dtype=np.int64)
        return PhantomSet(
            self.kind,
            self.images[idx],
            self.labels[idx],
            self.label_names,
            self.task,
            self.masks[idx],
            self.seed,
            self.size,
        )


@dataclass(frozen=True)
class PhantomKind:
    """A registered phantom generator.

    ``render(n, size, rng)`` draws the labels of ``n`` images first, then renders them in
    chunks from the same generator, so the output depends only on (n, size, seed).
    """

    name: str
    task: Task
    label_names: tuple[str, ...]
    channels: int
    description: str
    render: Callable[[int, int, np.random.Generator], Rendered]
    salt: int
