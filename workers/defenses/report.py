"""The before/after report of a defense job: the same attacks on the original and the
hardened model, clean vs robust accuracy on a Pareto plot, and the training curves."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from models.wrapper import DiagnosticModel
from workers.analyses.base import Figure, Section

DEFAULT_EVAL_ATTACKS: list[dict[str, Any]] = [
    {"name": "pgd", "params": {"eps": [2 / 255, 4 / 255, 8 / 255], "steps": 10}},
    {"name": "gap", "params": {"eps": 4 / 255}},
    {"name": "autoattack", "params": {"eps": 4 / 255}},
]


def evaluate_pair(
    original: DiagnosticModel, hardened: DiagnosticModel, images: torch.Tensor,
    labels: torch.Tensor, attacks: Sequence[dict[str, Any]], seed: int, batch_size: int,
    should_stop: Callable[[], bool] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Audit both models under the same attacks (GAP is fitted against each model);
    ``should_stop`` is polled inside every attack's loop."""
    from workers.audit.local import run_audit

    analyses = [{"name": "quantitative", "params": {}}]
    before, _ = run_audit(original, images, labels, attacks, analyses=analyses, seed=seed,
                          batch_size=batch_size, should_stop=should_stop)
    after, _ = run_audit(hardened, images, labels, attacks, analyses=analyses, seed=seed,
                         batch_size=batch_size, should_stop=should_stop)
    return before, after


def _accuracies(report: dict[str, Any]) -> dict[str, tuple[float, float]]:
    out: dict[str, tuple[float, float]] = {}
    for key, entry in report.get("attacks", {}).items():
        clean = entry.get("clean", {}).get("accuracy")
        adv = entry.get("adversarial", {}).get("accuracy")
        if clean is not None and adv is not None:
            out[key] = (float(clean), float(adv))
    return out


def comparison_section(before: dict[str, Any], after: dict[str, Any]) -> Section:
    b, a = _accuracies(before), _accuracies(after)
    rows = []
    for key in sorted(set(b) & set(a)):
        rows.append({
            "attack": key,
            "clean_before": b[key][0], "robust_before": b[key][1],
            "clean_after": a[key][0], "robust_after": a[key][1],
            "robust_gain": a[key][1] - b[key][1],
        })
    figures = [_pareto_figure(rows)] if rows else []
    return Section(name="defense_comparison", applicable=True,
                   data={"rows": rows}, figures=figures)


def training_section(history: Sequence[Any]) -> Section:
    records = [h if isinstance(h, dict) else dict(vars(h)) for h in history]
    figures = [_training_figure(records)] if records else []
    return Section(name="training", applicable=True, data={"epochs": records}, figures=figures)


def _pareto_figure(rows: list[dict[str, Any]]) -> Figure:
    from workers.analyses.plotting import new_figure, render_png

    fig, ax = new_figure(6.0, 4.5)
    for row in rows:
        ax.annotate("", xy=(row["clean_after"], row["robust_after"]),
                    xytext=(row["clean_before"], row["robust_before"]),
                    arrowprops={"arrowstyle": "->", "color": "0.5"})
        ax.scatter([row["clean_before"]], [row["robust_before"]], color="tab:red")
        ax.scatter([row["clean_after"]], [row["robust_after"]], color="tab:green")
        ax.text(row["clean_after"], row["robust_after"], f" {row['attack']}", fontsize=7)
    ax.set_xlabel("clean accuracy")
    ax.set_ylabel("robust accuracy")
    ax.set_title("Original (red) -> hardened (green)")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    return Figure(name="defense_pareto", title="Clean vs robust accuracy", png=render_png(fig))


def _training_figure(records: list[dict[str, Any]]) -> Figure:
    from workers.analyses.plotting import new_figure, render_png

    fig, ax = new_figure(6.0, 4.0)
    epochs = np.array([r["epoch"] for r in records])
    for key, style in (("loss", "k--"), ("clean_acc", "b-"), ("robust_acc", "r-")):
        ax.plot(epochs, [r[key] for r in records], style, marker="o", label=key)
    ax.set_xlabel("epoch")
    ax.legend()
    ax.grid(alpha=0.3)
    return Figure(name="defense_training", title="Training curves", png=render_png(fig))
