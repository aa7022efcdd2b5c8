"""Phantom metadata: deterministic, plausible, and carried by the CSV and DICOM exports."""

from __future__ import annotations

import csv
import io
import zipfile
from collections import Counter
from pathlib import Path

import pydicom

from models.datasets import import_dataset, load_dataset
from models.phantoms import generate
from models.phantoms.export import write_phantom_archive
from models.phantoms.metadata import MANUFACTURERS, phantom_metadata


def test_metadata_is_deterministic_from_the_seed() -> None:
    a = phantom_metadata(generate("chest", 50, 32, seed=4))
    b = phantom_metadata(generate("chest", 50, 32, seed=4))
    c = phantom_metadata(generate("chest", 50, 32, seed=5))
    assert a == b
    assert a != c


def test_metadata_is_plausible() -> None:
    chest = phantom_metadata(generate("chest", 2000, 32, seed=0))
    sexes = Counter(p.sex for p in chest)
    assert set(sexes) == {"F", "M"}
    assert 0.45 < sexes["F"] / 2000 < 0.55
    views = Counter(p.view for p in chest)
    assert set(views) == {"PA", "AP"}
    assert 0.65 < views["PA"] / 2000 < 0.75
    bands = Counter(p.age_band for p in chest)
    assert set(bands) == {"0-17", "18-39", "40-59", "60-79", "80+"}
    assert bands["40-59"] > bands["80+"] > 0
    assert all(1 <= p.age_years <= 95 for p in chest)
    vendors = Counter(p.manufacturer for p in chest).most_common()
    assert [v for v, _ in vendors] == list(MANUFACTURERS["chest"])  # 55 / 35 / 10 %
    derm = phantom_metadata(generate("derm", 20, 32, seed=0))
    assert all(p.view is None and p.body_part == "SKIN" for p in derm)
    assert "view" not in derm[0].columns()


def test_csv_export_and_import_carry_the_metadata(tmp_path: Path) -> None:
    ps = generate("chest", 24, 32, seed=3)
    expected = [p.columns() for p in phantom_metadata(ps)]
    summary = write_phantom_archive("chest", 24, 32, "csv", tmp_path / "c.zip", seed=3)
    with zipfile.ZipFile(summary.path) as zf:
        rows = list(csv.DictReader(io.StringIO(zf.read("labels.csv").decode())))
    assert [{k: r[k] for k in ("sex", "age_band", "manufacturer", "view")} for r in rows] == [
        {k: e[k] for k in ("sex", "age_band", "manufacturer", "view")} for e in expected
    ]
    info = import_dataset(summary.path, "csv", tmp_path / "ds")
    assert info.metadata_keys == ("age_band", "manufacturer", "sex", "view")
    assert load_dataset(tmp_path / "ds").metadata() == expected


def test_dicom_export_carries_the_tags_and_import_reads_them(tmp_path: Path) -> None:
    ps = generate("chest", 12, 32, seed=1)
    patients = phantom_metadata(ps)
    summary = write_phantom_archive("chest", 12, 32, "dicom", tmp_path / "d.zip", seed=1)
    with zipfile.ZipFile(summary.path) as zf:
        ds = pydicom.dcmread(io.BytesIO(zf.read("dicom/chest_000000.dcm")))
    assert ds.PatientSex == patients[0].sex
    assert ds.PatientAge == f"{patients[0].age_years:03d}Y"
    assert ds.ViewPosition == patients[0].view
    assert ds.Manufacturer == patients[0].manufacturer
    assert ds.BodyPartExamined == "CHEST"
    import_dataset(summary.path, "dicom", tmp_path / "ds")
    got = load_dataset(tmp_path / "ds").metadata()
    assert got == [{**p.columns(), "body_part": "CHEST"} for p in patients]
    assert all("PatientName" not in m and "PatientID" not in m for m in got)
