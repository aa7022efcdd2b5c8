"""Fixtures for the dataset importers: zip builders and small model cards."""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from models.card import ModelCard
from models.imaging import encode_png
from models.phantoms import chest, derm, fundus

ZipMaker = Callable[[dict[str, bytes]], Path]


@pytest.fixture
def make_zip(tmp_path: Path) -> ZipMaker:
    counter = iter(range(1_000_000))

    def make(entries: dict[str, bytes]) -> Path:
        path = tmp_path / f"upload-{next(counter)}.zip"
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for name, data in entries.items():
                zf.writestr(name, data)
        return path

    return make


@pytest.fixture
def png() -> Callable[[int], bytes]:
    def make(seed: int = 0, size: int = 16, channels: int = 1) -> bytes:
        rng = np.random.default_rng(seed)
        shape = (size, size) if channels == 1 else (size, size, channels)
        return encode_png(rng.integers(0, 256, shape, dtype=np.uint8))

    return make


def _card(name: str, labels: tuple[str, ...], channels: int, task: str, **kw: object) -> ModelCard:
    return ModelCard.model_validate(
        {
            "name": name,
            "task": task,
            "labels": list(labels),
            "input": {"channels": channels, "height": 32, "width": 32},
            **kw,
        }
    )


@pytest.fixture
def cards() -> dict[str, ModelCard]:
    return {
        "chest": _card("chest", chest.LABELS, 1, "multi-label"),
        "derm": _card("derm", derm.LABELS, 3, "single-label", head="binary-logit"),
        "fundus": _card("fundus", fundus.LABELS, 3, "single-label"),
    }
