"""Attacks fitted on a dataset before they attack (GAP, UAP): state keyed by model and
parameters, saved as safetensors, reused across audit shards."""

from __future__ import annotations

import hashlib
import json
from abc import abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar, Self

import torch
from torch import Tensor, nn

from models.card import Head
from models.errors import ConflictError, InvalidParametersError
from workers.attacks.base import Attack, P
from workers.attacks.context import check_images, check_mask, model_fingerprint
from workers.attacks.params import AttackParams


def iterate_batches(
    images: Tensor,
    labels: Tensor,
    mask: Tensor | None,
    *,
    batch_size: int,
    device: torch.device,
    generator: torch.Generator | None,
    shuffle: bool = True,
) -> Iterator[tuple[Tensor, Tensor, Tensor | None]]:
    """Mini-batches of a dataset held in tensors (any device), moved to ``device``; the
    order is a permutation drawn from ``generator`` when ``shuffle``."""
    n = images.shape[0]
    if shuffle:
        gen_device = generator.device if generator is not None else torch.device("cpu")
        order = torch.randperm(n, generator=generator, device=gen_device).to(images.device)
    else:
        order = torch.arange(n, device=images.device)
    for start in range(0, n, batch_size):
        index = order[start : start + batch_size]
        xb = check_images(images[index], device)
        yb = labels[index.to(labels.device)].to(device)
        mb = None
        if mask is not None:
            mb = mask[index.to(mask.device)] if mask.shape[0] == n else mask
            mb = check_mask(mb, xb)
        yield xb, yb, mb


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

    @abstractmethod
    def fit(
        self,
        model: nn.Module,
        images: Tensor,
        labels: Tensor,
        *,
        epochs: int | None = None,
        batch_size: int | None = None,
        generator: torch.Generator | None = None,
        mask: Tensor | None = None,
        head: Head | str | None = None,
    ) -> Self:
        """Fit the state on a dataset: ``images`` ``[N, C, H, W]`` in ``[0, 1]`` and labels
        on any device (batches are moved to the model's); ``epochs``/``batch_size``
        override the parameters. Returns ``self``."""

    @abstractmethod
    def save(self, path: str | Path) -> None:
        """Write the fitted state (safetensors; model, attack and parameters in metadata)."""

    @abstractmethod
    def load(self, path: str | Path, model: nn.Module | None = None) -> Self:
        """Read state written by :meth:`save`; with ``model``, check it was fitted for it."""
