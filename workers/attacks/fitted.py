"""Attacks fitted on a dataset before they attack (GAP, UAP): state keyed by model and
parameters, saved as safetensors, reused across audit shards."""

from __future__ import annotations

import hashlib
import json
from abc import abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Protocol, Self

import numpy as np
import torch
from torch import Tensor, nn

from models.card import Head
from models.errors import ConflictError, InvalidParametersError
from workers.attacks.base import Attack, P
from workers.attacks.context import AttackContext, check_images, check_mask, model_fingerprint
from workers.attacks.functional import ShouldStop
from workers.attacks.objectives import check_labels
from workers.attacks.params import AttackParams


class FitSource(Protocol):
    """A fitting set read batch by batch, so it never has to be held in memory whole.

    ``take(index)`` returns ``(images [B, C, H, W] in [0, 1], labels, mask or None)`` for
    the dataset positions ``index`` (a 1-D int64 array).
    """

    def __len__(self) -> int: ...

    def take(self, index: np.ndarray) -> tuple[Tensor, Tensor, Tensor | None]: ...


@dataclass
class TensorSource:
    """A fitting set already in tensors (any device): ``images``, ``labels``, ``mask``
    (``[N, 1, H, W]`` or ``[1, 1, H, W]``)."""

    images: Tensor
    labels: Tensor
    mask: Tensor | None = None

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def take(self, index: np.ndarray) -> tuple[Tensor, Tensor, Tensor | None]:
        rows = torch.as_tensor(index, dtype=torch.long)
        mask = self.mask
        if mask is not None and mask.shape[0] == len(self):
            mask = mask[rows.to(mask.device)]
        return (self.images[rows.to(self.images.device)],
                self.labels[rows.to(self.labels.device)], mask)


def iterate_batches(
    source: FitSource,
    ctx: AttackContext,
    *,
    batch_size: int,
    generator: torch.Generator | None,
    shuffle: bool = True,
) -> Iterator[tuple[Tensor, Tensor, Tensor | None]]:
    """Checked mini-batches of ``source`` on ``ctx.device``, in an order drawn from
    ``generator`` when ``shuffle``; ``ctx.check_stop()`` runs before each batch."""
    n = len(source)
    if shuffle:
        gen_device = generator.device if generator is not None else torch.device("cpu")
        order = torch.randperm(n, generator=generator, device=gen_device).cpu().numpy()
    else:
        order = np.arange(n)
    for start in range(0, n, batch_size):
        ctx.check_stop()
        xb, yb, mb = source.take(order[start : start + batch_size])
        xb = check_images(xb, ctx.device)
        yb = check_labels(yb.to(ctx.device), ctx.head, ctx.num_classes, xb.shape[0])
        yield xb, yb, check_mask(mb, xb)


@dataclass
class FitSetup:
    """What every fit starts from: the resolved model, the data, the passes and the order."""

    ctx: AttackContext
    source: FitSource
    epochs: int
    batch_size: int
    generator: torch.Generator

    def batches(self) -> Iterator[tuple[Tensor, Tensor, Tensor | None]]:
        return iterate_batches(self.source, self.ctx, batch_size=self.batch_size,
                               generator=self.generator)


def params_key(params: AttackParams, exclude: frozenset[str] = frozenset()) -> str:
    """A stable JSON rendering of the parameters that shape fitted state."""
    data = params.model_dump(exclude=set(exclude))
    return json.dumps(data, sort_keys=True, default=str)


class FittedAttack(Attack[P]):
    """An attack that is first fitted on a dataset (GAP, UAP).

    The fitted state depends on the model and on the parameters. :meth:`save` stores it as
    safetensors with the model fingerprint (the card's sha256) and the parameters in the
    metadata; :meth:`load` refuses state fitted with other parameters, and attacking a
    model other than the one it was fitted for raises. :meth:`state_key` and
    :meth:`cache_name` name the (model, parameters, data) triple so an audit can fit once
    as its own stage and reuse the state on every shard.
    """

    requires_fit: ClassVar[bool] = True
    #: Parameters that do not change the fitted state (they only matter at attack time).
    runtime_params: ClassVar[frozenset[str]] = frozenset({"quantize", "autocast"})

    def __init__(self, params: P) -> None:
        super().__init__(params)
        #: Fingerprint of the model the state was fitted for (``None`` before a fit).
        self.fitted_for: str | None = None

    @property
    def fitted(self) -> bool:
        return self.fitted_for is not None

    def settings_key(self) -> str:
        """JSON of the parameters that shape the fitted state."""
        return params_key(self.params, self.runtime_params)

    def state_key(self, model: nn.Module, data: str = "") -> str:
        """sha256 of (model fingerprint, attack name, state parameters, ``data``), where
        ``data`` names the fitting set (e.g. the dataset's sha256) when it matters."""
        text = "\n".join([model_fingerprint(model), self.name, self.settings_key(), data])
        return hashlib.sha256(text.encode()).hexdigest()

    def cache_name(self, model: nn.Module, data: str = "") -> str:
        """A file name for the fitted state of this attack on ``model``."""
        return f"{self.name}-{self.state_key(model, data)[:24]}.safetensors"

    def _require_fitted(self, model: nn.Module) -> None:
        if self.fitted_for is None:
            raise ConflictError(
                f"attack {self.name!r} must be fitted first: call fit(...) or load(...)"
            )
        if self.fitted_for != model_fingerprint(model):
            raise InvalidParametersError(
                f"attack {self.name!r} was fitted for another model; fit or load it for this one"
            )

    def _metadata(self) -> dict[str, str]:
        assert self.fitted_for is not None
        return {
            "attack": self.name,
            "model": self.fitted_for,
            "settings": self.settings_key(),
        }

    def _check_metadata(self, metadata: dict[str, str], model: nn.Module | None) -> None:
        if metadata.get("attack") != self.name:
            raise InvalidParametersError(
                f"state file is for attack {metadata.get('attack')!r}, not {self.name!r}"
            )
        if metadata.get("settings") != self.settings_key():
            raise InvalidParametersError(
                f"state file was fitted with other parameters: {metadata.get('settings')}"
            )
        if model is not None and metadata.get("model") != model_fingerprint(model):
            raise InvalidParametersError("state file was fitted for another model")

    def setup_fit(
        self,
        model: nn.Module,
        images: Tensor | FitSource,
        labels: Tensor | None,
        *,
        epochs: int | None,
        batch_size: int | None,
        generator: torch.Generator | None,
        mask: Tensor | None,
        head: Head | str | None,
        should_stop: ShouldStop | None,
    ) -> FitSetup:
        """The shared start of every :meth:`fit`: the data as a :class:`FitSource`, the
        resolved model (with ``should_stop`` polled before every batch), the passes and
        batch size (the parameters' unless overridden) and a seeded order generator."""
        source: FitSource
        if isinstance(images, Tensor):
            if labels is None:
                raise InvalidParametersError("fit needs labels with a tensor of images")
            source = TensorSource(images, labels, mask)
        else:
            source = images
        if len(source) == 0:
            raise InvalidParametersError(f"attack {self.name!r} cannot be fitted on no images")
        first, _, _ = source.take(np.arange(1))
        ctx = self.context(model, first, head)
        ctx.should_stop = should_stop
        p = self.params
        return FitSetup(
            ctx=ctx, source=source,
            epochs=epochs or int(getattr(p, "epochs", 1)),
            batch_size=batch_size or int(getattr(p, "batch_size", 32)),
            generator=generator or torch.Generator().manual_seed(p.seed),
        )

    @abstractmethod
    def fit(
        self,
        model: nn.Module,
        images: Tensor | FitSource,
        labels: Tensor | None = None,
        *,
        epochs: int | None = None,
        batch_size: int | None = None,
        generator: torch.Generator | None = None,
        mask: Tensor | None = None,
        head: Head | str | None = None,
        should_stop: ShouldStop | None = None,
    ) -> Self:
        """Fit the state on a dataset: ``images`` ``[N, C, H, W]`` in ``[0, 1]`` with
        ``labels`` (any device; batches are moved to the model's), or a :class:`FitSource`
        read batch by batch; ``epochs``/``batch_size`` override the parameters;
        ``should_stop`` is polled before every batch. Returns ``self``."""

    @abstractmethod
    def save(self, path: str | Path) -> None:
        """Write the fitted state (safetensors; model, attack and parameters in metadata)."""

    @abstractmethod
    def load(self, path: str | Path, model: nn.Module | None = None) -> Self:
        """Read state written by :meth:`save`; with ``model``, check it was fitted for it."""
