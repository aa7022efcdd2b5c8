"""The decoded-tensor cache: the same tensors as decoding, or none at all."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from models.card import ModelCard
from models.datasets import import_dataset, load_dataset
from models.datasets.store import StoredDataset
from models.datasets.tensor_cache import (
    CACHE_DIR,
    build_cache,
    cache_dir,
    image_bytes,
    input_signature,
    open_cache,
)
from models.errors import LabelMismatchError
from models.phantoms.export import write_phantom_archive


def _dataset(tmp_path: Path, kind: str, fmt: str, n: int = 12, size: int = 48) -> StoredDataset:
    archive = write_phantom_archive(kind, n, size, fmt, tmp_path / f"{kind}.zip", seed=3,
                                    masks=True)
    import_dataset(archive.path, fmt, tmp_path / kind)
    return load_dataset(tmp_path / kind)


def _with(card: ModelCard, **update: object) -> ModelCard:
    data = card.model_dump(mode="json")
    for key, value in update.items():
        section, _, field = key.partition("__")
        if field:
            data[section][field] = value
        else:
            data[section] = value
    return ModelCard.model_validate(data)


def _same(a: tuple, b: tuple) -> None:
    assert torch.equal(a[0], b[0])
    assert torch.equal(a[1], b[1])
    assert (a[2] is None) == (b[2] is None)
    if a[2] is not None:
        assert torch.equal(a[2], b[2])


@pytest.mark.parametrize(("kind", "fmt", "channels", "window"), [
    ("derm", "imagefolder", 3, None),
    ("chest", "dicom", 1, None),
    ("chest", "dicom", 3, {"center": 40.0, "width": 400.0}),
])
def test_cached_tensors_are_the_decoded_ones(tmp_path: Path, cards: dict[str, ModelCard],
                                             kind: str, fmt: str, channels: int,
                                             window: dict | None) -> None:
    dataset = _dataset(tmp_path, kind, fmt)
    # Down-sized (box reduction, then bilinear) and padded: every step of to_model_input.
    card = _with(cards[kind], input={"channels": channels, "height": 20, "width": 28},
                 preprocessing={"resize": "pad", "dicom_window": window})
    decoded = dataset.decoded_tensors(card)
    assert dataset.cache(card) is None
    folder = build_cache(dataset, card)
    assert folder == tmp_path / kind / CACHE_DIR / input_signature(card)
    assert dataset.cache(card) is not None
    _same(dataset.tensors(card), decoded)
    assert decoded[2] is not None
    assert float(decoded[2].sum()) > 0
    picked = [7, 2, 11, 3]  # out of order: read by fancy indexing
    _same(dataset.tensors(card, picked), dataset.decoded_tensors(card, picked))
    _same(dataset.tensors(card, range(4, 9)), dataset.decoded_tensors(card, range(4, 9)))
    # A fresh load (another worker process) finds the same cache.
    _same(load_dataset(tmp_path / kind).tensors(card, picked),
          dataset.decoded_tensors(card, picked))


def test_one_cache_per_input_signature(tmp_path: Path, cards: dict[str, ModelCard]) -> None:
    dataset = _dataset(tmp_path, "derm", "imagefolder")
    card = cards["derm"]
    renamed = _with(card, name="another model of the same input",
                    preprocessing={"mean": [0.5, 0.5, 0.5], "std": [0.2, 0.2, 0.2]})
    assert input_signature(renamed) == input_signature(card)  # normalization is the model's
    for other in (_with(card, input={"channels": 3, "height": 32, "width": 16}),
                  _with(card, input={"channels": 1, "height": 32, "width": 32}),
                  _with(card, preprocessing={"resize": "center-crop"})):
        assert input_signature(other) != input_signature(card)
    build_cache(dataset, card)
    assert dataset.cache(renamed) is not None
    small = _with(card, input={"channels": 3, "height": 16, "width": 16})
    assert dataset.cache(small) is None
    build_cache(dataset, small)
    assert sorted(p.name for p in (tmp_path / "derm" / CACHE_DIR).iterdir()) == sorted(
        [input_signature(card), input_signature(small)])
    _same(dataset.tensors(small, [1, 5]), dataset.decoded_tensors(small, [1, 5]))


def test_no_cache_past_the_byte_limit(tmp_path: Path, cards: dict[str, ModelCard]) -> None:
    dataset = _dataset(tmp_path, "derm", "imagefolder")
    card = cards["derm"]
    limit = image_bytes(len(dataset), card) - 1
    assert build_cache(dataset, card, max_bytes=limit) is None
    assert not (tmp_path / "derm" / CACHE_DIR).exists() or not any(
        (tmp_path / "derm" / CACHE_DIR).iterdir())
    assert build_cache(dataset, card, max_bytes=limit + 1) is not None


def test_labels_that_do_not_fit_are_refused(tmp_path: Path,
                                            cards: dict[str, ModelCard]) -> None:
    dataset = _dataset(tmp_path, "derm", "imagefolder")
    with pytest.raises(LabelMismatchError):
        build_cache(dataset, cards["fundus"])
    assert not (tmp_path / "derm" / CACHE_DIR).exists()


def test_a_failed_build_leaves_nothing(tmp_path: Path, cards: dict[str, ModelCard],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    dataset = _dataset(tmp_path, "derm", "imagefolder", n=80)  # more than one build batch
    calls = []

    def failing(card: ModelCard, index: np.ndarray) -> tuple:
        calls.append(len(index))
        if len(calls) == 2:
            raise OSError("disk full")
        return StoredDataset.decoded_tensors(dataset, card, index)

    monkeypatch.setattr(dataset, "decoded_tensors", failing)
    with pytest.raises(OSError, match="disk full"):
        build_cache(dataset, cards["derm"])
    assert list((tmp_path / "derm" / CACHE_DIR).iterdir()) == []
    assert open_cache(dataset, cards["derm"]) is None


def test_a_second_build_keeps_the_first(tmp_path: Path, cards: dict[str, ModelCard]) -> None:
    dataset = _dataset(tmp_path, "derm", "imagefolder")
    folder = build_cache(dataset, cards["derm"])
    assert folder is not None
    stamp = (folder / "images.npy").stat().st_mtime_ns
    assert build_cache(dataset, cards["derm"]) == folder
    assert (folder / "images.npy").stat().st_mtime_ns == stamp


@pytest.mark.parametrize("damage", ["info", "shape", "dtype", "truncated", "other-dataset"])
def test_a_cache_that_does_not_match_is_ignored(tmp_path: Path, cards: dict[str, ModelCard],
                                                damage: str) -> None:
    dataset = _dataset(tmp_path, "derm", "imagefolder")
    card = cards["derm"]
    folder = build_cache(dataset, card)
    assert folder is not None
    images = np.load(folder / "images.npy")
    info = json.loads((folder / "info.json").read_text())
    if damage == "info":
        (folder / "info.json").write_text("{not json")
    elif damage == "shape":
        np.save(folder / "images.npy", images[:-1])
    elif damage == "dtype":
        np.save(folder / "images.npy", images.astype(np.float64))
    elif damage == "truncated":
        data = (folder / "images.npy").read_bytes()
        (folder / "images.npy").write_bytes(data[: len(data) // 2])
    else:
        info["dataset_sha256"] = "0" * 64
        (folder / "info.json").write_text(json.dumps(info))
    fresh = load_dataset(tmp_path / "derm")
    assert fresh.cache(card) is None
    _same(fresh.tensors(card, [0, 4]), fresh.decoded_tensors(card, [0, 4]))


def test_cache_dir_names_the_signature(tmp_path: Path, cards: dict[str, ModelCard]) -> None:
    assert cache_dir(tmp_path, cards["chest"]).parent == tmp_path / CACHE_DIR
    assert len(cache_dir(tmp_path, cards["chest"]).name) == 16
