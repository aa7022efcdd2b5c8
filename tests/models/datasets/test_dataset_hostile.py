"""Hostile archives: refused from the zip's own records before zipfile loads them, names
the filesystem cannot hold, label CSVs read as a stream, and bad images listed by name."""

from __future__ import annotations

import io
import struct
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import models.datasets.archive as archive_module
from models.datasets import ImportLimits, import_dataset, load_dataset
from models.datasets.labels_csv import MAX_COLUMNS, parse_label_csv
from models.datasets.zip_directory import check_directory
from models.errors import InvalidDatasetError, InvalidParametersError

ZipMaker = Callable[[dict[str, bytes]], Path]
Png = Callable[..., bytes]


def _refused(zip_path: Path, fmt: str, dest: Path, **kw: object) -> InvalidDatasetError:
    with pytest.raises(InvalidDatasetError) as info:
        import_dataset(zip_path, fmt, dest, **kw)  # type: ignore[arg-type]
    assert not dest.exists()
    assert [p.name for p in dest.parent.iterdir() if p.name.startswith(".")] == []
    return info.value


def _forbid_zipfile(monkeypatch: pytest.MonkeyPatch) -> None:
    """From now on, fail the test if zipfile is asked to open (and load the directory of)
    an archive."""

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("zipfile.ZipFile opened the archive")

    monkeypatch.setattr(archive_module.zipfile, "ZipFile", forbidden)


# ----------------------------------------------------------------------------- entry counts


def _zip64_claiming(path: Path, entries: int) -> Path:
    """A small zip whose end records claim ``entries`` entries (zip64, as a 2M-entry zip
    must), with the real one-entry directory."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("a/1.png", b"x")
    data = buf.getvalue()
    eocd = data.rfind(b"PK\x05\x06")
    _, _, _, _, _, cd_size, cd_offset, _ = struct.unpack("<4s4H2LH", data[eocd : eocd + 22])
    z64_pos = eocd
    z64 = struct.pack(
        "<4sQHHIIQQQQ", b"PK\x06\x06", 44, 45, 45, 0, 0, entries, entries, cd_size, cd_offset
    )
    locator = struct.pack("<4sIQI", b"PK\x06\x07", 0, z64_pos, 1)
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, cd_size, cd_offset, 0)
    path.write_bytes(data[:eocd] + z64 + locator + end)
    return path


def test_a_zip_claiming_2m_entries_is_refused_before_zipfile_reads_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _zip64_claiming(tmp_path / "claims.zip", 2_000_000)
    _forbid_zipfile(monkeypatch)
    err = _refused(path, "imagefolder", tmp_path / "store" / "ds")
    assert err.details == {"files": 2_000_000, "max_files": 2 * 200_000 + 1024}
    assert "2000000 entries" in err.message


def _many_entries(path: Path, count: int) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for i in range(count):
            zf.writestr(f"a/{i}.png", b"")
    return path


def test_a_lying_count_does_not_hide_the_records(tmp_path: Path) -> None:
    path = _many_entries(tmp_path / "many.zip", 400)
    data = bytearray(path.read_bytes())
    eocd = data.rfind(b"PK\x05\x06")
    data[eocd + 8 : eocd + 12] = struct.pack("<HH", 3, 3)  # "3 entries"
    path.write_bytes(bytes(data))
    assert check_directory(path, 10_000) == 400
    with pytest.raises(InvalidDatasetError, match="more than 220 entries") as info:
        check_directory(path, 220)
    assert info.value.details == {"max_files": 220}


def test_too_many_records_are_refused_before_zipfile_reads_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _many_entries(tmp_path / "many.zip", 1300)
    _forbid_zipfile(monkeypatch)
    limits = ImportLimits(max_files=100)  # 2 x 100 + 1024 records allowed
    err = _refused(path, "imagefolder", tmp_path / "store" / "ds", limits=limits)
    assert "1300 entries" in err.message


def test_a_truncated_zip_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "cut.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("a/1.png", b"x" * 100)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(InvalidDatasetError, match="end of central directory"):
        check_directory(path, 100)


# ----------------------------------------------------------------------------- names


@pytest.mark.parametrize(
    ("names", "match"),
    [
        (["a/1.png", "a/1.png/3.png"], "also folders of other entries"),
        (["a/X.png", "a/x.png"], "differ only in case"),
        (["a/" + "n" * 300 + ".png", "b/1.png"], "too long for the filesystem"),
        (["/".join(["d" * 200] * 6) + "/1.png", "b/1.png"], "too long for the filesystem"),
    ],
)
def test_names_that_clash_or_do_not_fit_are_refused(
    make_zip: ZipMaker, png: Png, tmp_path: Path, names: list[str], match: str
) -> None:
    entries = {name: png(i) for i, name in enumerate(names)} | {"b/2.png": png(9)}
    err = _refused(make_zip(entries), "imagefolder", tmp_path / "store" / "ds")
    assert match in err.message
    assert len(err.details["entries"]) >= 1


def test_names_at_the_limits_are_accepted(make_zip: ZipMaker, png: Png, tmp_path: Path) -> None:
    long = "a/" + "n" * 251 + ".png"  # a 255-byte file name
    info = import_dataset(make_zip({long: png(1), "b/1.png": png(2)}), "imagefolder",
                          tmp_path / "ds")  # fmt: skip
    assert info.count == 2


# ----------------------------------------------------------------------------- CSV streams


def test_the_csv_is_parsed_as_a_stream_with_a_row_limit() -> None:
    def endless() -> Iterator[str]:
        yield "file,label\n"
        i = 0
        while True:  # a slurping parser would never return
            yield f"images/{i}.png,a\n"
            i += 1

    with pytest.raises(InvalidDatasetError, match="more than 100 rows") as info:
        parse_label_csv(endless(), "labels.csv", max_rows=100)
    assert info.value.details == {"max_rows": 100}


def test_csv_row_and_byte_limits_in_an_import(make_zip: ZipMaker, png: Png, tmp_path: Path) -> None:
    rows = "".join(f"images/{i}.png,a\n" for i in range(30))
    entries = {"images/0.png": png(0), "labels.csv": f"file,label\n{rows}".encode()}
    err = _refused(make_zip(entries), "csv", tmp_path / "store" / "ds",
                   limits=ImportLimits(max_csv_rows=20))  # fmt: skip
    assert "more than 20 rows" in err.message
    err = _refused(make_zip(entries), "csv", tmp_path / "store" / "ds",
                   limits=ImportLimits(max_csv_bytes=100))  # fmt: skip
    assert "over the limit of 100 bytes" in err.message


def test_too_many_csv_columns_are_refused() -> None:
    header = "file,label," + ",".join(f"c{i}" for i in range(MAX_COLUMNS))
    with pytest.raises(InvalidDatasetError, match=f"more than {MAX_COLUMNS}"):
        parse_label_csv(f"{header}\nx.png,a\n".encode(), "labels.csv")


def test_a_csv_that_is_not_utf8_is_refused_while_streaming(
    make_zip: ZipMaker, png: Png, tmp_path: Path
) -> None:
    entries = {"images/0.png": png(0), "labels.csv": b"file,label\nimages/0.png,\xff\xfe\n"}
    err = _refused(make_zip(entries), "csv", tmp_path / "store" / "ds")
    assert "not UTF-8" in err.message


# ----------------------------------------------------------------------------- bad files


def _with_bad_files(png: Png) -> dict[str, bytes]:
    good = png(5, size=32)
    return {
        "a/1.png": png(1), "a/2.png": png(2), "b/3.png": png(3), "b/4.png": png(4),
        "a/truncated.png": good[: len(good) // 2], "b/notes.png": b"not an image",
    }  # fmt: skip


def test_bad_files_refuse_the_import_by_default_listing_each(
    make_zip: ZipMaker, png: Png, tmp_path: Path
) -> None:
    err = _refused(make_zip(_with_bad_files(png)), "imagefolder", tmp_path / "store" / "ds")
    assert err.details["count"] == 2
    reasons = {e["file"]: e["error"] for e in err.details["unreadable"]}
    assert set(reasons) == {"a/truncated.png", "b/notes.png"}
    assert "not a PNG, JPEG or DICOM" in reasons["b/notes.png"]


def test_skip_imports_the_rest_and_records_the_bad_files(
    make_zip: ZipMaker, png: Png, tmp_path: Path
) -> None:
    dest = tmp_path / "ds"
    info = import_dataset(make_zip(_with_bad_files(png)), "imagefolder", dest, on_bad_files="skip")
    assert info.count == 4
    assert info.skipped_count == 2
    assert {f.file for f in info.skipped_files} == {"a/truncated.png", "b/notes.png"}
    assert info.label_counts == {"a": 2, "b": 2}
    assert not (dest / "files" / "b" / "notes.png").exists()
    assert sorted(p.name for p in (dest / "files").rglob("*.png")) == [
        "1.png", "2.png", "3.png", "4.png"
    ]  # fmt: skip
    assert len(load_dataset(dest)) == 4


def test_skip_leaves_out_an_image_whose_mask_is_bad(
    make_zip: ZipMaker, png: Png, tmp_path: Path
) -> None:
    entries = {"a/1.png": png(1), "b/2.png": png(2), "masks/a/1.png": png(3),
               "masks/b/2.png": b"broken"}  # fmt: skip
    info = import_dataset(make_zip(entries), "imagefolder", tmp_path / "ds", on_bad_files="skip")
    assert info.count == 1
    assert [f.file for f in info.skipped_files] == ["masks/b/2.png"]
    assert not (tmp_path / "ds" / "files" / "b" / "2.png").exists()


def test_skip_with_nothing_left_is_refused(make_zip: ZipMaker, tmp_path: Path) -> None:
    entries = {"a/1.png": b"x", "b/2.png": b"y"}
    err = _refused(make_zip(entries), "imagefolder", tmp_path / "store" / "ds", on_bad_files="skip")
    assert err.details["count"] == 2


def test_an_unknown_bad_file_option_is_refused(
    make_zip: ZipMaker, png: Png, tmp_path: Path
) -> None:
    with pytest.raises(InvalidParametersError, match="on_bad_files"):
        import_dataset(make_zip({"a/1.png": png(1)}), "imagefolder", tmp_path / "ds",
                       on_bad_files="ignore")  # type: ignore[arg-type]  # fmt: skip


# ----------------------------------------------------------------------------- decode limits


def _progressive_jpeg(scans: int) -> bytes:
    rgb = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", progressive=True)
    data = buf.getvalue()
    last = data.rfind(b"\xff\xda")
    end = data.rfind(b"\xff\xd9")
    return data[:end] + data[last:end] * scans + data[end:]


def test_the_import_applies_the_decoders_limits(
    make_zip: ZipMaker, png: Png, tmp_path: Path
) -> None:
    entries = {"a/1.png": png(1), "b/2.jpg": _progressive_jpeg(200)}
    err = _refused(make_zip(entries), "imagefolder", tmp_path / "store" / "ds")
    assert [e["file"] for e in err.details["unreadable"]] == ["b/2.jpg"]
    assert "scans" in err.details["unreadable"][0]["error"]
    limits = ImportLimits(max_jpeg_scans=1000)
    assert (
        import_dataset(make_zip(entries), "imagefolder", tmp_path / "ds", limits=limits).count == 2
    )


def test_the_import_has_one_pixel_budget(make_zip: ZipMaker, png: Png, tmp_path: Path) -> None:
    entries = {f"a/{i}.png": png(i, size=16) for i in range(5)} | {"b/x.png": png(9, size=16)}
    limits = ImportLimits(max_total_pixels=16 * 16 * 4)
    err = _refused(make_zip(entries), "imagefolder", tmp_path / "store" / "ds", limits=limits,
                   on_bad_files="skip")  # fmt: skip
    assert err.details == {"max_total_pixels": 1024}


def test_an_image_over_the_byte_limit_is_a_bad_file(
    make_zip: ZipMaker, png: Png, tmp_path: Path
) -> None:
    entries = {"a/1.png": png(1, size=8), "b/2.png": png(2, size=8), "b/big.png": png(3, size=64)}
    limits = ImportLimits(max_image_bytes=len(png(1, size=8)) + 200)
    err = _refused(make_zip(entries), "imagefolder", tmp_path / "store" / "ds", limits=limits)
    assert [e["file"] for e in err.details["unreadable"]] == ["b/big.png"]
    info = import_dataset(make_zip(entries), "imagefolder", tmp_path / "ds", limits=limits,
                          on_bad_files="skip")  # fmt: skip
    assert (info.count, info.skipped_count) == (2, 1)


def test_errors_never_name_server_paths(tmp_path: Path, make_zip: ZipMaker) -> None:
    with pytest.raises(InvalidDatasetError) as info:
        load_dataset(tmp_path / "gone")
    assert str(tmp_path) not in info.value.message
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "manifest.json").write_text("{not json")
    with pytest.raises(InvalidDatasetError) as info:
        load_dataset(tmp_path / "bad")
    assert str(tmp_path) not in info.value.message
    npz = make_zip({"x.npz": b"PK\x03\x04 not really an npz"})
    err = _refused(npz, "medmnist-npz", tmp_path / "store" / "ds")
    assert str(tmp_path) not in err.message


def test_a_row_wider_than_the_header_is_named_not_shifted() -> None:
    from models.datasets.labels_csv import parse_label_csv

    with pytest.raises(InvalidDatasetError, match="1 rows have more cells than the header") as e:
        parse_label_csv(b"file,label\n1.png,benign,extra\n2.png,malignant\n", "labels.csv")
    assert e.value.details["lines"] == ["2"]
    # Trailing empty cells (a spreadsheet's habit) are not a shift.
    parsed = parse_label_csv(b"file,label\n1.png,benign,,\n2.png,malignant\n", "labels.csv")
    assert [r.file for r in parsed.rows] == ["1.png", "2.png"]
