"""Figures of the ``perturbations`` section: metric and changed share against severity,
flip probabilities, and mosaics of example frames."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from workers.analyses.base import Figure
from workers.analyses.plotting import PALETTE, new_grid, render_png
from workers.perturbations import Family

logger = logging.getLogger(__name__)



def perturbation_figures(
    table: dict[str, dict[str, Any]],
    clean: dict[str, float],
    metric: str,
    severities: Sequence[int],
    example: tuple[int, np.ndarray] | None,
) -> list[Figure]:
    figures = []
    corrupted = {n: e for n, e in table.items() if e["severities"]}
    if corrupted:
        figures.append(
            _severity_plot(
                corrupted,
                metric,
                clean[metric],
                name="perturbations_metric_vs_severity",
                title=f"{metric} against severity",
            )
        )
        figures.append(
            _severity_plot(
                corrupted,
                "changed",
                0.0,
                name="perturbations_changed_vs_severity",
                title="Predictions changed from clean against severity",
            )
        )
    sequenced = {n: e for n, e in table.items() if e["sequence"]}
    if sequenced:
        figures.append(_flip_plot(sequenced))
    if example is not None:
        names = [n for n, e in table.items() if e["severities"]]
        figures.extend(_example_strips(example, names, table, severities))
    return figures


def _families(entries: dict[str, dict[str, Any]]) -> list[str]:
    return [f.value for f in Family if any(e["family"] == f.value for e in entries.values())]


def _severity_plot(
    entries: dict[str, dict[str, Any]], key: str, at_zero: float, *, name: str, title: str
) -> Figure:
    families = _families(entries)
    ncols = min(3, len(families))
    nrows = -(-len(families) // ncols)
    fig, axes = new_grid(nrows, ncols, 4.2 * ncols, 3.2 * nrows)
    for i, family in enumerate(families):
        ax = axes[i // ncols][i % ncols]
        members = [(n, e) for n, e in entries.items() if e["family"] == family]
        for j, (pname, entry) in enumerate(members):
            xs = [0] + [r["severity"] for r in entry["severities"]]
            ys = [at_zero] + [
                r[key] if r[key] is not None else float("nan") for r in entry["severities"]
            ]
            ax.plot(xs, ys, marker="o", color=PALETTE[j % len(PALETTE)], label=pname)
        ax.set_title(family)
        ax.set_xlabel("severity (0 = clean)")
        ax.set_ylabel(key)
        ax.set_xticks(range(6))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for i in range(len(families), nrows * ncols):
        axes[i // ncols][i % ncols].set_visible(False)
    fig.suptitle(title)
    return Figure(name=name, title=title, png=render_png(fig))


def _flip_plot(entries: dict[str, dict[str, Any]]) -> Figure:
    names = list(entries)
    fig, axes = new_grid(1, 1, 6.4, 0.9 + 0.32 * len(names))
    ax = axes[0][0]
    values = [entries[n]["flip_probability"] for n in names]
    colours = [
        PALETTE[[f.value for f in Family].index(entries[n]["family"]) % len(PALETTE)] for n in names
    ]
    ys = np.arange(len(names))
    ax.barh(ys, values, color=colours)
    anys = [entries[n]["sequence"].get("any_finding_flip_probability") for n in names]
    if any(a is not None for a in anys):
        ax.scatter(
            [a if a is not None else np.nan for a in anys],
            ys,
            marker="|",
            s=200,
            color="black",
            label="any finding",
        )
        ax.legend(fontsize=7)
    ax.set_yticks(ys, names)
    ax.invert_yaxis()
    ax.set_xlabel("flip probability")
    ax.grid(axis="x", alpha=0.3)
    title = "Flip probability of perturbation sequences"
    ax.set_title(title)
    return Figure(
        name="perturbations_flip_probability",
        title=title,
        png=render_png(fig),
        caption="Noise: frames vs the first frame; others: frames `difficulty` steps apart.",
    )


def _example_strips(
    example: tuple[int, np.ndarray],
    names: list[str],
    table: dict[str, dict[str, Any]],
    severities: Sequence[int],
) -> list[Figure]:
    """One figure per family: a mosaic with a row per perturbation and a column per
    severity (clean first), drawn as a single image (one axes renders fast)."""
    index, frames = example  # [P, 1 + S, C, h, w] uint8
    if frames.shape[0] != len(names):
        logger.warning(
            "example strips skipped: %d rows for %d perturbations", len(frames), len(names)
        )
        return []
    columns = ["clean", *[f"severity {s}" for s in severities]][: frames.shape[1]]
    _, ncols, c, h, w = frames.shape
    gap = max(1, h // 16)
    figures = []
    for family in _families({n: table[n] for n in names}):
        rows = [i for i, n in enumerate(names) if table[n]["family"] == family]
        mosaic = np.full(
            (len(rows) * (h + gap) - gap, ncols * (w + gap) - gap, c), 255, dtype=np.uint8
        )
        for r, i in enumerate(rows):
            for col in range(ncols):
                y0, x0 = r * (h + gap), col * (w + gap)
                mosaic[y0 : y0 + h, x0 : x0 + w] = frames[i, col].transpose(1, 2, 0)
        fig, axes = new_grid(1, 1, 1.0 + 1.1 * ncols, 0.6 + 1.1 * len(rows))
        ax = axes[0][0]
        if c == 1:
            ax.imshow(mosaic[:, :, 0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        else:
            ax.imshow(mosaic, interpolation="nearest")
        ax.set_xticks([col * (w + gap) + w / 2 for col in range(ncols)], columns, fontsize=8)
        ax.set_yticks(
            [r * (h + gap) + h / 2 for r in range(len(rows))], [names[i] for i in rows], fontsize=8
        )
        ax.tick_params(length=0)
        ax.xaxis.tick_top()
        for spine in ax.spines.values():
            spine.set_visible(False)
        title = f"Example frames: {family} (image {index})"
        figures.append(
            Figure(name=f"perturbations_examples_{family}", title=title, png=render_png(fig))
        )
    return figures


