"""Turning summarized sections into the report files: JSON (the source of truth), HTML,
JUnit XML, figures and the image grid."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from app.core.storage import write_atomic
from workers.analyses.base import Section
from workers.audit.engine import GRID_PREFIX


def grid_samples(arrays: dict[str, np.ndarray], labels: tuple[str, ...], task: str,
                 limit: int = 8) -> list[dict[str, Any]]:
    """Sample dicts for the HTML image grid: clean / adversarial / amplified perturbation."""
    from workers.reports.images import perturbation_heatmap, to_png

    if f"{GRID_PREFIX}clean" not in arrays:
        return []
    clean = arrays[f"{GRID_PREFIX}clean"]
    order = np.argsort(arrays[f"{GRID_PREFIX}index"])[:limit]
    clean_probs = arrays[f"{GRID_PREFIX}clean_probs"]
    truth = arrays[f"{GRID_PREFIX}labels"]
    samples: list[dict[str, Any]] = []
    adv_prefix = f"{GRID_PREFIX}adv/"
    keys = sorted(k[len(adv_prefix):] for k in arrays if k.startswith(adv_prefix))
    for key in keys:
        adv = arrays[f"{GRID_PREFIX}adv/{key}"]
        adv_probs = arrays[f"{GRID_PREFIX}adv_probs/{key}"]
        for i in order:
            c = clean[i].astype(np.float32) / 255.0
            a = adv[i].astype(np.float32) / 255.0
            samples.append({
                "attack": key,
                "index": int(arrays[f"{GRID_PREFIX}index"][i]),
                "clean_png": to_png(c),
                "adv_png": to_png(a),
                "perturbation_png": perturbation_heatmap(c, a),
                "true_label": _describe_truth(truth[i], labels, task),
                "clean_pred": _describe_pred(clean_probs[i], labels, task),
                "adv_pred": _describe_pred(adv_probs[i], labels, task),
            })
    return samples


def _describe_truth(value: np.ndarray, labels: tuple[str, ...], task: str) -> str:
    if task == "multi-label":
        found = [labels[j] for j, v in enumerate(np.atleast_1d(value)) if v >= 0.5]
        return ", ".join(found) or "none"
    return labels[int(value)]


def _describe_pred(probs: np.ndarray, labels: tuple[str, ...], task: str) -> str:
    if task == "multi-label":
        top = np.argsort(-probs)[:2]
        return ", ".join(f"{labels[j]} {probs[j]:.2f}" for j in top)
    j = int(np.argmax(probs))
    return f"{labels[j]} {probs[j]:.2f}"


def write_report_files(
    out_dir: Path, artifacts_dir: Path, report: dict[str, Any], sections: list[Section],
    samples: list[dict[str, Any]],
) -> dict[str, Path]:
    """Write report.json/html/xml and every figure as an artifact."""
    from workers.reports.html import render_html
    from workers.reports.junit import render_junit

    for section in sections:
        for fig in section.figures:
            write_atomic(artifacts_dir / f"{fig.name}.png", fig.png)
    paths = {
        "json": out_dir / "report.json",
        "html": out_dir / "report.html",
        "xml": out_dir / "report.xml",
    }
    write_atomic(paths["json"], json.dumps(report, indent=2, allow_nan=False).encode())
    write_atomic(paths["html"], render_html(report, sections, samples).encode())
    write_atomic(paths["xml"], render_junit(report).encode())
    return paths
