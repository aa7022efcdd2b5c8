"""Figures of the ``quantitative`` section: the robustness curve, AUROC per finding, and the
minimum fooling eps per image."""

from __future__ import annotations

from typing import Any

import numpy as np

from workers.analyses.base import Figure
from workers.analyses.plotting import PALETTE, new_figure, render_png

MAX_AUROC_SERIES = 4



def robustness_curve_figure(curves: dict[str, list[dict[str, Any]]]) -> Figure | None:
    if not any(len(points) > 1 for points in curves.values()):
        return None
    fig, ax = new_figure(6.4, 4.0)
    for i, (group, points) in enumerate(sorted(curves.items())):
        color = PALETTE[i % len(PALETTE)]
        xs = [p["eps_255"] for p in points]
        ys = [np.nan if p["accuracy"] is None else p["accuracy"] for p in points]
        ax.plot(xs, ys, marker="o", color=color, label=group)
        cis = [p["accuracy_ci"] for p in points]
        if all(ci is not None for ci in cis):
            ax.fill_between(xs, [c[0] for c in cis], [c[1] for c in cis], color=color,
                            alpha=0.15, linewidth=0)
    ax.set_xlabel("eps (grey levels of 255, L-infinity)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return Figure(
        name="quantitative_robustness_curve",
        title="Robustness curve",
        png=render_png(fig),
        caption="Accuracy against the attack budget (eps 0 = clean); bands: bootstrap "
        "intervals.",
    )


def auroc_figure(
    clean: dict[str, Any], attacks: dict[str, Any], label_names: list[str]
) -> Figure | None:
    if clean["mean_auroc"] is None:
        return None
    ranked = sorted(
        (k for k, b in attacks.items() if b["adversarial"]["mean_auroc"] is not None),
        key=lambda k: attacks[k]["adversarial"]["mean_auroc"],
    )[:MAX_AUROC_SERIES]
    series = [("clean", clean), *((k, attacks[k]["adversarial"]) for k in ranked)]
    k = len(label_names)
    fig, ax = new_figure(max(6.4, 0.55 * k * len(series) / 2 + 2), 4.0)
    width = 0.8 / len(series)
    x = np.arange(k)
    for i, (name, block) in enumerate(series):
        vals = [np.nan if block["auroc"][lbl] is None else block["auroc"][lbl]
                for lbl in label_names]
        ax.bar(x + (i - (len(series) - 1) / 2) * width, vals, width, label=name,
               color=PALETTE[i % len(PALETTE)])
    ax.axhline(0.5, color="grey", linestyle="--", linewidth=0.8)
    ax.set_xticks(x, label_names, rotation=45 if k > 4 else 0, ha="right" if k > 4 else "center",
                  fontsize=8)
    ax.set_ylabel("AUROC")
    ax.set_ylim(0, 1.2)  # headroom for the legend above the bars
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.legend(fontsize=8, loc="upper center", ncol=min(len(series), 3), frameon=False)
    caption = "AUROC per finding, clean and under the strongest attacks (dashed: chance)."
    if len(attacks) > len(ranked):
        caption += f" {len(ranked)} of {len(attacks)} attack settings shown (lowest mean AUROC)."
    return Figure(name="quantitative_auroc", title="AUROC per finding, clean vs adversarial",
                  png=render_png(fig), caption=caption)


def min_eps_figure(summary: dict[str, Any] | None) -> Figure | None:
    if summary is None or "histogram" not in summary:
        return None
    edges = np.asarray(summary["histogram"]["edges"]) * 255.0
    counts = summary["histogram"]["counts"]
    fig, ax = new_figure(6.4, 3.6)
    ax.bar(edges[:-1], counts, width=np.diff(edges), align="edge", color=PALETTE[0],
           edgecolor="white")
    ax.set_xlabel("minimum eps that fools the model (grey levels of 255)")
    ax.set_ylabel("images")
    caption = f"{summary['n_images']} images"
    if summary["n_not_fooled"]:
        caption += f"; {summary['n_not_fooled']} not fooled within the searched range"
    return Figure(name="quantitative_min_eps", title="Minimum fooling eps per image",
                  png=render_png(fig), caption=caption + ".")
