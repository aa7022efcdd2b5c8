"""PS3.15 Annex E Basic Profile on ingest: what is removed, emptied, replaced and kept."""

from __future__ import annotations

import io

import pydicom

from app.core.dicom.deid import METHOD, Pseudonymizer, burned_in_flag, deidentify
from tests.dicom.support import CT, PHI, PHI_VALUES, make_dicom

SECRET = "ab" * 32


def _ds(data: bytes) -> pydicom.Dataset:
    return pydicom.dcmread(io.BytesIO(data))


def test_patient_data_is_gone_at_every_depth() -> None:
    ds = _ds(make_dicom())
    deidentify(ds, Pseudonymizer(SECRET))
    text = repr(ds) + repr(ds.file_meta)
    for value in PHI_VALUES:
        assert value not in text
    assert str(ds.PatientName) == ""
    assert ds.StudyDate == ""
    assert "InstitutionName" not in ds
    assert "OperatorIdentificationSequence" not in ds  # X in the profile
    assert not any(elem.tag.is_private for elem in ds.iterall())


def test_marks_the_method_and_keeps_what_the_model_needs() -> None:
    original = _ds(make_dicom(seed=3))
    ds = _ds(make_dicom(seed=3))
    deidentify(ds, Pseudonymizer(SECRET))
    assert ds.PatientIdentityRemoved == "YES"
    assert ds.DeidentificationMethod == METHOD
    assert [c.CodeValue for c in ds.DeidentificationMethodCodeSequence] == ["113100"]
    assert ds.Modality == "CT"
    assert ds.SOPClassUID == CT
    assert (ds.pixel_array == original.pixel_array).all()


def test_uids_map_consistently_within_a_study_and_across_calls() -> None:
    pseudo = Pseudonymizer(SECRET)
    study, series = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
    a, b = _ds(make_dicom(study=study, series=series)), _ds(make_dicom(study=study,
                                                                       series=series))
    original_sop = str(a.SOPInstanceUID)
    deidentify(a, pseudo)
    deidentify(b, Pseudonymizer(SECRET))  # a second process with the same secret
    assert a.StudyInstanceUID == b.StudyInstanceUID == pseudo.uid(study)
    assert a.SeriesInstanceUID == b.SeriesInstanceUID != series
    assert a.SOPInstanceUID != b.SOPInstanceUID
    assert a.SOPInstanceUID == pseudo.uid(original_sop)
    assert a.file_meta.MediaStorageSOPInstanceUID == a.SOPInstanceUID
    # A reference inside a sequence follows the instance it points to.
    assert a.SourceImageSequence[0].ReferencedSOPInstanceUID == a.SOPInstanceUID
    assert str(a.StudyInstanceUID).startswith("2.25.")
    assert len(a.StudyInstanceUID) <= 64


def test_another_tenant_gets_other_pseudonyms() -> None:
    one, two = Pseudonymizer(SECRET), Pseudonymizer("cd" * 32)
    assert one.uid("1.2.3") != two.uid("1.2.3")
    assert one.patient_id(PHI["PatientID"]) != two.patient_id(PHI["PatientID"])
    assert one.patient_id(PHI["PatientID"]) == one.patient_id(PHI["PatientID"])


def test_patient_id_becomes_a_stable_pseudonym() -> None:
    ds = _ds(make_dicom())
    deidentify(ds, Pseudonymizer(SECRET))
    assert ds.PatientID == Pseudonymizer(SECRET).patient_id(PHI["PatientID"])
    assert ds.PatientID.startswith("RDX-")


def test_keep_dates_option_keeps_dates_only() -> None:
    ds = _ds(make_dicom(study_date="20230405"))
    deidentify(ds, Pseudonymizer(SECRET), keep_dates=True)
    assert ds.StudyDate == "20230405"
    assert str(ds.PatientName) == ""
    assert [c.CodeValue for c in ds.DeidentificationMethodCodeSequence] == ["113100",
                                                                            "113106"]


def test_burned_in_annotation_is_reported() -> None:
    assert burned_in_flag(_ds(make_dicom(burned_in="YES"))) == "YES"
    assert burned_in_flag(_ds(make_dicom(burned_in="NO"))) == "NO"
    assert burned_in_flag(_ds(make_dicom())) == "UNKNOWN"
