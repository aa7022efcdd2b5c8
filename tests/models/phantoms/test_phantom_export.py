"""Phantom archives: the layout of each import format, and exact pixels in DICOM."""

from __future__ import annotations

import csv
import io
import zipfile
from pathlib import Path

import numpy as np
import pytest

from models.errors import InvalidParametersError
from models.imaging import DecodeLimits, decode_image, to_uint8
from models.phantoms import generate
from models.phantoms.export import FORMATS, write_phantom_archive

LIMITS = DecodeLimits(max_bytes=1 << 24, max_pixels=1 << 20)


def _csv(zf: zipfile.ZipFile) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(zf.read("labels.csv").decode())))


def test_chest_csv_follows_the_chestxray14_convention(tmp_path: Path) -> None:
    summary = write_phantom_archive("chest", 40, 32, "csv", tmp_path / "c.zip", seed=2)
    ps = generate("chest", 40, 32, seed=2)
    with zipfile.ZipFile(summary.path) as zf:
        rows = _csv(zf)
        assert list(rows[0]) == [
            "Image Index", "Finding Labels", "sex", "age_band", "manufacturer", "view"
        ]  # fmt: skip
        for i, row in enumerate(rows):
            expected = ps.label_names_of(i)
            assert row["Finding Labels"] == ("|".join(expected) or "No Finding")
            assert row["Image Index"] == f"chest_{i:06d}.png"
            png = zf.read(f"images/{row['Image Index']}")
            img = decode_image(png, filename=row["Image Index"], limits=LIMITS)
            assert np.array_equal(to_uint8(img.pixels), ps.images[i])
    assert summary.count == 40
    assert summary.label_counts == {
        n: int(c) for n, c in zip(ps.label_names, ps.labels.sum(0), strict=True)
    }


def test_imagefolder_with_masks(tmp_path: Path) -> None:
    summary = write_phantom_archive("derm", 10, 32, "imagefolder", tmp_path / "d.zip", masks=True)
    ps = generate("derm", 10, 32, seed=0)
    with zipfile.ZipFile(summary.path) as zf:
        names = set(zf.namelist())
    for i in range(10):
        label = ps.label_names[int(ps.labels[i])]
        assert f"{label}/derm_{i:06d}.png" in names
        assert f"masks/{label}/derm_{i:06d}.png" in names


def test_imagefolder_refuses_multilabel_kinds(tmp_path: Path) -> None:
    with pytest.raises(InvalidParametersError, match="multi-label"):
        write_phantom_archive("chest", 4, 32, "imagefolder", tmp_path / "x.zip")
    assert not (tmp_path / "x.zip").exists()


def test_unknown_format_lists_the_valid_ones(tmp_path: Path) -> None:
    with pytest.raises(InvalidParametersError, match="valid: imagefolder, csv, medmnist-npz"):
        write_phantom_archive("derm", 4, 32, "hdf5", tmp_path / "x.zip")


@pytest.mark.parametrize("kind", ["chest", "fundus"])
def test_medmnist_npz_layout(tmp_path: Path, kind: str) -> None:
    summary = write_phantom_archive(kind, 20, 32, "medmnist-npz", tmp_path / "m.zip", masks=True)
    ps = generate(kind, 20, 32, seed=0)
    with zipfile.ZipFile(summary.path) as zf:
        npz = np.load(io.BytesIO(zf.read(f"{kind}_phantom.npz")))
        assert npz["train_images"].shape[0] == 14
        assert npz["val_images"].shape[0] == 2
        assert npz["test_images"].shape[0] == 4
        images = np.concatenate([npz[f"{s}_images"] for s in ("train", "val", "test")])
        labels = np.concatenate([npz[f"{s}_labels"] for s in ("train", "val", "test")])
    if kind == "chest":
        assert images.shape == (20, 32, 32)  # greyscale as MedMNIST stores it
        assert np.array_equal(images, ps.images[..., 0])
        assert np.array_equal(labels, ps.labels)
    else:
        assert images.shape == (20, 32, 32, 3)
        assert labels.shape == (20, 1)
        assert np.array_equal(labels[:, 0], ps.labels)


@pytest.mark.parametrize("kind", ["chest", "derm"])
def test_dicom_archives_decode_to_the_exact_pixels(tmp_path: Path, kind: str) -> None:
    summary = write_phantom_archive(kind, 8, 32, "dicom", tmp_path / "x.zip", seed=4)
    ps = generate(kind, 8, 32, seed=4)
    with zipfile.ZipFile(summary.path) as zf:
        rows = _csv(zf)
        modes = set()
        for i, row in enumerate(rows):
            name = row["Image Index"] if kind == "chest" else row["file"]
            path = name if "/" in name else f"dicom/{name}"
            img = decode_image(zf.read(path), filename=name, limits=LIMITS)
            assert img.source_format == "dicom"
            modes.add(img.mode)
            assert np.array_equal(to_uint8(img.pixels), ps.images[i])
    assert modes == ({"MONOCHROME1", "MONOCHROME2"} if kind == "chest" else {"RGB"})


def test_every_format_is_known() -> None:
    assert FORMATS == ("imagefolder", "csv", "medmnist-npz", "dicom")
