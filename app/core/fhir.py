"""FHIR R4 results: a diagnosis or an audit summary as a ``Bundle`` a hospital's EHR or test
harness can store.

Each answer is a ``Bundle`` of type ``collection`` holding

- a ``Device`` for the model that made it (model name as ``deviceName`` of type
  ``model-name``, the registry id and the file's SHA-256 as identifiers, the version);
- one ``Observation`` per finding (diagnosis: probability as ``valueQuantity`` in UCUM unit
  ``1``, ``interpretation`` POS/NEG from HL7 v3 ObservationInterpretation at the card's
  threshold, the threshold stated as the reference range) or per audit metric;
- a ``DiagnosticReport`` whose ``result`` lists the observations, with ``imagingStudy``
  pointing at the DICOM study (by Study Instance UID) when the input was DICOM.

Resources refer to each other by ``urn:uuid:`` full URLs inside the bundle, as FHIR's
bundle rules allow for resources that have no server id yet. The findings have no standard
code (they are the model's own labels), so they are coded in a RobustDx code system whose
URI names the model, with the label as display text. The tests parse every bundle with the
``fhir.resources`` R4B models.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from app.core.db import ModelRow

FINDING_SYSTEM = "urn:robustdx:finding"
METRIC_SYSTEM = "urn:robustdx:audit-metric"
INTERPRETATION_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
UCUM = "http://unitsofmeasure.org"
DICOM_UID_SYSTEM = "urn:dicom:uid"


def _urn() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _entry(full_url: str, resource: dict[str, Any]) -> dict[str, Any]:
    return {"fullUrl": full_url, "resource": resource}


def model_fields(row: ModelRow) -> dict[str, Any]:
    """What a ``Device`` says of a registered model: id, name, sha256 and a version (the
    card's, else the registration date)."""
    version = (row.card or {}).get("version") or row.created_at.date().isoformat()
    return {"id": row.id, "name": row.name, "sha256": row.sha256, "version": version}


def device(model: Mapping[str, Any]) -> dict[str, Any]:
    """``model``: ``id``, ``name``, ``sha256`` and optionally ``version``."""
    resource: dict[str, Any] = {
        "resourceType": "Device",
        "status": "active",
        "identifier": [
            {"system": "urn:robustdx:model", "value": str(model["id"])},
            {"system": "urn:robustdx:sha256", "value": str(model["sha256"])},
        ],
        "deviceName": [{"name": str(model["name"]), "type": "model-name"}],
        "type": {"text": "AI diagnostic model (RobustDx registry)"},
    }
    if model.get("version"):
        resource["version"] = [{"value": str(model["version"])}]
    return resource


def _quantity(value: float) -> dict[str, Any]:
    return {"value": round(float(value), 6), "unit": "1", "system": UCUM, "code": "1"}


def finding_observation(prediction: Mapping[str, Any], threshold: float | None,
                        device_url: str, model_id: str, issued: str) -> dict[str, Any]:
    positive = bool(prediction["positive"])
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "status": "final",
        "code": {
            "coding": [{"system": f"{FINDING_SYSTEM}:{model_id}", "code": prediction["label"],
                        "display": prediction["label"]}],
            "text": prediction["label"],
        },
        "issued": issued,
        "valueQuantity": _quantity(prediction["probability"]),
        "interpretation": [{"coding": [{
            "system": INTERPRETATION_SYSTEM,
            "code": "POS" if positive else "NEG",
            "display": "Positive" if positive else "Negative",
        }]}],
        "device": {"reference": device_url},
    }
    if threshold is not None:
        resource["referenceRange"] = [{
            "high": _quantity(threshold),
            "text": f"positive when the probability is at least {threshold:g}",
        }]
    return resource


def _report(code: str, observations: Sequence[str], issued: str,
            study_uid: str | None, conclusion: str | None) -> dict[str, Any]:
    report: dict[str, Any] = {
        "resourceType": "DiagnosticReport",
        "status": "final",
        "code": {"text": code},
        "issued": issued,
        "result": [{"reference": url} for url in observations],
    }
    if study_uid:
        report["imagingStudy"] = [{
            "type": "ImagingStudy",
            "identifier": {"system": DICOM_UID_SYSTEM, "value": f"urn:oid:{study_uid}"},
        }]
    if conclusion:
        report["conclusion"] = conclusion
    return report


def prediction_bundle(model: Mapping[str, Any],
                      images: Sequence[tuple[Sequence[Mapping[str, Any]], str | None]],
                      thresholds: Mapping[str, float] | None) -> dict[str, Any]:
    """Diagnoses: one ``DiagnosticReport`` per image, with its findings as observations and
    one ``Device`` for the model. ``images`` holds each image's predictions as the predict
    route answers them (``label``, ``probability``, ``positive``) and its DICOM Study
    Instance UID (``None`` for PNG/JPEG); ``thresholds`` per finding for multi-label cards
    (``None`` for single-label, where the top label is positive)."""
    issued = _now()
    device_url = _urn()
    entries = [_entry(device_url, device(model))]
    for predictions, study_uid in images:
        urls = []
        for prediction in predictions:
            url = _urn()
            threshold = thresholds.get(prediction["label"]) if thresholds is not None else None
            entries.append(_entry(url, finding_observation(prediction, threshold, device_url,
                                                           str(model["id"]), issued)))
            urls.append(url)
        positives = [p["label"] for p in predictions if p["positive"]]
        conclusion = ("positive: " + ", ".join(positives)) if positives else "no positive finding"
        entries.append(_entry(_urn(), _report(f"AI diagnosis by {model['name']}", urls, issued,
                                              study_uid, conclusion)))
    return {"resourceType": "Bundle", "type": "collection", "timestamp": issued,
            "entry": entries}


def _metric_observation(name: str, value: float, device_url: str, issued: str,
                        note: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": METRIC_SYSTEM, "code": name, "display": note}],
                 "text": note},
        "issued": issued,
        "valueQuantity": _quantity(value),
        "device": {"reference": device_url},
    }


def audit_bundle(audit_id: str, model: Mapping[str, Any], report: Mapping[str, Any],
                 study_uid: str | None = None) -> dict[str, Any]:
    """An audit's summary: clean accuracy and, per attack setting, adversarial accuracy and
    fooling rate as observations; the verdict as the report's conclusion."""
    issued = _now()
    device_url = _urn()
    entries = [_entry(device_url, device(model))]
    urls: list[str] = []

    def add(name: str, value: Any, note: str) -> None:
        if isinstance(value, int | float) and not isinstance(value, bool):
            url = _urn()
            entries.append(_entry(url, _metric_observation(name, value, device_url, issued, note)))
            urls.append(url)

    summary = report.get("summary") or {}
    add("clean_accuracy", summary.get("clean_accuracy"), "clean accuracy")
    add("clean_mean_auroc", summary.get("clean_mean_auroc"), "clean mean AUROC")
    for key, attack in sorted((report.get("attacks") or {}).items()):
        adversarial = attack.get("adversarial") or {}
        add(f"accuracy[{key}]", _value(adversarial.get("accuracy")), f"accuracy under {key}")
        add(f"mean_auroc[{key}]", _value(adversarial.get("mean_auroc")),
            f"mean AUROC under {key}")
        add(f"fooling_rate[{key}]", _value(attack.get("fooling_rate")), f"fooling rate under {key}")
    verdict = summary.get("verdict", "no policy")
    conclusion = f"robustness audit {audit_id}: verdict {verdict}"
    if summary.get("reliable") is False:
        conclusion += "; the evaluation may be unreliable (see the sanity checks)"
    entries.append(_entry(_urn(), _report(f"Robustness audit of {model['name']}", urls, issued,
                                          study_uid, conclusion)))
    return {"resourceType": "Bundle", "type": "collection", "timestamp": issued,
            "entry": entries}


def _value(metric: Any) -> Any:
    """A report metric is a number or ``{"value": number, "ci": [...]}``."""
    if isinstance(metric, Mapping):
        return metric.get("value")
    return metric
