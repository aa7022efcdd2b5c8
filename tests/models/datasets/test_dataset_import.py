"""Dataset import: every format round-trips from the phantom archives, and the stored
dataset gives the model exactly what predict would."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models.card import ModelCard
from models.datasets import ImportLimits, check_labels, import_dataset, load_dataset
from models.errors import LabelMismatchError
from models.imaging import decode_image, to_model_input, to_uint8
from models.phantoms import generate
from models.phantoms.export import write_phantom_archive

CASES = [
    ("chest", "csv"),
    ("chest", "medmnist-npz"),
    ("chest", "dicom"),
    ("derm", "imagefolder"),
    ("derm", "csv"),
    ("derm", "medmnist-npz"),
    ("derm", "dicom"),
    ("fundus", "imagefolder"),
    ("fundus", "csv"),
    ("fundus", "medmnist-npz"),
    ("fundus", "dicom"),
]


def _phantom_index(source: str | None, position: int, fmt: str) -> int:
    if fmt == "medmnist-npz":
        return position  # the splits keep the generation order
    assert source is not None
    return int(Path(source).stem.rsplit("_", 1)[1])


@pytest.mark.parametrize(("kind", "fmt"), CASES)
def test_round_trip(tmp_path: Path, kind: str, fmt: str, cards: dict[str, ModelCard]) -> None:
    n = 24
    archive = write_phantom_archive(kind, n, 32, fmt, tmp_path / "a.zip", seed=9, masks=True)
    info = import_dataset(archive.path, fmt, tmp_path / "ds", limits=ImportLimits())
    ps = generate(kind, n, 32, seed=9)
    assert info.count == n
    assert info.task == ps.task
    assert set(info.label_names) <= set(ps.label_names)
    assert {k: v for k, v in archive.label_counts.items() if v} == {
        k: v for k, v in info.label_counts.items() if v
    }
    assert info.has_masks
    assert info.image_formats == {"dicom" if fmt == "dicom" else "png": n}
    assert info.splits == ({"train": 17, "val": 2, "test": 5} if fmt == "medmnist-npz" else None)
    assert len(info.sha256) == 64

    ds = load_dataset(tmp_path / "ds")
    card = cards[kind]
    images, labels, masks = ds.tensors(card)
    order = [_phantom_index(it.source, i, fmt) for i, it in enumerate(ds.items)]
    assert sorted(order) == list(range(n))
    assert images.shape == (n, card.input.channels, 32, 32)
    assert images.dtype == torch.float32
    for row, index in enumerate(order):
        assert np.array_equal(to_uint8(images[row]), ps.images[index])
    expected = ps.labels[order]
    if ps.task == "multi-label":
        assert labels.dtype == torch.float32
        assert np.array_equal(labels.numpy(), expected.astype(np.float32))
    else:
        assert labels.dtype == torch.long
        assert np.array_equal(labels.numpy(), expected)
    assert masks is not None
    assert np.array_equal(masks.numpy(), ps.masks[order].astype(np.float32))


def test_tensors_decode_exactly_as_predict(tmp_path: Path, cards: dict[str, ModelCard]) -> None:
    archive = write_phantom_archive("chest", 6, 64, "dicom", tmp_path / "a.zip", seed=1)
    import_dataset(archive.path, "dicom", tmp_path / "ds")
    ds = load_dataset(tmp_path / "ds")
    card = ModelCard.model_validate(
        {
            **cards["chest"].model_dump(),
            "input": {"channels": 3, "height": 40, "width": 48},
            "preprocessing": {"resize": "pad", "dicom_window": {"center": 1800, "width": 2500}},
        }
    )
    images, _, _ = ds.tensors(card, [2, 5])
    for row, i in enumerate([2, 5]):
        raw = (tmp_path / "ds" / ds.items[i].file).read_bytes()
        direct = to_model_input(
            decode_image(raw, filename="x.dcm", max_bytes=1 << 24, max_pixels=1 << 22), card
        )
        assert torch.equal(images[row], direct)
    assert images.shape == (2, 3, 40, 48)


def test_labels_follow_the_cards_order(tmp_path: Path, cards: dict[str, ModelCard]) -> None:
    archive = write_phantom_archive("fundus", 30, 32, "imagefolder", tmp_path / "a.zip", seed=2)
    info = import_dataset(archive.path, "imagefolder", tmp_path / "ds")
    assert info.label_names == tuple(sorted(info.label_names))  # folder order
    ds = load_dataset(tmp_path / "ds")
    _, labels, _ = ds.tensors(cards["fundus"])
    names = [cards["fundus"].labels[int(k)] for k in labels]
    folders = [Path(it.source or "").parts[0] for it in ds.items]
    assert names == folders


def test_given_labels_fix_names_and_order(tmp_path: Path) -> None:
    archive = write_phantom_archive("derm", 12, 32, "medmnist-npz", tmp_path / "a.zip")
    plain = import_dataset(archive.path, "medmnist-npz", tmp_path / "ds1")
    assert plain.label_names == ("benign", "melanoma")  # from the npz's label_names
    named = import_dataset(archive.path, "medmnist-npz", tmp_path / "ds2", labels=["nevus", "mel"])
    assert named.label_names == ("nevus", "mel")


def test_batches_cover_the_dataset(tmp_path: Path, cards: dict[str, ModelCard]) -> None:
    archive = write_phantom_archive("derm", 10, 32, "csv", tmp_path / "a.zip")
    import_dataset(archive.path, "csv", tmp_path / "ds")
    ds = load_dataset(tmp_path / "ds")
    seen = []
    for idx, images, labels, masks in ds.batches(cards["derm"], 4):
        assert images.shape[0] == labels.shape[0] == len(idx) <= 4
        assert masks is None
        seen.extend(idx.tolist())
    assert seen == list(range(10))


def test_import_into_an_existing_empty_folder(tmp_path: Path) -> None:
    archive = write_phantom_archive("derm", 5, 32, "csv", tmp_path / "a.zip")
    dest = tmp_path / "store" / "datasets" / "abc"
    dest.mkdir(parents=True)
    import_dataset(archive.path, "csv", dest)
    assert (dest / "manifest.json").is_file()
    assert sorted(p.name for p in dest.parent.iterdir()) == ["abc"]


def test_check_labels(tmp_path: Path, cards: dict[str, ModelCard]) -> None:
    archive = write_phantom_archive("fundus", 12, 32, "csv", tmp_path / "a.zip", seed=3)
    fundus_info = import_dataset(archive.path, "csv", tmp_path / "f")
    check_labels(fundus_info, cards["fundus"])  # a subset of the classes is fine
    with pytest.raises(LabelMismatchError, match="single-label but model 'chest' is multi-label"):
        check_labels(fundus_info, cards["chest"])
    with pytest.raises(LabelMismatchError, match="not labels of model 'derm'") as err:
        check_labels(fundus_info, cards["derm"])
    assert err.value.details["unknown"]

    chest_csv = write_phantom_archive("chest", 40, 32, "csv", tmp_path / "c.zip")
    chest_info = import_dataset(chest_csv.path, "csv", tmp_path / "c")
    assert chest_info.implicit_negatives
    bigger = ModelCard.model_validate(
        {**cards["chest"].model_dump(), "labels": [*cards["chest"].labels, "Hernia"]}
    )
    check_labels(chest_info, bigger)  # ChestX-ray14: an unnamed finding is negative

    npz = write_phantom_archive("chest", 40, 32, "medmnist-npz", tmp_path / "n.zip")
    npz_info = import_dataset(npz.path, "medmnist-npz", tmp_path / "n")
    check_labels(npz_info, cards["chest"])
    with pytest.raises(LabelMismatchError, match=r"findings \['Hernia'\] are not in the dataset"):
        check_labels(npz_info, bigger)
    ds = load_dataset(tmp_path / "n")
    with pytest.raises(LabelMismatchError):
        ds.tensors(bigger)
