"""FHIR R4 bundles, parsed with the fhir.resources R4B models (not only by shape)."""

from __future__ import annotations

from typing import Any

from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.device import Device
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from fhir.resources.R4B.observation import Observation

from app.core import fhir

MODEL = {"id": "m1", "name": "chest-densenet", "sha256": "ab" * 32, "version": "2026-11-30"}
PREDICTIONS = [
    {"label": "cardiomegaly", "probability": 0.81, "positive": True},
    {"label": "effusion", "probability": 0.04, "positive": False},
]


def _resources(bundle: dict[str, Any]) -> dict[str, list[Any]]:
    parsed = Bundle.model_validate(bundle)
    assert parsed.type == "collection"
    found: dict[str, list[Any]] = {}
    for entry in parsed.entry:
        found.setdefault(entry.resource.get_resource_type(), []).append(entry)
    return found


def test_a_diagnosis_is_a_report_with_one_observation_per_finding() -> None:
    bundle = fhir.prediction_bundle(MODEL, [(PREDICTIONS, "1.2.840.113619.2.55.3")],
                                    {"cardiomegaly": 0.3, "effusion": 0.2})
    found = _resources(bundle)
    [device_entry] = found["Device"]
    device: Device = device_entry.resource
    assert device.deviceName[0].name == "chest-densenet"
    assert device.deviceName[0].type == "model-name"
    assert {i.system: i.value for i in device.identifier} == {
        "urn:robustdx:model": "m1", "urn:robustdx:sha256": "ab" * 32}
    assert device.version[0].value == "2026-11-30"

    observations = {e.fullUrl: e.resource for e in found["Observation"]}
    by_label: dict[str, Observation] = {o.code.text: o for o in observations.values()}
    assert sorted(by_label) == ["cardiomegaly", "effusion"]
    cardio, effusion = by_label["cardiomegaly"], by_label["effusion"]
    assert float(cardio.valueQuantity.value) == 0.81
    assert cardio.valueQuantity.code == "1"
    assert cardio.interpretation[0].coding[0].code == "POS"
    assert effusion.interpretation[0].coding[0].code == "NEG"
    assert float(cardio.referenceRange[0].high.value) == 0.3
    assert cardio.device.reference == device_entry.fullUrl

    [report_entry] = found["DiagnosticReport"]
    report: DiagnosticReport = report_entry.resource
    assert sorted(r.reference for r in report.result) == sorted(observations)
    assert report.imagingStudy[0].identifier.value == "urn:oid:1.2.840.113619.2.55.3"
    assert report.conclusion == "positive: cardiomegaly"


def test_single_label_diagnoses_have_no_threshold_and_png_no_study() -> None:
    bundle = fhir.prediction_bundle(MODEL, [(PREDICTIONS, None), (PREDICTIONS[::-1], None)], None)
    found = _resources(bundle)
    assert all(e.resource.referenceRange is None for e in found["Observation"])
    assert len(found["Device"]) == 1
    reports = [e.resource for e in found["DiagnosticReport"]]
    assert len(reports) == 2
    assert all(r.imagingStudy is None and len(r.result) == 2 for r in reports)


def test_an_audit_summary_carries_the_reports_numbers() -> None:
    report = {
        "summary": {"verdict": "fail", "reliable": False, "clean_accuracy": 0.9,
                    "clean_mean_auroc": 0.95},
        "attacks": {
            "pgd:eps=4/255": {"adversarial": {"accuracy": 0.25, "mean_auroc": 0.5},
                              "fooling_rate": 0.7},
        },
    }
    found = _resources(fhir.audit_bundle("a1", MODEL, report))
    values = {o.resource.code.coding[0].code: float(o.resource.valueQuantity.value)
              for o in found["Observation"]}
    assert values == {
        "clean_accuracy": 0.9, "clean_mean_auroc": 0.95, "accuracy[pgd:eps=4/255]": 0.25,
        "mean_auroc[pgd:eps=4/255]": 0.5, "fooling_rate[pgd:eps=4/255]": 0.7,
    }
    conclusion = found["DiagnosticReport"][0].resource.conclusion
    assert conclusion == ("robustness audit a1: verdict fail; the evaluation may be "
                          "unreliable (see the sanity checks)")
