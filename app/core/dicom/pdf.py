"""An audit's report summary as an Encapsulated PDF (PS3.3 A.45.1) in an audited study.

The PDF is one page drawn with matplotlib (no new dependency): the verdict, the image
count, clean accuracy, the worst attack, the headline rows and the policy messages of the
report's ``summary``, and the model's name and sha256. The DICOM object takes its patient
and study attributes from one instance of the audited study (already de-identified when
the tenant's store is), so a viewer files it beside the images it describes. No value
from the images' headers is written into the PDF itself.
"""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Sequence
from typing import Any

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, ExplicitVRLittleEndian

from app.core.dicom.sop import ENCAPSULATED_PDF
from app.core.dicom.sr import MANUFACTURER, derived_uid

PDF_SERIES_NUMBER = 9902
_PATIENT_STUDY = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "PatientIdentityRemoved",
    "DeidentificationMethod", "StudyInstanceUID", "StudyDate", "StudyTime", "StudyID",
    "AccessionNumber", "ReferringPhysicianName",
)


def summary_lines(report: dict[str, Any]) -> list[str]:
    """The report summary as text lines (numbers rounded; nothing from image headers)."""
    summary = report.get("summary", {})
    model = report.get("provenance", {}).get("model", {})
    lines = [
        f"Audit {report.get('job', {}).get('id', '')}",
        f"Model: {model.get('name', '')}  sha256 {str(model.get('sha256', ''))[:16]}...",
        f"Verdict: {summary.get('verdict')}   reliable: {summary.get('reliable')}",
        f"Images: {summary.get('n_images')}   "
        f"clean accuracy: {_num(summary.get('clean_accuracy'))}",
        f"Worst attack: {summary.get('worst_attack')}",
        "",
    ]
    for row in summary.get("headline", [])[:20]:
        if isinstance(row, dict):
            lines.append("  " + ", ".join(f"{k}={_num(v)}" for k, v in list(row.items())[:6]))
    lines += [""] + [f"- {m}" for m in summary.get("messages", [])[:20]]
    return [line[:110] for line in lines]


def _num(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def render_pdf(title: str, lines: Sequence[str]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.backends.backend_pdf import PdfPages
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8.27, 11.69))  # A4 portrait, inches
    fig.text(0.06, 0.95, title, fontsize=15, weight="bold", va="top")
    fig.text(0.06, 0.91, "\n".join(lines), fontsize=9, va="top", family="monospace")
    buf = io.BytesIO()
    with PdfPages(buf, metadata={"Creator": MANUFACTURER, "Title": title}) as pages:
        pages.savefig(fig)
    return buf.getvalue()


def encapsulated_pdf(pdf: bytes, study_instance: Dataset, title: str, key: str) -> Dataset:
    """An Encapsulated PDF instance in ``study_instance``'s study; ``key`` makes its UIDs
    (the same audit and study give the same instance)."""
    study = str(study_instance.StudyInstanceUID)
    ds = Dataset()
    for keyword in _PATIENT_STUDY:
        if keyword in study_instance:
            ds[keyword] = study_instance[keyword]
    now = dt.datetime.now(dt.UTC)
    ds.SOPClassUID = ENCAPSULATED_PDF
    ds.SOPInstanceUID = derived_uid("pdf", key, study)
    ds.SeriesInstanceUID = derived_uid("pdf-series", key, study)
    ds.Modality = "DOC"
    ds.SeriesNumber = PDF_SERIES_NUMBER
    ds.InstanceNumber = 1
    ds.SeriesDescription = "RobustDx robustness audit"
    ds.Manufacturer = MANUFACTURER
    ds.ContentDate, ds.ContentTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds.AcquisitionDateTime = now.strftime("%Y%m%d%H%M%S")
    ds.ConversionType = "WSD"
    ds.BurnedInAnnotation = "NO"
    ds.DocumentTitle = title[:64]
    ds.ConceptNameCodeSequence = []
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocument = pdf + (b"\x00" if len(pdf) % 2 else b"")
    ds.EncapsulatedDocumentLength = len(pdf)
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex",
                    "StudyDate", "StudyTime", "StudyID", "AccessionNumber",
                    "ReferringPhysicianName"):
        ds.setdefault(keyword, "")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(ENCAPSULATED_PDF)
    meta.MediaStorageSOPInstanceUID = UID(str(ds.SOPInstanceUID))
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta
    return ds
