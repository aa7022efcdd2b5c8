"""RobustDx's diagnosis as a DICOM Structured Report (highdicom).

Template: **TID 1500 Measurement Report** holding one **TID 1501 Measurement and
Qualitative Evaluation Group** per source image. TID 1500 is the template IHE AI Results
(AIR) names for image-level AI findings: it is the one general-purpose template with
both numeric measurements (the probability) and coded qualitative evaluations (present /
absent) per finding, an observer context for a device, and TID 4019 Algorithm
Identification on every group and measurement. The classification-specific alternatives
(TID 2000 Basic Diagnostic Imaging Report, key object selection) carry neither a
probability nor the algorithm. Since a classifier finds nothing spatial, the group has no
ROI (no TID 1410/1411): its source is the image (``Source`` of the group, referencing the
SOP instance), which makes it TID 1501 rather than 1410.

Content, for each card label:

- a NUM measurement named by the finding's coded concept (scheme ``99RDX``, private to
  RobustDx: card labels are free text, with no standard code to map them to), value = the
  probability in [0, 1], unit UCUM ``1`` (no units);
- a CODE qualitative evaluation of the same concept: SCT 52101004 *Present* or 2667000
  *Absent*, judged at the card's threshold;
- Algorithm Identification: the model's name, the version (its registration id), and the
  parameters ``sha256=<model file digest>`` and ``threshold=<t>``.

The document is a Comprehensive SR in the source image's study, with a new series. Its
UIDs are derived from the source instance and the model digest, so predicting the same
instance twice gives the same SR (stored once, re-sent harmlessly).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from app.core.dicom.findings import Algorithm, Finding

SCHEME = "99RDX"
PRESENT = hd.sr.CodedConcept("52101004", "SCT", "Present")
ABSENT = hd.sr.CodedConcept("2667000", "SCT", "Absent")
NO_UNITS = hd.sr.CodedConcept("1", "UCUM", "no units")
IMAGING_PROCEDURE = hd.sr.CodedConcept("363679005", "SCT", "Imaging procedure")
SERIES_NUMBER = 9901
MANUFACTURER = "RobustDx"


def derived_uid(*parts: str) -> str:
    digest = hashlib.sha256("|".join(parts).encode()).digest()
    return "2.25." + str(int.from_bytes(digest[:16], "big"))


def finding_concept(label: str) -> hd.sr.CodedConcept:
    """The coded concept of a card label (code value <= 16 characters, as SH allows)."""
    slug = re.sub(r"[^A-Z0-9]+", "-", label.upper()).strip("-") or "FINDING"
    if len(slug) > 16:
        slug = slug[:11] + "-" + hashlib.sha256(label.encode()).hexdigest()[:4].upper()
    return hd.sr.CodedConcept(slug, SCHEME, label[:64])


def _algorithm(algo: Algorithm, threshold: float | None = None) -> hd.sr.AlgorithmIdentification:
    params = [f"sha256={algo.sha256}"]
    if threshold is not None:
        params.append(f"threshold={threshold:g}")
    return hd.sr.AlgorithmIdentification(
        name=algo.name[:64], version=algo.version[:64], parameters=params,
        manufacturer=MANUFACTURER)


def _group(source: Dataset, findings: Sequence[Finding], algo: Algorithm,
           tracking_uid: str) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    measurements = [
        hd.sr.Measurement(
            name=finding_concept(f.label), value=round(f.probability, 6), unit=NO_UNITS,
            algorithm_id=_algorithm(algo, f.threshold))
        for f in findings
    ]
    evaluations = [
        hd.sr.QualitativeEvaluation(finding_concept(f.label), PRESENT if f.positive else ABSENT)
        for f in findings
    ]
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=tracking_uid,
                                                     identifier="RobustDx diagnosis"),
        algorithm_id=_algorithm(algo),
        measurements=measurements,
        qualitative_evaluations=evaluations,
        source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(source)],
    )


#: Type 2 attributes of the patient and study modules the SR copies; many modality
#: files (and phantoms) leave some out, and an SR must carry them, empty if unknown.
_TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate",
          "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName")


def _with_type2(source: Dataset) -> Dataset:
    missing = [k for k in _TYPE2 if k not in source]
    if not missing:
        return source
    copy = Dataset(source)  # shallow: the caller's header is left as it was
    if hasattr(source, "file_meta"):
        copy.file_meta = source.file_meta
    for keyword in missing:
        setattr(copy, keyword, "")
    return copy


def diagnosis_sr(source: Dataset, findings: Sequence[Finding], algo: Algorithm) -> Dataset:
    """A TID 1500 Comprehensive SR of one image's diagnosis (see module doc).

    ``source`` needs its patient, study and SOP common attributes (no pixel data).
    """
    source = _with_type2(source)
    key = (str(source.SOPInstanceUID), algo.sha256, algo.model_id)
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=derived_uid("device", algo.model_id), name="RobustDx",
            manufacturer_name=MANUFACTURER, model_name=algo.name[:64]),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=IMAGING_PROCEDURE,
        imaging_measurements=[_group(source, findings, algo, derived_uid("track", *key))],
    )
    sr = hd.sr.ComprehensiveSR(
        evidence=[source],
        content=report,
        series_instance_uid=derived_uid("series", str(source.StudyInstanceUID), algo.model_id),
        series_number=SERIES_NUMBER,
        sop_instance_uid=derived_uid("sr", *key),
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=True,
        series_description=f"RobustDx AI result: {algo.name}"[:64],
    )
    return sr


def read_findings(sr: Dataset) -> dict[str, tuple[float, bool]]:
    """``label -> (probability, positive)`` read back from an SR written here (tests and
    round trips)."""
    out: dict[str, tuple[float, bool]] = {}
    present: dict[str, bool] = {}
    for group in sr.ContentSequence:
        if group.ConceptNameCodeSequence[0].CodeValue != "126010":  # Imaging Measurements
            continue
        for container in group.ContentSequence:
            for item in getattr(container, "ContentSequence", []):
                concept = item.ConceptNameCodeSequence[0]
                if concept.CodingSchemeDesignator != SCHEME:
                    continue
                if item.ValueType == "NUM":
                    value = float(item.MeasuredValueSequence[0].NumericValue)
                    out[str(concept.CodeMeaning)] = (value, False)
                elif item.ValueType == "CODE":
                    code = item.ConceptCodeSequence[0].CodeValue
                    present[str(concept.CodeMeaning)] = code == PRESENT.value
    return {label: (p, present.get(label, False)) for label, (p, _) in out.items()}
