"""Paired comparison of two audits of the same images: is the candidate at least as robust
as the baseline?

Each finished audit keeps ``per_image.npz`` beside its report: for every image (by dataset
position, ``indices``) whether the model was right on the clean image (``correct[clean]``)
and under each attack setting (``correct[<key>]``), and whether the attack changed its
answer (``flipped[<key>]``). Two audits of the same dataset with the same attack settings
can then be compared image by image.

For a metric and a setting the *regression* is how much worse the candidate is: for
accuracy ``baseline - candidate``, for the fooling rate ``candidate - baseline``. It is a mean
of per-image differences, so its 95% interval comes from a paired bootstrap: the same
resampled images for both models (2000 resamples, seeded).

Decision (non-inferiority, as a release gate should be: never kinder than the data): a
``max_regression`` rule with margin ``m`` **passes only when the upper end of the 95%
interval of the regression is at most m**, i.e. the data rule out a regression larger than
the margin. A point estimate within the margin whose interval reaches past it fails, and
the report says so.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.errors import InvalidParametersError

PER_IMAGE_FILE = "per_image.npz"
METRICS = ("accuracy", "fooling_rate")
CLEAN = "clean"
BOOTSTRAP = 2000
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Outcomes:
    """Per-image outcomes of one audit, rows in dataset order."""

    indices: np.ndarray
    correct: dict[str, np.ndarray]
    flipped: dict[str, np.ndarray]

    @property
    def keys(self) -> list[str]:
        return sorted(k for k in self.correct if k != CLEAN)


def save_outcomes(path: Path, indices: np.ndarray, correct: Mapping[str, np.ndarray],
                  flipped: Mapping[str, np.ndarray]) -> None:
    arrays = {"indices": np.asarray(indices, dtype=np.int64)}
    arrays |= {f"correct[{k}]": np.asarray(v, dtype=bool) for k, v in correct.items()}
    arrays |= {f"flipped[{k}]": np.asarray(v, dtype=bool) for k, v in flipped.items()}
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)  # type: ignore[arg-type]
    tmp.replace(path)


def load_outcomes(path: Path) -> Outcomes:
    with np.load(path) as data:
        arrays = {name: data[name] for name in data.files}
    correct = {n[len("correct["):-1]: v for n, v in arrays.items() if n.startswith("correct[")}
    flipped = {n[len("flipped["):-1]: v for n, v in arrays.items() if n.startswith("flipped[")}
    return Outcomes(arrays["indices"], correct, flipped)


@dataclass(frozen=True)
class Row:
    metric: str
    setting: str
    candidate: float
    baseline: float
    regression: float
    ci: tuple[float, float]
    n_images: int
    margin: float | None = None
    passed: bool | None = None

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["ci"] = list(self.ci)
        return out


def _align(candidate: Outcomes, baseline: Outcomes) -> tuple[np.ndarray, np.ndarray]:
    if not np.array_equal(np.sort(candidate.indices), np.sort(baseline.indices)):
        raise InvalidParametersError(
            "the audits did not examine the same images (other data or another max_images)")
    return np.argsort(candidate.indices), np.argsort(baseline.indices)


def _interval(diff: np.ndarray, seed: int) -> tuple[float, float]:
    n = diff.shape[0]
    rng = np.random.default_rng(seed)
    weights = rng.multinomial(n, np.full(n, 1.0 / n), size=BOOTSTRAP)
    means = weights @ diff / n
    tail = (1.0 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def _per_image(outcomes: Outcomes, metric: str, setting: str) -> np.ndarray | None:
    table = outcomes.correct if metric == "accuracy" else outcomes.flipped
    values = table.get(setting)
    return None if values is None else values.astype(np.float64)


def compare(candidate: Outcomes, baseline: Outcomes,
            rules: Mapping[str, Mapping[str, float]] | None = None, seed: int = 0) -> list[Row]:
    """Every metric on every setting both audits share (``clean`` accuracy included); with
    ``rules`` (``{metric: {setting or "*": margin}}``) each matching row is decided."""
    if candidate.keys != baseline.keys:
        raise InvalidParametersError(
            "the audits ran different attack settings",
            {"candidate": candidate.keys, "baseline": baseline.keys})
    order_c, order_b = _align(candidate, baseline)
    rows = []
    for metric in METRICS:
        for setting in ([CLEAN] if metric == "accuracy" else []) + candidate.keys:
            c, b = _per_image(candidate, metric, setting), _per_image(baseline, metric, setting)
            if c is None or b is None:
                continue
            c, b = c[order_c], b[order_b]
            diff = (b - c) if metric == "accuracy" else (c - b)
            margin = _margin(rules, metric, setting)
            ci = _interval(diff, seed)
            rows.append(Row(metric, setting, float(c.mean()), float(b.mean()),
                            float(diff.mean()), ci, int(diff.shape[0]), margin,
                            None if margin is None else bool(ci[1] <= margin + 1e-12)))
    return rows


def _margin(rules: Mapping[str, Mapping[str, float]] | None, metric: str,
            setting: str) -> float | None:
    if not rules or metric not in rules:
        return None
    by_setting = rules[metric]
    if setting in by_setting:
        return float(by_setting[setting])
    if "*" in by_setting and setting != CLEAN:
        return float(by_setting["*"])
    return None


def check_rules(rules: Any, settings: list[str] | None = None) -> dict[str, dict[str, float]]:
    """Validate ``max_regression``: ``{metric: {setting or "*": margin in [0, 1]}}``."""
    if not isinstance(rules, Mapping) or not rules:
        raise InvalidParametersError(
            'max_regression must be an object like {"accuracy": {"pgd:eps=2/255": 0.02}}')
    out: dict[str, dict[str, float]] = {}
    for metric, by_setting in rules.items():
        if metric not in METRICS:
            raise InvalidParametersError(
                f"max_regression: unknown metric {metric!r}; valid: {', '.join(METRICS)}",
                {"valid": list(METRICS)})
        if not isinstance(by_setting, Mapping) or not by_setting:
            raise InvalidParametersError(
                f"max_regression.{metric} must map attack settings (or '*') to margins")
        out[metric] = {}
        for setting, margin in by_setting.items():
            if isinstance(margin, bool) or not isinstance(margin, int | float) \
                    or not 0 <= margin <= 1:
                raise InvalidParametersError(
                    f"max_regression.{metric}[{setting}]: the margin must be a number in "
                    f"[0, 1], got {margin!r}")
            valid = [CLEAN, *(settings or [])] if metric == "accuracy" else (settings or [])
            if settings is not None and setting != "*" and setting not in valid:
                raise InvalidParametersError(
                    f"max_regression.{metric}: {setting!r} is not a setting of this audit",
                    {"valid": valid})
            out[metric][str(setting)] = float(margin)
    return out


def policy_results(rows: list[Row], baseline_id: str) -> list[dict[str, Any]]:
    """The decided rows as report policy results (one JUnit case each)."""
    results = []
    for row in rows:
        if row.margin is None:
            continue
        verdict = "within" if row.passed else "not shown to be within"
        results.append({
            "rule": f"max_regression.{row.metric}",
            "target": row.setting, "attack": row.setting if row.setting != CLEAN else None,
            "threshold": row.margin, "observed": round(row.regression, 6),
            "passed": bool(row.passed),
            "message": (
                f"{row.metric} under {row.setting}: regression {row.regression:+.3f} vs "
                f"baseline {baseline_id} (95% CI {row.ci[0]:+.3f} to {row.ci[1]:+.3f}, "
                f"{row.n_images} paired images) is {verdict} the margin {row.margin:.3f}"
            ),
        })
    return results
