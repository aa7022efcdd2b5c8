"""The JSON Schema (draft 2020-12) of the audit report, and its validation.

The JSON report is the source of truth of an audit; HTML, JUnit XML and the image
artifacts are renderings of it. Its shape (version :data:`SCHEMA_VERSION`)::

    {
      "schema_version": "1.0",
      "job":        {"id", "kind", ...}                  who and what was audited
      "provenance": {"model": {"sha256", ...}, "dataset": {"sha256", ...},
                     "parameters", "seeds", "packages": {"torch", "torchvision", "numpy",
                     "robustdx", ...}, "device", "timings": {stage: seconds}}
      "summary":    {"verdict": "pass" | "fail" | "no policy", "reliable",
                     "n_images", "clean_accuracy", "headline": [...], "messages": [...]}
      "attacks":    {attack key: {"name", "params", "eps", "clean", "adversarial",
                                  "fooling_rate", ...}}
      "sections":   {analysis name: {"applicable", "reason"?, "figures", "flags"?, ...}}
                    (besides the analyses: "worst_case" and "subgroups", derived from the
                    quantitative arrays, and "evidence_map", the threats tested)
      "policy":     {"rules", "results": [{"rule", "target", "attack", "threshold",
                                           "observed", "passed", "message"}], "passed"}
      "artifacts":  [file names]
    }

Sections are open objects: each analysis owns the shape of its own section. Undefined
numbers (an AUROC without positives) are ``null``; JSON has no NaN.

Publish :data:`REPORT_SCHEMA` (or :func:`schema_json`) for harnesses that validate reports.
"""

from __future__ import annotations

import json
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from models.errors import RobustDxError

SCHEMA_VERSION = "1.0"
SCHEMA_ID = "https://robustdx.dev/schemas/report-1.0.json"


class ReportValidationError(RobustDxError):
    """A report that does not follow :data:`REPORT_SCHEMA` (a bug on our side, not the user's)."""

    code = "invalid_report"


_NUMBER_OR_NULL: dict[str, Any] = {"type": ["number", "null"]}
_RATE: dict[str, Any] = {"$ref": "#/$defs/rate"}

_METRICS: dict[str, Any] = {
    "type": "object",
    "description": "Metrics of one set of predictions (clean, or under one attack).",
    "required": ["n_images", "accuracy"],
    "properties": {
        "n_images": {"type": "integer", "minimum": 0},
        "accuracy": _RATE,
        "accuracy_ci": {"$ref": "#/$defs/interval"},
        "balanced_accuracy": _RATE,
        "auroc": {"$ref": "#/$defs/per_label_rate"},
        "auroc_ci": {
            "type": "object",
            "additionalProperties": {"$ref": "#/$defs/interval"},
        },
        "mean_auroc": _RATE,
        "mean_auroc_ci": {"$ref": "#/$defs/interval"},
        "sensitivity": {"$ref": "#/$defs/per_label_rate"},
        "specificity": {"$ref": "#/$defs/per_label_rate"},
        "mean_confidence_wrong": _RATE,
        "finding_accuracy": _RATE,
    },
    "additionalProperties": True,
}

_RULE_RESULT: dict[str, Any] = {
    "type": "object",
    "required": ["rule", "target", "attack", "threshold", "observed", "passed", "message"],
    "properties": {
        "rule": {"type": "string"},
        "target": {"type": ["string", "null"]},
        "attack": {"type": ["string", "null"]},
        "threshold": {"type": ["number", "boolean"]},
        "observed": {"type": ["number", "boolean", "null"]},
        "passed": {"type": "boolean"},
        "message": {"type": "string"},
        "budget": {"type": ["string", "null"],
                   "description": "The budget a budget rule was judged at (linf:eps=4/255)."},
    },
    "additionalProperties": False,
}

_CI_METHOD: dict[str, Any] = {"enum": ["bootstrap", "wilson", None]}

_BUDGET_BLOCK: dict[str, Any] = {
    "type": "object",
    "description": "Worst case of one budget: an image is robust only if it is right on the "
    "clean image and under every attack setting of the budget.",
    "required": ["norm", "eps", "attacks", "n_images", "clean_accuracy", "robust_accuracy",
                 "robust_accuracy_ci", "robust_accuracy_ci_method", "n_robust",
                 "first_broken_by", "not_broken", "broken_by", "only_broken_by",
                 "strongest_single_attack", "strongest_single_accuracy", "union_gain",
                 "auroc", "mean_auroc", "mean_auroc_ci"],
    "properties": {
        "norm": {"type": "string"},
        "eps": {"type": "number", "minimum": 0},
        "eps_255": {"type": ["number", "null"]},
        "attacks": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        "n_images": {"type": "integer", "minimum": 0},
        "clean_accuracy": _RATE,
        "robust_accuracy": _RATE,
        "robust_accuracy_ci": {"$ref": "#/$defs/interval"},
        "robust_accuracy_ci_method": _CI_METHOD,
        "n_robust": {"type": "integer", "minimum": 0},
        "first_broken_by": {
            "type": "object",
            "description": "Images credited to the first candidate that breaks them: "
            "'clean' (wrong without attack), then the attacks in the audit's order.",
            "additionalProperties": {"type": "integer", "minimum": 0},
        },
        "not_broken": {"type": "integer", "minimum": 0},
        "broken_by": {"type": "object", "additionalProperties": {"type": "integer"}},
        "only_broken_by": {"type": "object", "additionalProperties": {"type": "integer"}},
        "strongest_single_attack": {"type": "string"},
        "strongest_single_accuracy": _RATE,
        "union_gain": {"type": "number"},
        "auroc": {"$ref": "#/$defs/per_label_rate"},
        "mean_auroc": _RATE,
        "mean_auroc_ci": {"$ref": "#/$defs/interval"},
        "per_finding": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "required": ["robust_accuracy", "robust_accuracy_ci", "auroc"],
                "properties": {"robust_accuracy": _RATE,
                               "robust_accuracy_ci": {"$ref": "#/$defs/interval"},
                               "robust_accuracy_ci_method": _CI_METHOD,
                               "auroc": _RATE},
            },
        },
    },
    "additionalProperties": True,
}

_GROUP_MEASURE: dict[str, Any] = {
    "type": "object",
    "required": ["accuracy", "accuracy_ci", "n_correct", "rest_accuracy", "p_value"],
    "properties": {
        "accuracy": _RATE,
        "accuracy_ci": {"$ref": "#/$defs/interval"},
        "accuracy_ci_method": _CI_METHOD,
        "n_correct": {"type": "integer", "minimum": 0},
        "rest_accuracy": _RATE,
        "difference": _NUMBER_OR_NULL,
        "p_value": {"type": "number", "minimum": 0, "maximum": 1},
        "p_adjusted": {"type": "number", "minimum": 0, "maximum": 1},
        "significantly_below": {"type": "boolean"},
        "mean_auroc": _RATE,
    },
}

_SECTION_SCHEMAS: dict[str, Any] = {
    "sanity": {
        "type": "object",
        "if": {"properties": {"applicable": {"const": True}}},
        "then": {
            "required": ["reliable", "checks"],
            "properties": {"reliable": {"type": "boolean"}},
        },
    },
    "worst_case": {
        "type": "object",
        "if": {"properties": {"applicable": {"const": True}}},
        "then": {
            "required": ["rule", "first_broken_order", "budgets", "unbudgeted_attacks"],
            "properties": {
                "budgets": {"type": "object", "minProperties": 1,
                            "additionalProperties": _BUDGET_BLOCK},
                "unbudgeted_attacks": {"type": "array", "items": {"type": "string"}},
            },
        },
    },
    "subgroups": {
        "type": "object",
        "if": {"properties": {"applicable": {"const": True}}},
        "then": {
            "required": ["measures", "test", "alpha", "min_group_size", "attributes",
                         "flagged", "worst_group"],
            "properties": {
                "attributes": {
                    "type": "object",
                    "additionalProperties": {
                        "type": "object",
                        "required": ["n_missing", "groups"],
                        "properties": {
                            "groups": {
                                "type": "object",
                                "additionalProperties": {
                                    "type": "object",
                                    "required": ["n_images", "small", "metrics"],
                                    "properties": {
                                        "n_images": {"type": "integer", "minimum": 1},
                                        "small": {"type": "boolean"},
                                        "metrics": {"type": "object",
                                                    "additionalProperties": _GROUP_MEASURE},
                                    },
                                },
                            },
                        },
                    },
                },
                "flagged": {"type": "array", "items": {
                    "type": "object",
                    "required": ["attribute", "group", "measure", "accuracy", "rest_accuracy",
                                 "p_adjusted"],
                }},
                "worst_group": {"type": "object", "additionalProperties": {"oneOf": [
                    {"type": "null"},
                    {"type": "object", "required": ["attribute", "group", "accuracy",
                                                    "n_images"]},
                ]}},
            },
        },
    },
    "evidence_map": {
        "type": "object",
        "required": ["statement", "references", "threats"],
        "properties": {
            "threats": {"type": "array", "items": {
                "type": "object",
                "required": ["threat", "title", "status", "evidence", "references"],
                "properties": {
                    "status": {"enum": ["tested", "not tested", "out of scope"]},
                    "evidence": {"type": "array", "items": {"type": "string"}},
                    "references": {"type": "array", "items": {"type": "string"}},
                },
            }},
        },
    },
}

REPORT_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": SCHEMA_ID,
    "title": "RobustDx robustness audit report",
    "type": "object",
    "required": [
        "schema_version", "job", "provenance", "summary", "attacks", "sections", "policy",
        "artifacts",
    ],
    "additionalProperties": False,
    "properties": {
        "schema_version": {"const": SCHEMA_VERSION},
        "job": {
            "type": "object",
            "required": ["id", "kind"],
            "properties": {
                "id": {"type": "string", "minLength": 1},
                "kind": {"type": "string", "minLength": 1},
            },
            "additionalProperties": True,
        },
        "provenance": {
            "type": "object",
            "required": ["model", "dataset", "parameters", "seeds", "packages", "device",
                         "timings"],
            "properties": {
                "model": {
                    "type": "object",
                    "required": ["sha256"],
                    "properties": {
                        "sha256": {"$ref": "#/$defs/sha256"},
                        "name": {"type": "string"},
                    },
                    "additionalProperties": True,
                },
                "dataset": {
                    "type": "object",
                    "required": ["sha256"],
                    "properties": {"sha256": {"$ref": "#/$defs/sha256"}},
                    "additionalProperties": True,
                },
                "parameters": {"type": "object"},
                "seeds": {
                    "type": "object",
                    "minProperties": 1,
                    "additionalProperties": {"type": "integer"},
                },
                "packages": {
                    "type": "object",
                    "required": ["torch", "torchvision", "numpy", "robustdx"],
                    "additionalProperties": {"type": "string"},
                },
                "device": {"type": ["string", "object"]},
                "timings": {
                    "type": "object",
                    "description": "Seconds spent per stage.",
                    "additionalProperties": {"type": "number", "minimum": 0},
                },
                "timeline": {
                    "type": "object",
                    "description": "Audits run by the service: when planning, each shard "
                    "and the finalizing ran, in seconds since the job was submitted, and on "
                    "which worker process (host:pid).",
                    "required": ["shards"],
                    "properties": {
                        "plan": {"$ref": "#/$defs/span"},
                        "shards": {
                            "type": "array",
                            "items": {
                                "allOf": [{"$ref": "#/$defs/span"}],
                                "required": ["index"],
                                "properties": {"index": {"type": "integer", "minimum": 0}},
                            },
                        },
                        "finalize": {
                            "type": "object",
                            "required": ["start", "report"],
                            "properties": {"start": {"type": "number"},
                                           "report": {"type": "number"}},
                        },
                    },
                },
            },
            "additionalProperties": True,
        },
        "summary": {
            "type": "object",
            "required": ["verdict", "reliable", "n_images", "clean_accuracy", "headline",
                         "messages"],
            "properties": {
                "verdict": {"enum": ["pass", "fail", "no policy"]},
                "reliable": {
                    "type": ["boolean", "null"],
                    "description": "false when a sanity check flagged the evaluation; null "
                    "when the sanity analysis did not run.",
                },
                "n_images": {"type": ["integer", "null"], "minimum": 0},
                "clean_accuracy": _RATE,
                "clean_mean_auroc": _RATE,
                "worst_attack": {"type": ["string", "null"]},
                "worst_attack_order": {"type": "string"},
                "accuracy_definition": {"type": ["string", "null"]},
                "verdict_detail": {"type": "string"},
                "worst_case": {"type": "array", "items": {
                    "type": "object",
                    "required": ["budget", "robust_accuracy", "robust_accuracy_ci"],
                    "properties": {"budget": {"type": "string"},
                                   "robust_accuracy": _RATE,
                                   "robust_accuracy_ci": {"$ref": "#/$defs/interval"}},
                }},
                "headline": {"type": "array", "items": {"$ref": "#/$defs/headline"}},
                "messages": {"type": "array", "items": {"type": "string"}},
            },
            "additionalProperties": True,
        },
        "attacks": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "required": ["name", "params", "eps", "clean", "adversarial", "fooling_rate"],
                "properties": {
                    "name": {"type": "string", "minLength": 1},
                    "params": {"type": "object"},
                    "eps": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
                    "clean": {"oneOf": [{"$ref": "#/$defs/metrics"}, {"type": "null"}]},
                    "adversarial": {"oneOf": [{"$ref": "#/$defs/metrics"}, {"type": "null"}]},
                    "fooling_rate": _RATE,
                    "attack_success_rate": _RATE,
                },
                "additionalProperties": True,
            },
        },
        "sections": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "required": ["applicable", "figures"],
                "properties": {
                    "applicable": {"type": "boolean"},
                    "reason": {"type": "string"},
                    "figures": {"type": "array", "items": {"type": "string"}},
                    "flags": {"type": "array", "items": {"type": "string"}},
                },
                "additionalProperties": True,
            },
            "properties": _SECTION_SCHEMAS,
        },
        "policy": {
            "type": "object",
            "required": ["rules", "results", "passed"],
            "properties": {
                "rules": {"type": ["object", "null"]},
                "results": {"type": "array", "items": _RULE_RESULT},
                "passed": {"type": ["boolean", "null"]},
            },
            "additionalProperties": False,
        },
        "artifacts": {
            "type": "array",
            "items": {"type": "string", "minLength": 1},
            "uniqueItems": True,
        },
    },
    "$defs": {
        "rate": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
        "span": {
            "type": "object",
            "required": ["start", "end", "worker"],
            "properties": {"start": {"type": "number"}, "end": {"type": "number"},
                           "worker": {"type": "string"}},
        },
        "interval": {
            "oneOf": [
                {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2},
                {"type": "null"},
            ]
        },
        "per_label_rate": {"type": "object", "additionalProperties": _RATE},
        "sha256": {
            "oneOf": [{"type": "string", "pattern": "^[0-9a-f]{64}$"}, {"type": "null"}],
            "description": "Hex digest of the file; null for in-memory models and datasets.",
        },
        "metrics": _METRICS,
        "headline": {
            "type": "object",
            "required": ["attack", "name", "eps", "clean_accuracy", "adversarial_accuracy",
                         "fooling_rate"],
            "properties": {
                "attack": {"type": "string"},
                "name": {"type": "string"},
                "eps": _NUMBER_OR_NULL,
                "clean_accuracy": _RATE,
                "adversarial_accuracy": _RATE,
                "adversarial_accuracy_ci": {"$ref": "#/$defs/interval"},
                "fooling_rate": _RATE,
                "attack_success_rate": _RATE,
                "clean_mean_auroc": _RATE,
                "adversarial_mean_auroc": _RATE,
            },
            "additionalProperties": True,
        },
    },
}

_VALIDATOR = Draft202012Validator(REPORT_SCHEMA)


def report_errors(report: Any) -> list[str]:
    """Every schema violation of ``report``, as ``"path: message"`` (empty when valid)."""
    errors = sorted(_VALIDATOR.iter_errors(report), key=lambda e: list(e.absolute_path))
    out = []
    for err in errors:
        # "not valid under any of the given schemas" says little: show the branch at fault.
        err = best_match([err])
        path = "/".join(str(p) for p in err.absolute_path) or "(root)"
        out.append(f"{path}: {err.message}")
    return out


def validate_report(report: Any) -> None:
    """Raise :class:`ReportValidationError` listing every violation; return when valid."""
    errors = report_errors(report)
    if errors:
        raise ReportValidationError(
            "report does not follow the report schema: " + "; ".join(errors[:10])
            + (f" (and {len(errors) - 10} more)" if len(errors) > 10 else ""),
            details={"errors": errors},
        )


def schema_json() -> str:
    """The schema as a JSON document (for ``GET /v1/schemas/report`` and harnesses)."""
    return json.dumps(REPORT_SCHEMA, indent=2, sort_keys=False)
