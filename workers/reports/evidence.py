"""The evidence map: which threats this audit's settings tested, and which they did not.

Stated in the terms that regulators of medical AI use, with the documents that ask for such
evidence:

- Regulation (EU) 2024/1689 (the EU AI Act), Article 15, "Accuracy, robustness and
  cybersecurity": high-risk systems must be resilient to errors and to attempts to alter
  their outputs by exploiting vulnerabilities, including adversarial examples (evasion),
  data poisoning and model poisoning.
- U.S. FDA, *Artificial Intelligence-Enabled Device Software Functions: Lifecycle
  Management and Marketing Submission Recommendations*, draft guidance, January 2025:
  performance validation across subgroups and under foreseeable input variation, and
  cybersecurity threats specific to AI (data poisoning, model evasion, model inversion
  and extraction).
- AAMI TIR34971:2023, *Application of ISO 14971 to machine learning in artificial
  intelligence*: risk analysis of ML-specific hazards (data quality and bias, robustness
  to input changes, adversarial manipulation).

Each entry says ``tested``, ``not tested`` (in scope of this service, not requested in this
audit) or ``out of scope`` (threats this service does not evaluate). It is a statement of
coverage, never a claim of compliance: the numbers of the other sections are the evidence.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from workers.analyses.attack_keys import (
    BLACK_BOX_ATTACKS,
    UNIVERSAL_ATTACKS,
    WHITE_BOX_ATTACKS,
    attack_infos,
)

NAME = "evidence_map"
STATEMENT = (
    "What this audit's settings tested, in the terms of the documents cited. This is a "
    "statement of coverage, not a claim of compliance with any of them."
)

REFERENCES: list[dict[str, str]] = [
    {"id": "eu-ai-act-art15",
     "title": "Regulation (EU) 2024/1689 (EU AI Act), Article 15: accuracy, robustness and "
              "cybersecurity",
     "scope": "accuracy, robustness, resilience to adversarial examples, data and model "
              "poisoning"},
    {"id": "fda-aidsf-2025",
     "title": "FDA draft guidance, Artificial Intelligence-Enabled Device Software Functions: "
              "Lifecycle Management and Marketing Submission Recommendations (January 2025)",
     "scope": "performance across subgroups and input variation; AI-specific cybersecurity "
              "threats (poisoning, evasion, model inversion and extraction)"},
    {"id": "aami-tir34971",
     "title": "AAMI TIR34971:2023, Application of ISO 14971 to machine learning in artificial "
              "intelligence",
     "scope": "risk management of machine-learning hazards: bias, robustness, adversarial "
              "manipulation"},
]

#: Attack name -> evasion threat it tests.
ATTACK_THREATS: dict[str, str] = {
    **{name: "evasion_white_box" for name in WHITE_BOX_ATTACKS},
    **{name: "evasion_black_box" for name in BLACK_BOX_ATTACKS},
    **{name: "evasion_universal" for name in UNIVERSAL_ATTACKS},
}

_EVASION = ["eu-ai-act-art15", "fda-aidsf-2025", "aami-tir34971"]
#: threat id -> (title, references, what would test it)
THREATS: dict[str, tuple[str, list[str], str]] = {
    "evasion_white_box": (
        "Evasion, white-box (gradient attacks with full access to the model)", _EVASION,
        "attacks " + ", ".join(WHITE_BOX_ATTACKS)),
    "evasion_black_box": (
        "Evasion, black-box (score-based queries only)", _EVASION,
        "attacks " + ", ".join(BLACK_BOX_ATTACKS)),
    "evasion_universal": (
        "Evasion, universal (one perturbation for every image)", _EVASION,
        "attacks " + ", ".join(UNIVERSAL_ATTACKS)),
    "evaluation_reliability": (
        "Reliability of the evaluation (gradient masking, randomized outputs)", _EVASION,
        "analysis sanity"),
    "common_corruptions": (
        "Common corruptions and acquisition variation (noise, blur, contrast, ...)",
        ["eu-ai-act-art15", "fda-aidsf-2025", "aami-tir34971"], "analysis perturbations"),
    "subgroup_shift": (
        "Distribution shift by subgroup (patient group, view, scanner)",
        ["fda-aidsf-2025", "aami-tir34971"], "dataset metadata (the subgroups section)"),
}
OUT_OF_SCOPE: dict[str, tuple[str, list[str]]] = {
    "data_poisoning": ("Data and model poisoning (tampered training data or weights)",
                       ["eu-ai-act-art15", "fda-aidsf-2025", "aami-tir34971"]),
    "model_extraction": ("Model extraction and inversion (stealing or reconstructing the "
                         "model through its answers)", ["fda-aidsf-2025"]),
    "membership_inference": ("Membership inference (telling whether a patient was in the "
                             "training data)", ["fda-aidsf-2025"]),
}


def _section_ran(sections: Mapping[str, Any], name: str) -> bool:
    section = sections.get(name)
    return bool(section and section.get("applicable"))


def _evasion_entries(attacks: Mapping[str, Mapping[str, Any]]) -> dict[str, list[str]]:
    infos = attack_infos(list(attacks), {k: dict(v) for k, v in attacks.items()})
    tested: dict[str, list[str]] = {}
    for key, info in infos.items():
        threat = ATTACK_THREATS.get(info.name)
        if threat is not None:
            tested.setdefault(threat, []).append(key)
    return tested


def evidence_map(sections: Mapping[str, Any],
                 attacks: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The ``evidence_map`` section (JSON) from the report's sections and attack settings."""
    evidence = _evasion_entries(attacks)
    for threat, section in (("evaluation_reliability", "sanity"),
                            ("common_corruptions", "perturbations"),
                            ("subgroup_shift", "subgroups")):
        if _section_ran(sections, section):
            evidence[threat] = [f"section {section}"]
    threats: list[dict[str, Any]] = []
    for threat, (title, refs, how) in THREATS.items():
        found = evidence.get(threat, [])
        threats.append({
            "threat": threat, "title": title,
            "status": "tested" if found else "not tested",
            "evidence": found,
            "how_to_test": how,
            "references": refs,
        })
    for threat, (title, refs) in OUT_OF_SCOPE.items():
        threats.append({"threat": threat, "title": title, "status": "out of scope",
                        "evidence": [], "how_to_test": None, "references": refs})
    return {"applicable": True, "statement": STATEMENT, "references": REFERENCES,
            "threats": threats, "figures": []}
