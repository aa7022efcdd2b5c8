"""Results as DICOM: the TID 1500 SR (content, references, algorithm), predict with
``format=dicom-sr``, and the audit summary as an Encapsulated PDF."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import highdicom as hd
import pydicom
import pytest

from app.core.dicom.findings import Algorithm, Finding, judge
from app.core.dicom.pdf import encapsulated_pdf, render_pdf, summary_lines
from app.core.dicom.sr import diagnosis_sr, finding_concept, read_findings
from app.core.dicom.store import encode
from models.card import ModelCard
from tests.app.models_fixtures import Api, png_bytes
from tests.dicom.support import PHI_VALUES, make_dicom
from tests.models.model_files import card_dict, tiny_net, write_torchscript

ALGO = Algorithm(name="chest-tiny", version="m123", sha256="ab" * 32, model_id="m123")
FINDINGS = [Finding("effusion", 0.71, True, 0.6), Finding("nodule", 0.2, False, 0.5)]


def _items(ds: pydicom.Dataset) -> list[pydicom.Dataset]:
    out = []
    for item in getattr(ds, "ContentSequence", []):
        out.append(item)
        out += _items(item)
    return out


def _text(ds: pydicom.Dataset, code: str) -> list[str]:
    return [str(i.TextValue) for i in _items(ds)
            if i.ValueType == "TEXT" and i.ConceptNameCodeSequence[0].CodeValue == code]


def test_sr_carries_each_finding_and_references_the_source() -> None:
    source = pydicom.dcmread(io.BytesIO(make_dicom()))
    sr = diagnosis_sr(source, FINDINGS, ALGO)
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.33"
    assert sr.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    assert sr.StudyInstanceUID == source.StudyInstanceUID
    assert sr.SeriesInstanceUID != source.SeriesInstanceUID
    assert read_findings(sr) == {"effusion": (0.71, True), "nodule": (0.2, False)}
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0]
    ref = evidence.ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert ref.ReferencedSOPInstanceUID == source.SOPInstanceUID
    images = [i for i in _items(sr) if i.ValueType == "IMAGE"]
    assert [i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID for i in images] == [
        source.SOPInstanceUID]


def test_sr_names_the_algorithm() -> None:
    sr = diagnosis_sr(pydicom.dcmread(io.BytesIO(make_dicom())), FINDINGS, ALGO)
    assert set(_text(sr, "111001")) == {"chest-tiny"}  # Algorithm Name
    assert set(_text(sr, "111003")) == {"m123"}  # Algorithm Version
    params = _text(sr, "111002")
    assert f"sha256={'ab' * 32}" in params
    assert "threshold=0.6" in params
    devices = [i for i in _items(sr) if i.ConceptNameCodeSequence[0].CodeValue == "121013"]
    assert devices
    assert devices[0].TextValue == "RobustDx"


def test_sr_reads_back_with_highdicom_and_is_deterministic() -> None:
    source = pydicom.dcmread(io.BytesIO(make_dicom()))
    first, second = diagnosis_sr(source, FINDINGS, ALGO), diagnosis_sr(source, FINDINGS, ALGO)
    assert first.SOPInstanceUID == second.SOPInstanceUID
    parsed: Any = hd.sr.srread(io.BytesIO(encode(first)))
    [group] = parsed.content.get_image_measurement_groups()
    names = {m.name.meaning: m.value for m in group.get_measurements()}
    assert names == {"effusion": pytest.approx(0.71), "nodule": pytest.approx(0.2)}
    assert group.source_images[0].referenced_sop_instance_uid == source.SOPInstanceUID


def test_the_judgement_follows_the_card() -> None:
    card = ModelCard.model_validate(card_dict(("a", "b"), task="multi-label",
                                              thresholds={"a": 0.8}))
    assert [f.positive for f in judge(card, [0.79, 0.5])] == [False, True]
    assert [f.threshold for f in judge(card, [0.79, 0.5])] == [0.8, 0.5]
    single = ModelCard.model_validate(card_dict(("x", "y", "z")))
    assert [f.positive for f in judge(single, [0.2, 0.5, 0.3])] == [False, True, False]


def test_long_labels_fit_a_code_value() -> None:
    concept = finding_concept("Pleural effusion, left-sided and loculated")
    assert len(concept.value) <= 16
    assert concept.meaning.startswith("Pleural effusion")
    assert concept.value != finding_concept("Pleural effusion, right-sided").value


@pytest.fixture
def chest_model(hospital: Api, tmp_path: Path) -> dict[str, Any]:
    net = tiny_net(channels=1, outputs=3)
    card = card_dict(("effusion", "nodule", "cardiomegaly"), task="multi-label", channels=1,
                     thresholds={"effusion": 0.4})
    return hospital.register(write_torchscript(net, tmp_path / "m.pt", channels=1), card)


def test_predict_answers_an_sr(hospital: Api, chest_model: dict[str, Any]) -> None:
    image = make_dicom(seed=5)
    plain = hospital.predict(chest_model["id"], ("a.dcm", image))
    response = hospital.predict(chest_model["id"], ("a.dcm", image), format="dicom-sr")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/dicom"
    sr = pydicom.dcmread(io.BytesIO(response.content))
    expected = {p["label"]: (pytest.approx(p["probability"], abs=1e-6), p["positive"])
                for p in plain.json()["predictions"]}
    assert read_findings(sr) == expected
    assert set(_text(sr, "111003")) == {chest_model["id"]}
    assert f"sha256={chest_model['sha256']}" in _text(sr, "111002")
    assert sr.StudyInstanceUID == pydicom.dcmread(io.BytesIO(image)).StudyInstanceUID


def test_predict_several_answers_multipart_srs(hospital: Api,
                                               chest_model: dict[str, Any]) -> None:
    from tests.dicom.support import split_multipart

    images = [make_dicom(seed=6), make_dicom(seed=7)]
    response = hospital.predict(chest_model["id"], ("a.dcm", images[0]), ("b.dcm", images[1]),
                                format="dicom-sr")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("multipart/related")
    parts = split_multipart(response.content, response.headers["content-type"])
    srs = [pydicom.dcmread(io.BytesIO(p)) for p in parts]
    sources = [pydicom.dcmread(io.BytesIO(i)) for i in images]
    for sr, source in zip(srs, sources, strict=True):
        evidence = sr.CurrentRequestedProcedureEvidenceSequence[0]
        ref = evidence.ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
        assert ref.ReferencedSOPInstanceUID == source.SOPInstanceUID


def test_predict_sr_needs_dicom(hospital: Api, chest_model: dict[str, Any]) -> None:
    response = hospital.predict(chest_model["id"], ("a.png", png_bytes(mode="L")),
                                format="dicom-sr")
    assert response.status_code == 415
    assert "DICOM" in response.json()["error"]["message"]


REPORT = {
    "job": {"id": "audit123", "kind": "audit"},
    "provenance": {"model": {"name": "chest-tiny", "sha256": "cd" * 32}},
    "summary": {"verdict": "fail", "reliable": True, "n_images": 40, "clean_accuracy": 0.875,
                "worst_attack": "pgd", "headline": [{"attack": "pgd", "eps": 0.01,
                                                     "adversarial_accuracy": 0.1}],
                "messages": ["pgd at eps 0.01: accuracy 0.10 < 0.50"]},
}


def test_audit_summary_pdf_lands_in_the_study() -> None:
    study_instance = pydicom.dcmread(io.BytesIO(make_dicom()))
    lines = summary_lines(REPORT)
    assert "Verdict: fail   reliable: True" in lines
    pdf = render_pdf("RobustDx audit", lines)
    assert pdf.startswith(b"%PDF")
    doc = encapsulated_pdf(pdf, study_instance, "RobustDx audit", key="audit123")
    parsed = pydicom.dcmread(io.BytesIO(encode(doc)))
    assert parsed.SOPClassUID == "1.2.840.10008.5.1.4.1.1.104.1"
    assert parsed.StudyInstanceUID == study_instance.StudyInstanceUID
    assert parsed.EncapsulatedDocument[:len(pdf)] == pdf
    assert parsed.MIMETypeOfEncapsulatedDocument == "application/pdf"
    assert not any(v.encode() in pdf for v in PHI_VALUES)


def test_audit_results_need_a_dataset_from_studies(hospital: Api) -> None:
    response = hospital.client.post("/v1/dicom/audits/nope/results", headers=hospital.auth)
    assert response.status_code == 404
