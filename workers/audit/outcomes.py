"""Per-image outcomes kept with each audit, and the baseline comparison of a policy.

``per_image.npz`` (see :mod:`app.core.comparison`) records, per image, whether the model was
right clean and under each attack setting and whether the attack changed its answer. A
policy that names a ``baseline`` audit is decided on these, image by image, with a paired
bootstrap; its ``max_regression`` rules become policy results (one JUnit case each) and the
report gets a ``comparison`` section with the whole table.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from app.core import comparison
from models.card import ModelCard
from workers.analyses.alignment import attack_field, attack_rows, clean_rows
from workers.analyses.metrics import correct, predictions

BASELINE_KEYS = ("baseline", "max_regression")


def write_outcomes(job_dir: Path, arrays: Mapping[str, np.ndarray], card: ModelCard,
                   keys: list[str]) -> None:
    """``per_image.npz`` for the images that every setting attacked."""
    if "clean_probs" not in arrays:
        return
    arrays = dict(arrays)
    thresholds = card.threshold_vector() if card.task == "multi-label" else None
    positions, rows = clean_rows(arrays, "clean_probs")
    labels = arrays["labels"][rows]
    clean_pred = predictions(arrays["clean_probs"][rows], card.task, thresholds)
    keep = set(positions.tolist())
    by_key = {}
    for key in keys:
        if attack_field("adv_probs", key) not in arrays:
            continue
        adv_pos, _, adv = attack_rows(arrays, key, "adv_probs")
        by_key[key] = dict(zip(adv_pos.tolist(), adv.tolist(), strict=True))
        keep &= set(adv_pos.tolist())
    order = [i for i, p in enumerate(positions.tolist()) if p in keep]
    kept = positions[order]
    outcome_correct = {comparison.CLEAN: correct(clean_pred[order], labels[order], card.task)}
    flipped = {}
    for key, rows_of in by_key.items():
        adv_rows = np.asarray([rows_of[p] for p in kept.tolist()], dtype=np.int64)
        adv_pred = predictions(arrays[attack_field("adv_probs", key)][adv_rows], card.task,
                               thresholds)
        outcome_correct[key] = correct(adv_pred, labels[order], card.task)
        same = adv_pred == clean_pred[order]
        flipped[key] = ~(same.all(axis=1) if same.ndim == 2 else same)
    comparison.save_outcomes(job_dir / comparison.PER_IMAGE_FILE, kept, outcome_correct, flipped)


def split_policy(policy: Mapping[str, Any] | None) -> tuple[dict[str, Any] | None,
                                                             dict[str, Any] | None]:
    """``(engine policy, baseline part)``: the engine's rules and ``baseline`` /
    ``max_regression``, which are decided here."""
    if not policy:
        return (dict(policy) if policy is not None else None), None
    rest = {k: v for k, v in policy.items() if k not in BASELINE_KEYS}
    baseline = {k: v for k, v in policy.items() if k in BASELINE_KEYS}
    return rest, (baseline or None)


def apply_baseline(report: dict[str, Any], job_dir: Path, baseline_dir: Path,
                   baseline: Mapping[str, Any], seed: int) -> None:
    """Decide ``max_regression`` against the baseline and add the comparison section."""
    rules = comparison.check_rules(baseline["max_regression"]) \
        if baseline.get("max_regression") else None
    rows = comparison.compare(
        comparison.load_outcomes(job_dir / comparison.PER_IMAGE_FILE),
        comparison.load_outcomes(baseline_dir / comparison.PER_IMAGE_FILE), rules, seed=seed)
    results = comparison.policy_results(rows, str(baseline["baseline"]))
    report["sections"]["comparison"] = {
        "applicable": True, "figures": [], "baseline": str(baseline["baseline"]),
        "decision": "a max_regression rule passes only when the upper end of the 95% paired "
                    "bootstrap interval of the regression is within its margin",
        "rows": [row.to_json() for row in rows],
    }
    policy = report["policy"]
    policy["rules"] = {**(policy.get("rules") or {}), **dict(baseline)}
    policy["results"] = [*policy.get("results", []), *results]
    policy["passed"] = all(r["passed"] for r in policy["results"])
    summary = report["summary"]
    summary["verdict"] = "pass" if policy["passed"] else "fail"
    summary["messages"] = [*summary.get("messages", []),
                           *(r["message"] for r in results if not r["passed"])]
