"""Training data for the defense loop: a dataset read batch-wise as ``[B, C, H, W]`` floats
in [0, 1] with labels in the head's convention, checked against the model's card."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import torch

from models.card import Head
from models.errors import InvalidDatasetError
from models.wrapper import DiagnosticModel


class IndexedDataset(Protocol):
    """Anything with ``len`` and ``ds[i] -> (image [C, H, W], label)``; a
    ``TensorDataset(images, labels)`` is read batch-wise through its ``tensors``."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Sequence[Any]: ...


class Split:
    """Batch access to a dataset as ``[B, C, H, W]`` floats in [0, 1] and labels."""

    def __init__(self, data: IndexedDataset, model: DiagnosticModel, what: str) -> None:
        self.what = what
        self.data = data
        self.model = model
        tensors = getattr(data, "tensors", None)
        self.tensors: tuple[torch.Tensor, torch.Tensor] | None = None
        if isinstance(tensors, (tuple, list)) and len(tensors) >= 2:
            self.tensors = (tensors[0], tensors[1])
        self.size = len(data)
        if self.size == 0:
            raise InvalidDatasetError(f"the {what} split is empty")

    def __len__(self) -> int:
        return self.size

    def batch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.tensors is not None:
            x, y = self.tensors[0][index], self.tensors[1][index]
        else:
            items = [self.data[int(i)] for i in index]
            x = torch.stack([torch.as_tensor(item[0]) for item in items])
            y = torch.stack([torch.as_tensor(item[1]) for item in items])
        return self._check(x, y)

    def _check(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        what = self.what
        expected = self.model.input_shape
        if x.dim() != 4 or tuple(x.shape[1:]) != expected:
            raise InvalidDatasetError(
                f"{what} images must be [N, {expected[0]}, {expected[1]}, {expected[2]}], "
                f"got {list(x.shape)}"
            )
        if x.dtype == torch.uint8:
            x = x.float() / 255.0
        elif not x.is_floating_point():
            raise InvalidDatasetError(f"{what} images must be float in [0, 1] or uint8")
        else:
            x = x.float()
            lo, hi = torch.aminmax(x)
            if not (float(lo) >= 0.0 and float(hi) <= 1.0):
                raise InvalidDatasetError(f"{what} images must be in [0, 1]")
        head = self.model.head
        n, k = x.shape[0], self.model.num_labels
        if head == Head.SIGMOID:
            if y.shape != (n, k):
                raise InvalidDatasetError(
                    f"{what} labels must be [N, {k}] 0/1 findings, got {list(y.shape)}"
                )
            y = y.float()
        else:
            y = y.reshape(-1).long() if y.dim() == 2 and y.shape[1] == 1 else y.long()
            if y.shape != (n,) or int(y.min()) < 0 or int(y.max()) >= k:
                raise InvalidDatasetError(
                    f"{what} labels must be [N] class indices in [0, {k - 1}]"
                )
        return x, y


def batches(size: int, batch_size: int, order: torch.Tensor | None) -> list[torch.Tensor]:
    index = order if order is not None else torch.arange(size)
    chunks = list(index.split(batch_size))
    # A trailing batch of one image breaks BatchNorm in train mode; it is a random image
    # each epoch (the order is shuffled), so dropping it loses nothing systematically.
    if order is not None and len(chunks) > 1 and chunks[-1].numel() == 1:
        chunks.pop()
    return chunks
