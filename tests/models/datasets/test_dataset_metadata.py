"""Per-image metadata: CSV columns and DICOM tags become capped group labels."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from models.datasets import import_dataset, load_dataset
from models.datasets.metadata import (
    MAX_DISTINCT,
    age_band,
    clean_value,
    column_key,
    dicom_metadata,
)
from models.datasets.types import MANIFEST

ZipMaker = Callable[[dict[str, bytes]], Path]
Png = Callable[..., bytes]


@pytest.mark.parametrize(
    ("value", "band"),
    [
        ("045Y", "40-59"), ("006M", "0-17"), ("017Y", "0-17"), ("018Y", "18-39"),
        ("039Y", "18-39"), ("040Y", "40-59"), ("060Y", "60-79"), ("080Y", "80+"),
        ("110Y", "80+"), ("012W", "0-17"), ("003D", "0-17"), ("58", "40-59"),
        ("58.5", "40-59"), ("60-79", "60-79"), ("abc", None), ("045X", None), ("45Y", None),
        ("200", None), ("-3", None), ("", None), ("999Y", None),
    ],
)  # fmt: skip
def test_age_bands(value: str, band: str | None) -> None:
    assert age_band(value) == band


@pytest.mark.parametrize(
    ("header", "key"),
    [
        ("Patient ID", None), ("PatientID", None), ("PatientName", None), ("patient_name", None),
        ("MRN", None), ("AccessionNumber", None), ("StudyInstanceUID", None),
        ("PatientBirthDate", None), ("Patient Age", "age_band"), ("age", "age_band"),
        ("Patient Gender", "sex"), ("PatientSex", "sex"), ("View Position", "view"),
        ("Manufacturer", "manufacturer"), ("BodyPartExamined", "body_part"),
        ("site", "site"), ("Follow-up #", "Follow-up #"),
    ],
)  # fmt: skip
def test_column_keys_never_keep_identifiers(header: str, key: str | None) -> None:
    assert column_key(header) == key


def test_values_are_cleaned_and_capped() -> None:
    assert clean_value("sex", "female") == "F"
    assert clean_value("sex", "Male") == "M"
    assert clean_value("sex", "unknown") is None
    assert clean_value("view", "pa") == "PA"
    assert clean_value("site", "x" * 65) is None
    assert clean_value("site", "a\nb") is None
    assert clean_value("site", "  Hospital B ") == "Hospital B"


def test_csv_metadata_columns_are_kept_capped_and_never_identifiers(
    make_zip: ZipMaker, png: Png, tmp_path: Path
) -> None:
    lines = ["Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,"
             "View Position,PatientName,site"]  # fmt: skip
    entries = {}
    n = MAX_DISTINCT + 8
    for i in range(n):
        entries[f"images/{i}.png"] = png(i)
        finding = "Mass" if i % 3 == 0 else "No Finding"
        lines.append(
            f"{i}.png,{finding},{i},{1000 + i},{20 + i},{'MF'[i % 2]},{'PA' if i % 4 else 'AP'},"
            f"DOE^JANE{i},{'A' if i < n - 1 else 'x' * 80}"
        )
    entries["labels.csv"] = ("\n".join(lines) + "\n").encode()
    info = import_dataset(make_zip(entries), "csv", tmp_path / "ds")
    assert info.metadata_keys == ("age_band", "sex", "site", "view")
    assert info.metadata_dropped == ("Follow-up #",)  # one value per image: not a group
    meta = load_dataset(tmp_path / "ds").metadata()
    assert meta[0] == {"age_band": "18-39", "sex": "M", "view": "AP", "site": "A"}
    assert meta[1] == {"age_band": "18-39", "sex": "F", "view": "PA", "site": "A"}
    assert meta[-1]["age_band"] == "40-59"
    assert "site" not in meta[-1]  # an 80-character value is not a group label
    stored = (tmp_path / "ds" / MANIFEST).read_text()
    assert "DOE^JANE" not in stored
    assert "1003" not in stored


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom warns about the bad AS value
def test_dicom_tags_become_metadata_and_names_never_do() -> None:
    ds = pydicom.dcmread(str(get_testdata_file("CT_small.dcm")))
    ds.PatientSex, ds.PatientAge, ds.ViewPosition = "F", "045Y", "AP"
    ds.Manufacturer, ds.BodyPartExamined = "GE MEDICAL SYSTEMS", "CHEST"
    assert dicom_metadata(ds) == {
        "sex": "F", "age_band": "40-59", "view": "AP",
        "manufacturer": "GE MEDICAL SYSTEMS", "body_part": "CHEST",
    }  # fmt: skip
    ds.PatientAge = "old"
    ds.PatientSex = "X"
    assert "age_band" not in dicom_metadata(ds)
    assert "sex" not in dicom_metadata(ds)


def test_metadata_by_indices_and_old_manifests(
    make_zip: ZipMaker, png: Png, tmp_path: Path
) -> None:
    csv = b"file,label,site\na/1.png,a,north\nb/2.png,b,south\na/3.png,a,north\n"
    entries = {"a/1.png": png(1), "b/2.png": png(2), "a/3.png": png(3), "labels.csv": csv}
    import_dataset(make_zip(entries), "csv", tmp_path / "ds")
    ds = load_dataset(tmp_path / "ds")
    assert ds.metadata(np.array([2, 0])) == [{"site": "north"}, {"site": "north"}]
    assert ds.metadata([1]) == [{"site": "south"}]
    # A manifest written before metadata existed loads, with empty metadata.
    path = tmp_path / "ds" / MANIFEST
    manifest = json.loads(path.read_text())
    for item in manifest["items"]:
        del item["metadata"]
    for key in ("metadata_keys", "metadata_dropped", "skipped_files", "skipped_count"):
        del manifest["info"][key]
    for key in ("max_jpeg_scans", "max_total_pixels", "max_csv_rows"):
        del manifest["limits"][key]
    path.write_text(json.dumps(manifest))
    assert load_dataset(tmp_path / "ds").metadata() == [{}, {}, {}]


def test_metadata_keys_are_capped(make_zip: ZipMaker, png: Png, tmp_path: Path) -> None:
    columns = [f"c{k}" for k in range(20)]
    csv = io.StringIO()
    csv.write("file,label," + ",".join(columns) + "\n")
    entries = {}
    for i in range(3):
        entries[f"a/{i}.png"] = png(i)
        csv.write(f"a/{i}.png,a," + ",".join("v" for _ in columns) + "\n")
    entries["labels.csv"] = csv.getvalue().encode()
    info = import_dataset(make_zip(entries), "csv", tmp_path / "ds")
    assert len(info.metadata_keys) == 16
    assert set(info.metadata_keys) | set(info.metadata_dropped) == set(columns)
