"""The demo model zoo: three small diagnostic models trained on the phantoms.

``models/zoo/<name>.safetensors`` holds the raw network's weights (an allow-listed
architecture, so it loads through the safe path: tensors only, never code) and
``<name>.card.json`` its model card; ``metrics.json`` and ``README.md`` record how well
each does on held-out phantoms. ``python -m models.zoo.train`` (``make zoo``) rebuilds
them from the recipes in :mod:`models.zoo.recipes`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from models.architectures import build_architecture
from models.card import ModelCard
from models.device import resolve_device
from models.errors import InvalidModelFileError, NotFoundError
from models.hashing import sha256_file
from models.wrapper import DiagnosticModel

ZOO_DIR = Path(__file__).resolve().parent
CARD_SUFFIX = ".card.json"
WEIGHTS_SUFFIX = ".safetensors"


@dataclass(frozen=True)
class ZooEntry:
    """A zoo model on disk: its card and the path of its safetensors weights."""

    name: str
    card: ModelCard
    weights_path: Path

    @property
    def size_bytes(self) -> int:
        return self.weights_path.stat().st_size


def list_zoo(directory: Path = ZOO_DIR) -> list[ZooEntry]:
    """Every model in the zoo folder that has both a card and weights, sorted by name."""
    entries = []
    for card_path in sorted(directory.glob(f"*{CARD_SUFFIX}")):
        name = card_path.name[: -len(CARD_SUFFIX)]
        weights = directory / f"{name}{WEIGHTS_SUFFIX}"
        if not weights.is_file():
            continue
        card = ModelCard.model_validate_json(card_path.read_text())
        entries.append(ZooEntry(name=name, card=card, weights_path=weights))
    return entries


def zoo_metrics(directory: Path = ZOO_DIR) -> dict[str, Any]:
    """The recorded ``metrics.json`` (``{"models": {name: {...}}, "machine": ...}``)."""
    path = directory / "metrics.json"
    return dict(json.loads(path.read_text())) if path.is_file() else {"models": {}}


def build_model(card: ModelCard, state: dict[str, torch.Tensor]) -> DiagnosticModel:
    """The card's allow-listed architecture with ``state`` loaded strictly, wrapped."""
    if card.architecture is None:
        raise InvalidModelFileError(f"zoo card {card.name!r} names no architecture")
    head = card.head or card.resolved_head()
    net = build_architecture(card.architecture, card.input.channels, card.expected_outputs(head))
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise InvalidModelFileError(
            f"the weights do not fit architecture {card.architecture!r} ({exc})"
        ) from exc
    return DiagnosticModel(net, card, head).eval()


def load_zoo_model(
    name: str, device: str | torch.device | None = None, directory: Path = ZOO_DIR
) -> DiagnosticModel:
    """Load a zoo model by name onto ``device`` (``None``: CUDA when present), in eval mode.

    Raises:
        NotFoundError: no such model (the message lists the zoo's names).
        InvalidModelFileError: the weights do not match the card's sha256 or architecture.
    """
    from safetensors.torch import load_file

    entries = {e.name: e for e in list_zoo(directory)}
    entry = entries.get(name)
    if entry is None:
        valid = ", ".join(sorted(entries))
        raise NotFoundError(f"no zoo model {name!r}; valid: {valid}")
    if entry.card.sha256 is not None and sha256_file(entry.weights_path) != entry.card.sha256:
        raise InvalidModelFileError(f"zoo weights {entry.weights_path.name} do not match the card")
    target = device if isinstance(device, torch.device) else resolve_device(device)
    state = load_file(str(entry.weights_path))
    return build_model(entry.card, state).to(target)


__all__ = [
    "ZOO_DIR",
    "ZooEntry",
    "build_model",
    "list_zoo",
    "load_zoo_model",
    "zoo_metrics",
]
