"""Assembling the JSON report from the sections of an audit.

:func:`build_report` is the one place a report is made: the worker that finalizes an audit
and :func:`workers.audit.run_audit` both call it, and everything else (HTML, JUnit XML, the
CLI's gate) reads the dict it returns.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from importlib import metadata
from typing import Any

from workers.analyses.attack_keys import attack_infos
from workers.analyses.base import Section
from workers.analyses.jsonable import jsonable
from workers.reports.evidence import NAME as EVIDENCE
from workers.reports.evidence import evidence_map
from workers.reports.policy import evaluate_policy, parse_policy, verdict
from workers.reports.schema import SCHEMA_VERSION, validate_report

logger = logging.getLogger(__name__)

REQUIRED_PACKAGES = ("torch", "torchvision", "numpy", "robustdx")


def package_versions(names: Iterable[str] = REQUIRED_PACKAGES) -> dict[str, str]:
    """Installed versions (``"not installed"`` for a package that is absent)."""
    versions: dict[str, str] = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def _provenance(provenance: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(jsonable(provenance))
    if "seeds" not in out and "seed" in out:
        out["seeds"] = {"audit": out.pop("seed")}
    packages = dict(out.get("packages") or {})
    for name, version in package_versions(
        [n for n in REQUIRED_PACKAGES if n not in packages]
    ).items():
        packages[name] = version
    out["packages"] = packages
    return out


def _attacks(attacks_meta: Mapping[str, Mapping[str, Any]],
             quantitative: Mapping[str, Any] | None) -> dict[str, Any]:
    measured: Mapping[str, Any] = (quantitative or {}).get("attacks") or {}
    keys = [*attacks_meta, *(k for k in measured if k not in attacks_meta)]
    infos = attack_infos(keys, {k: dict(v) for k, v in attacks_meta.items()})
    out: dict[str, Any] = {}
    for key in keys:
        info = infos[key]
        block = measured.get(key) or {}
        out[key] = {
            "name": info.name,
            "params": jsonable(info.params),
            "eps": info.eps,
            "clean": block.get("clean"),
            "adversarial": block.get("adversarial"),
            "fooling_rate": block.get("fooling_rate"),
            "attack_success_rate": block.get("attack_success_rate"),
            "accuracy_drop": block.get("accuracy_drop"),
            "perturbation": block.get("perturbation") or block.get("perturbation_measured"),
        }
    return out


def attacks_meta_json(attacks: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``{key: {"name", "eps", "params"}}`` of the report's attack entries."""
    return {k: {"name": v["name"], "eps": v["eps"], "params": v["params"]}
            for k, v in attacks.items()}


def _headline(attacks: Mapping[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for key, entry in attacks.items():
        clean = entry.get("clean") or {}
        adv = entry.get("adversarial") or {}
        rows.append({
            "attack": key,
            "name": entry["name"],
            "eps": entry["eps"],
            "clean_accuracy": clean.get("accuracy"),
            "adversarial_accuracy": adv.get("accuracy"),
            "adversarial_accuracy_ci": adv.get("accuracy_ci"),
            "fooling_rate": entry.get("fooling_rate"),
            "attack_success_rate": entry.get("attack_success_rate"),
            "clean_mean_auroc": clean.get("mean_auroc"),
            "adversarial_mean_auroc": adv.get("mean_auroc"),
            "adversarial_mean_loss": adv.get("mean_loss"),
        })
    return rows


STRONGEST_ORDER = (
    "lowest adversarial accuracy, then lowest adversarial mean AUROC, then highest mean "
    "loss; remaining ties in the audit's order"
)


def strongest_attack(headline: Sequence[Mapping[str, Any]]) -> str | None:
    """The strongest attack setting by :data:`STRONGEST_ORDER` (``None`` if none measured)."""
    inf = float("inf")

    def rank(item: tuple[int, Mapping[str, Any]]) -> tuple[float, float, float, int]:
        i, h = item
        auroc = h.get("adversarial_mean_auroc")
        loss = h.get("adversarial_mean_loss")
        return (float(h["adversarial_accuracy"]), inf if auroc is None else float(auroc),
                inf if loss is None else -float(loss), i)

    measured = [(i, h) for i, h in enumerate(headline) if h["adversarial_accuracy"] is not None]
    return str(min(measured, key=rank)[1]["attack"]) if measured else None


def _worst_case_summary(worst_case: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """One row per budget: the robust accuracy under the union of its attacks."""
    if not worst_case or not worst_case.get("applicable"):
        return []
    return [
        {"budget": budget, "attacks": b["attacks"], "n_images": b["n_images"],
         "robust_accuracy": b["robust_accuracy"], "robust_accuracy_ci": b["robust_accuracy_ci"],
         "mean_auroc": b.get("mean_auroc"),
         "strongest_single_attack": b["strongest_single_attack"],
         "strongest_single_accuracy": b["strongest_single_accuracy"]}
        for budget, b in (worst_case.get("budgets") or {}).items()
    ]


def _artifacts(sections: Sequence[Section], extra: Iterable[str]) -> list[str]:
    names: list[str] = []
    for name in [*extra, *(f"{f.name}.png" for s in sections for f in s.figures)]:
        if name not in names:
            names.append(name)
    return names


def _summary(section_json: Mapping[str, Any], attacks: Mapping[str, Any]) -> dict[str, Any]:
    """The summary before the policy is judged (verdict and messages are filled later)."""
    quantitative = section_json.get("quantitative") or {}
    clean = quantitative.get("clean") or {}
    sanity = section_json.get("sanity")
    reliable = bool(sanity.get("reliable")) if sanity and sanity.get("applicable") else None
    headline = _headline(attacks)
    return {
        "verdict": "no policy",
        "reliable": reliable,
        "n_images": quantitative.get("n_images"),
        "clean_accuracy": clean.get("accuracy"),
        "clean_mean_auroc": clean.get("mean_auroc"),
        "accuracy_definition": quantitative.get("accuracy_definition"),
        "worst_attack": strongest_attack(headline),
        "worst_attack_order": STRONGEST_ORDER,
        "headline": headline,
        "worst_case": _worst_case_summary(section_json.get("worst_case")),
        "messages": [],
    }


def build_report(
    job_meta: Mapping[str, Any],
    provenance: Mapping[str, Any],
    sections: Sequence[Section],
    attacks_meta: Mapping[str, Mapping[str, Any]],
    policy: Mapping[str, Any] | None,
    *,
    artifacts: Iterable[str] = (),
) -> dict[str, Any]:
    """The JSON report of an audit, valid under :data:`~workers.reports.schema.REPORT_SCHEMA`.

    Args:
        job_meta: at least ``{"id", "kind"}`` (status, times, model and dataset ids...).
        provenance: ``model`` (with ``sha256``, ``None`` when in memory), ``dataset`` (with
            ``sha256``), ``parameters`` (every parameter of the request), ``seeds``
            (``{name: int}``; a lone ``seed`` is accepted), ``device`` (a name or an
            object), ``timings`` (``{stage: seconds}``) and optionally ``packages``
            (torch, torchvision, numpy and robustdx versions are filled in when absent).
        sections: every analysis's section, applicable or not, in report order.
        attacks_meta: ``{attack key: {"name", "eps", "params"}}`` for every setting.
        policy: the request's policy (see :mod:`workers.reports.policy`), or ``None``.
        artifacts: names of the artifact files besides the figures (``{figure}.png`` are
            added for every figure of every section).

    Raises:
        InvalidParametersError: an invalid policy.
        ReportValidationError: the inputs do not make a valid report (missing provenance).
    """
    parsed_policy = parse_policy(policy)
    section_json = {s.name: jsonable(s.to_json()) for s in sections}
    quantitative = section_json.get("quantitative")
    attacks = _attacks(attacks_meta, quantitative if quantitative and
                       quantitative.get("applicable") else None)
    summary = _summary(section_json, attacks)
    section_json[EVIDENCE] = evidence_map(section_json, attacks_meta_json(attacks))
    sanity = section_json.get("sanity")
    reliable = summary["reliable"]
    report: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "job": dict(jsonable(job_meta)),
        "provenance": _provenance(provenance),
        "summary": summary,
        "attacks": jsonable(attacks),
        "sections": section_json,
        "policy": {"rules": None, "results": [], "passed": None},
        "artifacts": _artifacts(sections, artifacts),
    }
    results = evaluate_policy(report, parsed_policy)
    summary["verdict"] = verdict(results, parsed_policy)
    report["policy"] = {
        "rules": parsed_policy.raw if parsed_policy else None,
        "results": [jsonable(r.to_json()) for r in results],
        "passed": None if parsed_policy is None else all(r.passed for r in results),
    }
    messages: list[str] = [r.message for r in results if not r.passed]
    if reliable is False and sanity is not None:
        messages.extend(sanity.get("flags") or [])
    subgroups = section_json.get("subgroups") or {}
    messages.extend(subgroups.get("flags") or [])
    summary["messages"] = messages
    if reliable is False:
        summary["verdict_detail"] = (
            f"{summary['verdict']}; the robustness numbers may be unreliable: a sanity check "
            "flagged the evaluation (gradient masking or a randomized model can make attacks "
            "fail), so robustness may be overstated"
        )
    report = jsonable(report)
    validate_report(report)
    return report
