"""Every bad archive is refused with a clear InvalidDatasetError and nothing on disk."""

from __future__ import annotations

import io
import stat
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from models.datasets import ImportLimits, import_dataset
from models.errors import InvalidDatasetError, InvalidParametersError
from models.phantoms.export import write_phantom_archive

ZipMaker = Callable[[dict[str, bytes]], Path]
Png = Callable[..., bytes]


@pytest.fixture
def refused(tmp_path: Path) -> Callable[..., InvalidDatasetError]:
    """Import, expect a refusal, and check nothing was left beside the destination."""
    store = tmp_path / "store"
    store.mkdir()

    def run(
        zip_path: Path,
        fmt: str,
        match: str,
        limits: ImportLimits | None = None,
        labels: list[str] | None = None,
    ) -> InvalidDatasetError:
        with pytest.raises(InvalidDatasetError, match=match) as err:
            import_dataset(
                zip_path, fmt, store / "ds", limits=limits or ImportLimits(), labels=labels
            )
        assert list(store.iterdir()) == []
        return err.value

    return run


def _two_classes(png: Png) -> dict[str, bytes]:
    return {"a/1.png": png(1), "a/2.png": png(2), "b/3.png": png(3), "b/4.png": png(4)}


def test_not_a_zip(tmp_path: Path, refused: Callable[..., InvalidDatasetError]) -> None:
    path = tmp_path / "x.zip"
    path.write_text("hello")
    refused(path, "imagefolder", "not a readable zip")


@pytest.mark.parametrize(
    "evil", ["../evil.png", "a/../../evil.png", "/etc/evil.png", "C:/evil.png"]
)
def test_zip_slip(
    make_zip: ZipMaker, png: Png, refused: Callable[..., InvalidDatasetError], evil: str
) -> None:
    err = refused(make_zip({**_two_classes(png), evil: png(9)}), "imagefolder", "zip slip")
    assert err.details["entries"] == [evil]


def test_symbolic_link(
    tmp_path: Path, png: Png, refused: Callable[..., InvalidDatasetError]
) -> None:
    path = tmp_path / "link.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in _two_classes(png).items():
            zf.writestr(name, data)
        link = zipfile.ZipInfo("a/link.png")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "/etc/passwd")
    refused(path, "imagefolder", "symbolic links")


def test_too_many_files(
    make_zip: ZipMaker, png: Png, refused: Callable[..., InvalidDatasetError]
) -> None:
    err = refused(
        make_zip(_two_classes(png)),
        "imagefolder",
        "4 files, more than the limit of 3",
        ImportLimits(max_files=3),
    )
    assert err.details == {"files": 4, "max_files": 3}


def test_zip_bomb_by_declared_size(
    make_zip: ZipMaker, png: Png, refused: Callable[..., InvalidDatasetError]
) -> None:
    bomb = make_zip({**_two_classes(png), "a/big.png": b"\0" * (8 << 20)})
    assert bomb.stat().st_size < 100_000  # 8 MiB of zeros deflate to a few KiB
    refused(bomb, "imagefolder", "zip bomb", ImportLimits(max_uncompressed_bytes=4 << 20))


def test_zip_bomb_with_a_lying_header(
    make_zip: ZipMaker, png: Png, refused: Callable[..., InvalidDatasetError]
) -> None:
    path = make_zip({"a/1.png": png(1), "b/2.png": b"\0" * 100_000})
    data = bytearray(path.read_bytes())
    # Patch the central directory: b/2.png claims 1000 bytes uncompressed.
    central = data.rfind(b"PK\x01\x02")
    assert data[central + 46 : central + 53] == b"b/2.png"
    data[central + 24 : central + 28] = struct.pack("<I", 1000)
    path.write_bytes(bytes(data))
    # Python's zipfile stops at the declared size and then fails the CRC; our reader also
    # counts bytes. Either way the entry is refused and nothing is written.
    refused(path, "imagefolder", r"b/2.png: (corrupt archive entry|inflates past)")


def test_unreadable_images_are_listed(
    make_zip: ZipMaker, png: Png, refused: Callable[..., InvalidDatasetError]
) -> None:
    good = png(5, size=32)
    entries = {
        **_two_classes(png),
        "a/truncated.png": good[: len(good) // 2],
        "b/notes.png": b"this is text, not an image",
        "b/empty.png": b"",
    }
    err = refused(make_zip(entries), "imagefolder", "3 images cannot be read")
    listed = {e["file"]: e["error"] for e in err.details["unreadable"]}
    assert set(listed) == {"a/truncated.png", "b/notes.png", "b/empty.png"}
    assert "truncated or corrupt PNG" in listed["a/truncated.png"]
    assert "empty" in listed["b/empty.png"]
    assert err.details["count"] == 3


def test_oversized_image_is_listed(
    make_zip: ZipMaker, png: Png, refused: Callable[..., InvalidDatasetError]
) -> None:
    entries = {**_two_classes(png), "a/huge.png": png(1, size=64)}
    err = refused(
        make_zip(entries), "imagefolder", "cannot be read", ImportLimits(max_image_pixels=1000)
    )
    assert [e["file"] for e in err.details["unreadable"]] == ["a/huge.png"]


def test_csv_naming_missing_files(
    make_zip: ZipMaker, png: Png, refused: Callable[..., InvalidDatasetError]
) -> None:
    csv = b"file,label\nimages/1.png,a\nimages/2.png,b\nimages/gone.png,a\n"
    err = refused(
        make_zip({"labels.csv": csv, "images/1.png": png(1), "images/2.png": png(2)}),
        "csv",
        "names 1 image files",
    )
    assert err.details["missing"] == ["images/gone.png"]


def test_labels_not_in_the_csv_header(
    make_zip: ZipMaker, png: Png, refused: Callable[..., InvalidDatasetError]
) -> None:
    csv = b"file,Effusion,Nodule\n1.png,1,0\n2.png,0,1\n"
    archive = make_zip({"labels.csv": csv, "1.png": png(1), "2.png": png(2)})
    err = refused(
        archive,
        "csv",
        r"labels not in the CSV header: \['Cardiomegaly'\]",
        labels=["Cardiomegaly", "Effusion", "Nodule"],
    )
    assert err.details["missing"] == ["Cardiomegaly"]


def test_csv_without_label_columns(
    make_zip: ZipMaker, png: Png, refused: Callable[..., InvalidDatasetError]
) -> None:
    archive = make_zip({"labels.csv": b"file\n1.png\n", "1.png": png(1)})
    refused(archive, "csv", "names no labels")


def test_csv_without_file_column(
    make_zip: ZipMaker, png: Png, refused: Callable[..., InvalidDatasetError]
) -> None:
    archive = make_zip({"labels.csv": b"picture,label\n1.png,a\n", "1.png": png(1)})
    refused(archive, "csv", "no file column")


def test_csv_label_columns_must_be_binary(
    make_zip: ZipMaker, png: Png, refused: Callable[..., InvalidDatasetError]
) -> None:
    csv = b"file,Effusion,Age\n1.png,1,63\n2.png,0,41\n"
    err = refused(make_zip({"labels.csv": csv, "1.png": png(1), "2.png": png(2)}), "csv", "0 or 1")
    assert err.details["columns"] == {"Age": ["2", "3"]}


def test_classes_outside_the_given_labels(
    make_zip: ZipMaker, png: Png, refused: Callable[..., InvalidDatasetError]
) -> None:
    refused(
        make_zip(_two_classes(png)),
        "imagefolder",
        r"not in the given labels: \['b'\]",
        labels=["a", "c"],
    )


def test_dicom_format_requires_dicom_files(
    make_zip: ZipMaker, png: Png, refused: Callable[..., InvalidDatasetError]
) -> None:
    csv = b"file,label\n1.png,a\n2.png,b\n"
    err = refused(
        make_zip({"labels.csv": csv, "1.png": png(1), "2.png": png(2)}), "dicom", "cannot be read"
    )
    assert err.details["unreadable"][0]["error"] == "PNG, not DICOM"


def test_npz_with_pickled_objects_is_refused(
    make_zip: ZipMaker, refused: Callable[..., InvalidDatasetError]
) -> None:
    buf = io.BytesIO()
    np.savez(
        buf,
        train_images=np.array([{"evil": 1}], dtype=object),
        train_labels=np.zeros((1, 1), np.uint8),
    )
    refused(make_zip({"data.npz": buf.getvalue()}), "medmnist-npz", "cannot be read")


def test_npz_without_the_medmnist_arrays(
    make_zip: ZipMaker, refused: Callable[..., InvalidDatasetError]
) -> None:
    buf = io.BytesIO()
    np.savez(buf, x=np.zeros((2, 8, 8), np.uint8), y=np.zeros(2, np.uint8))
    err = refused(make_zip({"data.npz": buf.getvalue()}), "medmnist-npz", "no '<split>_images'")
    assert err.details["keys"] == ["x", "y"]


def test_npz_labels_must_match_images(
    make_zip: ZipMaker, refused: Callable[..., InvalidDatasetError]
) -> None:
    buf = io.BytesIO()
    np.savez(buf, train_images=np.zeros((3, 8, 8), np.uint8), train_labels=np.zeros((2, 1)))
    refused(make_zip({"data.npz": buf.getvalue()}), "medmnist-npz", "N = 3")


def test_masks_for_some_images_only(
    make_zip: ZipMaker, png: Png, refused: Callable[..., InvalidDatasetError]
) -> None:
    entries = {**_two_classes(png), "masks/a/1.png": png(7)}
    refused(make_zip(entries), "imagefolder", "masks are given for 1 of 4 images")


def test_archive_without_images(
    make_zip: ZipMaker, refused: Callable[..., InvalidDatasetError]
) -> None:
    refused(make_zip({"README.txt": b"hello"}), "imagefolder", "no images in class folders")


def test_archive_over_its_byte_limit(
    tmp_path: Path, refused: Callable[..., InvalidDatasetError]
) -> None:
    archive = write_phantom_archive("derm", 4, 32, "csv", tmp_path / "a.zip")
    refused(archive.path, "csv", "more than the limit", ImportLimits(max_archive_bytes=100))


def test_unknown_format(tmp_path: Path, make_zip: ZipMaker, png: Png) -> None:
    with pytest.raises(InvalidParametersError, match="valid: imagefolder, csv"):
        import_dataset(make_zip(_two_classes(png)), "tfrecord", tmp_path / "ds")
    assert not (tmp_path / "ds").exists()


def test_refusal_removes_an_empty_destination(tmp_path: Path, make_zip: ZipMaker, png: Png) -> None:
    dest = tmp_path / "datasets" / "abc"
    dest.mkdir(parents=True)  # as the service's storage creates it
    with pytest.raises(InvalidDatasetError):
        import_dataset(make_zip({"a/x.png": b"nope"}), "imagefolder", dest)
    assert list((tmp_path / "datasets").iterdir()) == []
