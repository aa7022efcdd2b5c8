"""The numbers of the ``perturbations`` section, from the arrays ``collect`` stored."""

from __future__ import annotations

from typing import Any

import numpy as np

from workers.analyses.perturbation_params import PerturbationsParams
from workers.analyses.stats import nanmean
from workers.perturbations import (
    Family,
    Perturbation,
    get_perturbation,
    list_perturbations,
    pairs_compared,
)
from workers.perturbations.metrics import (
    changed_share,
    classification_metrics,
    relative_drop,
)

#: A relative drop of the headline metric at severity 1 or 2 above this is flagged.
FRAGILE_DROP = 0.10
#: A flip probability above this is flagged.
UNSTABLE_FLIP = 0.05


def perturbation_entry(
    name: str, arrays: dict[str, np.ndarray], rows: np.ndarray, severities: list[int],
    clean: dict[str, Any], clean_probs: np.ndarray, labels: np.ndarray, task: str,
    thresholds: list[float] | None, metric: str,
) -> dict[str, Any]:
    """One perturbation's metrics at each severity it was run at."""
    p = get_perturbation(name)
    entry: dict[str, Any] = {"family": p.family.value, "description": p.description,
                             "units": p.units, "severities": []}
    for s in severities:
        probs = arrays[f"probs.{name}.{s}"][rows]
        values = classification_metrics(probs, labels, task, thresholds)
        entry["severities"].append({
            "severity": s,
            "amount": p.amount(s),
            **values,
            "relative_drop": relative_drop(clean[metric], values[metric]),
            "changed": changed_share(clean_probs, probs, task, thresholds),
        })
    return entry



def corruption_keys(arrays: dict[str, np.ndarray]) -> dict[str, list[int]]:
    """Perturbation -> severities found in ``probs.<name>.<severity>`` keys (registry order)."""
    found: dict[str, list[int]] = {}
    for key in arrays:
        if key.startswith("probs."):
            _, name, severity = key.split(".")
            found.setdefault(name, []).append(int(severity))
    return {n: sorted(found[n]) for n in list_perturbations() if n in found}


def sequence_stats(
    arrays: dict[str, np.ndarray],
    rows: np.ndarray,
    p: Perturbation,
    params: PerturbationsParams,
    label_names: tuple[str, ...],
    task: str,
) -> dict[str, Any]:
    flips = arrays[f"flips.{p.name}"][rows].astype(np.float64)
    pairs = arrays[f"pairs.{p.name}"][rows].astype(np.float64)
    total = float(pairs.sum())
    stats: dict[str, Any] = {
        "rule": p.sequence_rule.value,
        "frames": params.frames,
        "difficulty": params.difficulty,
        "pairs_per_image": pairs_compared(p.sequence_rule, params.frames, params.difficulty),
    }
    if p.sweep is None:
        stats["noise_severity"] = params.difficulty
    else:
        stats["sweep"] = list(p.sweep)
    if task == "multi-label":
        per_finding = flips.sum(axis=0) / total
        stats["flip_probability_per_finding"] = dict(
            zip(label_names, per_finding.tolist(), strict=False)
        )
        stats["flip_probability"] = float(per_finding.mean())
        any_key = f"any_flips.{p.name}"
        if any_key in arrays:
            stats["any_finding_flip_probability"] = float(arrays[any_key][rows].sum() / total)
    else:
        stats["flip_probability"] = float(flips.sum() / total)
    topk_key = f"topk.{p.name}"
    if topk_key in arrays:
        stats["top_k_distance"] = float(arrays[topk_key][rows].sum() / total)
    return stats


def family_means(table: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for family in Family:
        members = [e for e in table.values() if e["family"] == family.value]
        if not members:
            continue
        out[family.value] = {
            "mean_relative_drop": nanmean([e.get("mean_relative_drop") for e in members]),
            "mean_flip_probability": nanmean([e["flip_probability"] for e in members]),
        }
    return out


def flags(table: dict[str, dict[str, Any]], metric: str) -> list[str]:
    flags = []
    for name, entry in table.items():
        for row in entry["severities"]:
            drop = row["relative_drop"]
            if (
                row["severity"] <= 2
                and drop is not None
                and np.isfinite(drop)
                and (drop > FRAGILE_DROP)
            ):
                flags.append(
                    f"{name}: {metric} drops {100 * drop:.0f}% at severity {row['severity']}"
                )
                break
        fp = entry["flip_probability"]
        if fp is not None and np.isfinite(fp) and fp > UNSTABLE_FLIP:
            flags.append(f"{name}: flip probability {fp:.3f}")
    return flags


def example_frames(arrays: dict[str, np.ndarray]) -> tuple[int, np.ndarray] | None:
    if "example.frames" not in arrays or arrays["example.frames"].shape[0] == 0:
        return None
    # A batch merged twice contributes the same example twice: keep the first.
    return int(arrays["example.index"][0]), arrays["example.frames"][0]


