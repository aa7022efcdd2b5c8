"""Phantom datasets written as archives in every import format.

``write_phantom_archive`` is what ``robustdx data phantom`` calls; its output imports
with :func:`models.datasets.import_dataset` in the same format. Layouts (inside the zip):

- ``imagefolder`` (single-label kinds only): ``<label>/<kind>_<i>.png``; masks, when
  asked, at ``masks/<label>/<kind>_<i>.png``.
- ``csv``: ``images/<kind>_<i>.png`` and ``labels.csv``. Chest uses the ChestX-ray14
  convention (``Image Index`` naming the bare file, ``Finding Labels`` joined by ``|`` or
  ``No Finding``); the other kinds ``file,label`` with the path in the archive. Masks in
  ``masks/``, named by a ``mask`` column. Per-image metadata follow as the columns
  ``sex``, ``age_band``, ``manufacturer`` and (chest) ``view``
  (:mod:`models.phantoms.metadata`).
- ``medmnist-npz``: one ``<kind>_phantom.npz`` in the MedMNIST layout (``train_images``,
  ``train_labels``, ``val_*``, ``test_*``; a 70/10/20 split; grey images ``[N, H, W]``,
  colour ``[N, H, W, 3]``; labels ``[N, 1]`` class indices or ``[N, K]`` 0/1), plus
  ``label_names`` and, when asked, ``<split>_masks``.
- ``dicom``: ``dicom/<kind>_<i>.dcm`` and ``labels.csv`` as for ``csv``. Chest images are
  12-bit DX files with a full-range window (every fourth one MONOCHROME1), derm and fundus
  8-bit RGB photographs; all decode to the phantom's exact 8-bit pixels. The metadata
  are the tags ``PatientSex``, ``PatientAge``, ``Manufacturer``, ``BodyPartExamined`` and
  (chest) ``ViewPosition``; ``labels.csv`` holds only files and labels.

Masks are 8-bit PNGs, 255 on the lesion.
"""

from __future__ import annotations

import csv
import hashlib
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from models.errors import InvalidParametersError
from models.imaging import encode_png
from models.phantoms import PhantomSet, generate
from models.phantoms.metadata import PhantomPatient, phantom_metadata

ArchiveFormat = Literal["imagefolder", "csv", "medmnist-npz", "dicom"]
FORMATS: tuple[str, ...] = ("imagefolder", "csv", "medmnist-npz", "dicom")

NO_FINDING = "No Finding"

_SOP_CLASSES = {
    "chest": ("1.2.840.10008.5.1.4.1.1.1.1", "DX"),  # Digital X-Ray, for presentation
    "derm": ("1.2.840.10008.5.1.4.1.1.77.1.4", "XC"),  # VL Photographic
    "fundus": ("1.2.840.10008.5.1.4.1.1.77.1.5.1", "OP"),  # Ophthalmic Photography 8 bit
}


@dataclass(frozen=True)
class ArchiveSummary:
    path: Path
    kind: str
    format: str
    count: int
    size: int
    seed: int
    label_names: tuple[str, ...]
    label_counts: dict[str, int]
    sha256: str


def write_phantom_archive(
    kind: str,
    n: int,
    size: int,
    fmt: str,
    out_path: Path,
    seed: int = 0,
    *,
    masks: bool = False,
) -> ArchiveSummary:
    """Generate ``n`` phantoms of ``kind`` and write them as a zip in import format ``fmt``.

    Raises:
        InvalidParametersError: unknown kind or format, or ``imagefolder`` for a
            multi-label kind (one folder per class cannot hold several findings).
    """
    if fmt not in FORMATS:
        raise InvalidParametersError(
            f"unknown dataset format {fmt!r}; valid: {', '.join(FORMATS)}",
            {"valid": list(FORMATS)},
        )
    phantoms = generate(kind, n, size, seed)
    if fmt == "imagefolder" and phantoms.task == "multi-label":
        raise InvalidParametersError(
            f"format 'imagefolder' holds single-label data; {kind} phantoms are multi-label: "
            "use csv, medmnist-npz or dicom"
        )
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.partial")
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            writer = {
                "imagefolder": _write_imagefolder,
                "csv": _write_csv,
                "medmnist-npz": _write_npz,
                "dicom": _write_dicom,
            }[fmt]
            writer(zf, phantoms, masks)
        tmp.replace(out_path)
    finally:
        tmp.unlink(missing_ok=True)
    digest = hashlib.sha256(out_path.read_bytes()).hexdigest()
    return ArchiveSummary(
        path=out_path,
        kind=kind,
        format=fmt,
        count=len(phantoms),
        size=size,
        seed=seed,
        label_names=phantoms.label_names,
        label_counts=label_counts(phantoms),
        sha256=digest,
    )


def label_counts(phantoms: PhantomSet) -> dict[str, int]:
    """Images per class (single-label) or positives per finding (multi-label)."""
    if phantoms.task == "multi-label":
        sums = phantoms.labels.sum(axis=0)
        return {name: int(s) for name, s in zip(phantoms.label_names, sums, strict=True)}
    counts = np.bincount(phantoms.labels, minlength=len(phantoms.label_names))
    return {name: int(c) for name, c in zip(phantoms.label_names, counts, strict=True)}


def _name(phantoms: PhantomSet, index: int, ext: str) -> str:
    return f"{phantoms.kind}_{index:06d}.{ext}"


def _mask_png(phantoms: PhantomSet, index: int) -> bytes:
    return encode_png((phantoms.masks[index] > 0).astype(np.uint8) * 255)


def _write_imagefolder(zf: zipfile.ZipFile, phantoms: PhantomSet, masks: bool) -> None:
    for i in range(len(phantoms)):
        label = phantoms.label_names[int(phantoms.labels[i])]
        name = _name(phantoms, i, "png")
        zf.writestr(f"{label}/{name}", encode_png(phantoms.images[i]))
        if masks:
            zf.writestr(f"masks/{label}/{name}", _mask_png(phantoms, i))


def _csv_rows(
    phantoms: PhantomSet,
    files: list[str],
    mask_files: list[str] | None,
    metadata: list[PhantomPatient] | None = None,
) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    chest_convention = phantoms.task == "multi-label"
    header = ["Image Index", "Finding Labels"] if chest_convention else ["file", "label"]
    if mask_files is not None:
        header.append("mask")
    columns = list(metadata[0].columns()) if metadata else []
    header.extend(columns)
    writer.writerow(header)
    for i, file in enumerate(files):
        names = phantoms.label_names_of(i)
        value = "|".join(names) if chest_convention else names[0]
        # ChestX-ray14 names bare files (its images sit in images_001/images/ and so on).
        row = [file.rsplit("/", 1)[-1] if chest_convention else file, value or NO_FINDING]
        if mask_files is not None:
            row.append(mask_files[i])
        if metadata:
            row.extend(metadata[i].columns()[c] for c in columns)
        writer.writerow(row)
    return buf.getvalue()


def _write_csv(zf: zipfile.ZipFile, phantoms: PhantomSet, masks: bool) -> None:
    files, mask_files = [], []
    for i in range(len(phantoms)):
        name = _name(phantoms, i, "png")
        zf.writestr(f"images/{name}", encode_png(phantoms.images[i]))
        files.append(f"images/{name}")
        if masks:
            zf.writestr(f"masks/{name}", _mask_png(phantoms, i))
            mask_files.append(f"masks/{name}")
    metadata = phantom_metadata(phantoms)
    zf.writestr("labels.csv", _csv_rows(phantoms, files, mask_files if masks else None, metadata))


def splits(n: int) -> dict[str, slice]:
    """The MedMNIST-style 70/10/20 split of ``n`` images (in order)."""
    n_train = round(n * 0.7)
    n_val = round(n * 0.1)
    return {
        "train": slice(0, n_train),
        "val": slice(n_train, n_train + n_val),
        "test": slice(n_train + n_val, n),
    }


def _write_npz(zf: zipfile.ZipFile, phantoms: PhantomSet, masks: bool) -> None:
    arrays: dict[str, np.ndarray] = {"label_names": np.array(phantoms.label_names)}
    images = phantoms.images[..., 0] if phantoms.channels == 1 else phantoms.images
    labels = phantoms.labels.reshape(len(phantoms), -1).astype(np.uint8)
    for split, part in splits(len(phantoms)).items():
        arrays[f"{split}_images"] = images[part]
        arrays[f"{split}_labels"] = labels[part]
        if masks:
            arrays[f"{split}_masks"] = phantoms.masks[part]
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)  # type: ignore[arg-type]
    zf.writestr(f"{phantoms.kind}_phantom.npz", buf.getvalue())


def _write_dicom(zf: zipfile.ZipFile, phantoms: PhantomSet, masks: bool) -> None:
    files, mask_files = [], []
    metadata = phantom_metadata(phantoms)
    for i in range(len(phantoms)):
        name = _name(phantoms, i, "dcm")
        zf.writestr(f"dicom/{name}", phantom_dicom(phantoms, i, metadata[i]))
        files.append(f"dicom/{name}")
        if masks:
            png = _name(phantoms, i, "png")
            zf.writestr(f"masks/{png}", _mask_png(phantoms, i))
            mask_files.append(f"masks/{png}")
    zf.writestr("labels.csv", _csv_rows(phantoms, files, mask_files if masks else None))


def phantom_dicom(phantoms: PhantomSet, index: int, patient: PhantomPatient | None = None) -> bytes:
    """One phantom as a DICOM file that decodes to its exact 8-bit pixels, with the
    patient and acquisition tags of ``patient`` (default: its :func:`phantom_metadata`)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import UID, generate_uid

    from models.imaging import write_dicom_like

    sop_class, modality = _SOP_CLASSES[phantoms.kind]
    prefix = f"{phantoms.kind}-{phantoms.seed}-{phantoms.size}-{index}"
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.SOPClassUID = UID(sop_class)
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.StudyInstanceUID = generate_uid(entropy_srcs=[prefix, "study"])
    ds.PatientName = f"Phantom^{phantoms.kind.capitalize()}"
    ds.PatientID = f"PH{phantoms.seed:04d}{index:06d}"
    ds.Modality = modality
    patient = patient or phantom_metadata(phantoms)[index]
    ds.PatientSex = patient.sex
    ds.PatientAge = f"{patient.age_years:03d}Y"
    ds.Manufacturer = patient.manufacturer
    ds.BodyPartExamined = patient.body_part
    if patient.view is not None:
        ds.ViewPosition = patient.view
    ds.SeriesDescription = f"RobustDx {phantoms.kind} phantom (seed {phantoms.seed})"
    pixels = phantoms.images[index]
    if phantoms.channels == 1:
        ds.PhotometricInterpretation = "MONOCHROME1" if index % 4 == 3 else "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.PixelRepresentation = 16, 12, 0
        return write_dicom_like(ds, pixels[..., 0], display_range=(0.0, 4095.0))
    ds.PhotometricInterpretation = "RGB"
    ds.SamplesPerPixel, ds.BitsAllocated, ds.BitsStored = 3, 8, 8
    return write_dicom_like(ds, pixels)
