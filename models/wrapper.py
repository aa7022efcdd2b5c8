"""The model wrapper: [0, 1] pixels in, head-shaped logits out.

Every model RobustDx audits or serves is a :class:`DiagnosticModel`. Normalization
(mean/std from the card) happens inside, so attack budgets are in real pixel units: an
eps of 4/255 is four grey levels of an 8-bit image.
"""

from __future__ import annotations

import torch
from torch import nn

from models.card import Head, ModelCard
from models.heads import as_logits, predict, probabilities


class DiagnosticModel(nn.Module):
    """Wraps a network with its card.

    Args:
        net: any module mapping normalized ``[N, C, H, W]`` images to raw outputs.
        card: the model card.
        head: the resolved head (see :meth:`ModelCard.resolved_head`).
        fixed_batch: when the network only accepts one batch size (a ``torch.export``
            program exported without a dynamic batch dimension), inputs are split into
            chunks of that size and the last chunk is padded; gradients still flow.

    ``forward`` takes ``[N, C, H, W]`` float images in ``[0, 1]`` at the card's size and
    returns logits ``[N, K]`` (``[N, 1]`` for a binary-logit head).
    """

    def __init__(
        self,
        net: nn.Module,
        card: ModelCard,
        head: Head,
        fixed_batch: int | None = None,
    ) -> None:
        super().__init__()
        self.net = net
        self.card = card
        self.head = head
        self.fixed_batch = fixed_batch
        c = card.input.channels
        mean = torch.tensor(card.preprocessing.mean, dtype=torch.float32)
        std = torch.tensor(card.preprocessing.std, dtype=torch.float32)
        self.mean: torch.Tensor
        self.std: torch.Tensor
        self.thresholds: torch.Tensor
        self.register_buffer("mean", mean.expand(c).clone().view(1, c, 1, 1), persistent=False)
        self.register_buffer("std", std.expand(c).clone().view(1, c, 1, 1), persistent=False)
        self.register_buffer(
            "thresholds",
            torch.tensor(card.threshold_vector(), dtype=torch.float32),
            persistent=False,
        )

    @property
    def labels(self) -> tuple[str, ...]:
        return self.card.labels

    @property
    def num_labels(self) -> int:
        return len(self.card.labels)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        spec = self.card.input
        return (spec.channels, spec.height, spec.width)

    @property
    def device(self) -> torch.device:
        return self.mean.device

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.normalize(x)
        if self.fixed_batch is None or z.shape[0] == self.fixed_batch:
            out = self.net(z)
        else:
            out = self._run_fixed(z)
        if isinstance(out, (tuple, list)):  # e.g. inception aux outputs
            out = out[0]
        return as_logits(out, self.head)

    def _run_fixed(self, z: torch.Tensor) -> torch.Tensor:
        b = self.fixed_batch
        assert b is not None
        chunks = []
        for start in range(0, z.shape[0], b):
            part = z[start : start + b]
            n = part.shape[0]
            if n < b:
                pad = part[-1:].expand(b - n, *part.shape[1:])
                part = torch.cat([part, pad], dim=0)
            out = self.net(part)
            if isinstance(out, (tuple, list)):
                out = out[0]
            chunks.append(out[:n])
        return torch.cat(chunks, dim=0)

    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        return probabilities(self(x), self.head)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return predict(self(x), self.head, self.thresholds)
