"""The adversarial images are written beside the attacks, and a failed write fails the shard."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from models.card import ModelCard
from workers.tasks.audit import _AdversarialWriter

CARD = ModelCard.model_validate({"name": "m", "task": "single-label", "labels": ["a", "b"],
                                 "input": {"channels": 3, "height": 8, "width": 8}})


class _PngDataset:
    def decode(self, index: int) -> Any:
        return SimpleNamespace(dicom=None)


def _writer(tmp_path: Path) -> _AdversarialWriter:
    rt: Any = SimpleNamespace(storage=SimpleNamespace(artifacts_dir=lambda job: tmp_path / job))
    return _AdversarialWriter(rt, "job", _PngDataset(), CARD)


def test_every_batch_is_written_once_finish_returns(tmp_path: Path) -> None:
    images = torch.rand(30, 3, 8, 8)
    with _writer(tmp_path) as writer:
        for start in range(0, 30, 3):  # more batches than may wait: the caller waits too
            writer("pgd:eps=4/255", np.arange(start, start + 3), images[start:start + 3])
        assert writer.finish() > 0
        folder = tmp_path / "job" / "adversarial" / "pgd:eps=4_255"
        names = sorted(p.name for p in folder.iterdir())
        assert names == [f"{i:06d}.png" for i in range(30)]
        written = np.asarray(Image.open(folder / "000017.png"))
        expected = (images[17].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        assert np.abs(written.astype(int) - expected.astype(int)).max() <= 1


def test_a_failed_write_reaches_the_shard(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self: _AdversarialWriter, key: str, indices: np.ndarray,
               pixels: np.ndarray) -> float:
        raise OSError("no space left on device")

    monkeypatch.setattr(_AdversarialWriter, "_write", broken)
    with _writer(tmp_path) as writer:
        writer("fgsm", np.arange(2), torch.rand(2, 3, 8, 8))
        with pytest.raises(OSError, match="no space"):
            writer.finish()


def test_the_batch_is_copied_before_the_attack_goes_on(tmp_path: Path) -> None:
    images = torch.zeros(2, 3, 8, 8)
    indices = np.arange(2)
    with _writer(tmp_path) as writer:
        writer("fgsm", indices, images)
        images.fill_(1.0)  # the next attack reuses its buffers
        indices[:] = 7
        writer.finish()
    folder = tmp_path / "job" / "adversarial" / "fgsm"
    assert sorted(p.name for p in folder.iterdir()) == ["000000.png", "000001.png"]
    assert np.asarray(Image.open(folder / "000001.png")).max() == 0
