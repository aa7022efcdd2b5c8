"""``label_correlation``: how an attack rewires the co-occurrence of findings.

Xu et al. (2021), "correlation of estimated labels": findings of a chest radiograph
co-occur (effusion with cardiomegaly), and a multi-label model learns that structure;
under attack the correlation matrix of its predictions moves away from that of the ground
truth, co-occurring findings being dragged together.

For the ground truth, the clean predictions and each attack's predictions, the Pearson
correlation matrix ``[K, K]`` of the findings over the images, computed for the binary
decisions (probability >= the card's threshold, 0.5 when the card has none) and for the
probabilities; the Frobenius distances ``||A - B||_F`` between truth and clean, truth and
adversarial, clean and adversarial (and the same over the ``K (K - 1)`` off-diagonal
entries as a root mean square); and the finding pairs whose (binary) correlation moved most
between clean and adversarial predictions.

A finding that does not vary over the images (never, or always, present or predicted) has
no correlation: its off-diagonal entries are defined as 0 and its diagonal entry as 1 (so
constant findings add no spurious distance), and it is listed under ``constant``.

Multi-label models only; single-label models get a "not applicable" section.

Arrays: ``index``, ``labels`` ``[N, K]`` int8, ``clean_probs`` ``[N, K]`` float32; per attack
``adv_index[k]``, ``adv_probs[k]``.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import torch

from app.core.catalogue.analyses import LabelCorrelationParams
from models.wrapper import DiagnosticModel
from workers.analyses.alignment import attack_field
from workers.analyses.analysis_params import parse_params
from workers.analyses.base import Analysis, BatchContext, Figure, Section, SummaryContext
from workers.analyses.feature_arrays import unique_rows
from workers.analyses.jsonable import jsonable
from workers.analyses.plotting import new_grid, render_png

CONSTANT_CONVENTION = (
    "a finding that does not vary over the images has no correlation: its off-diagonal "
    "entries are 0 and its diagonal entry 1"
)
SINGLE_LABEL_REASON = (
    "label correlation compares co-occurring findings and needs a multi-label model (one "
    "sigmoid per finding); this model is single-label"
)


def correlation_matrix(values: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """Pearson correlation of the columns of ``[N, K]`` values, and the constant columns.

    Constant columns (zero variance, or fewer than two rows) get 0 off the diagonal and 1
    on it, never nan.
    """
    v = np.asarray(values, dtype=np.float64)
    k = v.shape[1]
    if v.shape[0] < 2:
        return np.eye(k), list(range(k))
    centred = v - v.mean(axis=0)
    norms = np.sqrt((centred**2).sum(axis=0))
    scale = np.abs(v).max(axis=0) * math.sqrt(v.shape[0])
    constant = norms <= 1e-9 * np.maximum(scale, 1e-300)
    safe = np.where(constant, 1.0, norms)
    corr = (centred.T @ centred) / np.outer(safe, safe)
    corr[constant, :] = 0.0
    corr[:, constant] = 0.0
    np.fill_diagonal(corr, 1.0)
    return np.clip(corr, -1.0, 1.0), [int(i) for i in np.flatnonzero(constant)]


def frobenius(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b))


def rms_off_diagonal(a: np.ndarray, b: np.ndarray) -> float:
    k = a.shape[0]
    return frobenius(a, b) / math.sqrt(k * (k - 1)) if k > 1 else 0.0


class LabelCorrelationAnalysis(Analysis):
    """Correlation of findings: truth vs clean vs adversarial predictions (module docstring)."""

    name: ClassVar[str] = "label_correlation"
    Params: ClassVar[type[LabelCorrelationParams]] = LabelCorrelationParams

    def parse_params(self, params: dict[str, Any] | None) -> LabelCorrelationParams:
        return parse_params(LabelCorrelationParams, params, self.name)

    def not_applicable(self, model: DiagnosticModel) -> str | None:
        if model.card.task != "multi-label":
            return SINGLE_LABEL_REASON
        if model.num_labels < 2:
            return "label correlation needs at least two findings"
        return None

    def collect(self, ctx: BatchContext) -> dict[str, np.ndarray]:
        self.parse_params(ctx.params)
        model = ctx.model
        index = np.asarray(ctx.indices).astype(np.int64)
        if self.not_applicable(model) is not None:
            return {"index": index}
        out: dict[str, np.ndarray] = {
            "index": index,
            "labels": ctx.labels.detach().cpu().numpy().astype(np.int8),
        }
        with torch.no_grad():
            out["clean_probs"] = model.probabilities(ctx.clean).float().cpu().numpy()
            for key, adv in ctx.adversarial.items():
                out[attack_field("adv_index", key)] = index
                out[attack_field("adv_probs", key)] = (
                    model.probabilities(adv).float().cpu().numpy()
                )
        return out

    def summarize(self, arrays: dict[str, np.ndarray], ctx: SummaryContext) -> Section:
        params = self.parse_params(ctx.params)
        if ctx.task != "multi-label":
            return Section(self.name, applicable=False, data={}, reason=SINGLE_LABEL_REASON)
        if len(ctx.labels) < 2:
            return Section(self.name, applicable=False, data={},
                           reason="label correlation needs at least two findings")
        if "clean_probs" not in arrays or arrays["clean_probs"].shape[0] == 0:
            return Section(self.name, applicable=False, data={},
                           reason="no images were analysed")
        names = list(ctx.labels)
        k = len(names)
        thresholds = np.asarray(ctx.thresholds if ctx.thresholds else [0.5] * k)
        rows = unique_rows(arrays["index"])
        positions = arrays["index"][rows]
        truth = arrays["labels"][rows].astype(np.float64)
        probs = arrays["clean_probs"][rows].astype(np.float64)
        base = _matrices(truth, probs, thresholds, names)

        attacks: dict[str, Any] = {}
        missing: list[str] = []
        for key in ctx.attack_keys:
            field = attack_field("adv_probs", key)
            if field not in arrays:
                missing.append(key)
                continue
            adv_rows = unique_rows(arrays[attack_field("adv_index", key)])
            adv_pos = arrays[attack_field("adv_index", key)][adv_rows]
            where = np.searchsorted(positions, adv_pos)
            where = np.minimum(where, positions.shape[0] - 1)
            found = positions[where] == adv_pos
            mine = (
                base
                if found.all() and adv_pos.shape[0] == positions.shape[0]
                else _matrices(truth[where[found]], probs[where[found]], thresholds, names)
            )
            adv = arrays[field][adv_rows[found]].astype(np.float64)
            attacks[key] = _attack_block(mine, adv, thresholds, names, params.top_pairs)

        data: dict[str, Any] = {
            "findings": names,
            "thresholds": thresholds.tolist(),
            "n_images": int(rows.shape[0]),
            "correlation": "Pearson, over the images",
            "constant_convention": CONSTANT_CONVENTION,
            "truth": base["truth"],
            "clean": {"binary": base["clean_binary"], "probability": base["clean_probability"]},
            "truth_vs_clean": {
                "frobenius_binary": frobenius(base["M_truth"], base["M_clean_b"]),
                "frobenius_probability": frobenius(base["M_truth"], base["M_clean_p"]),
                "rms_binary": rms_off_diagonal(base["M_truth"], base["M_clean_b"]),
            },
            "attacks": attacks,
        }
        if missing:
            data["missing_attacks"] = missing
        figures = [heatmap_figure(base, attacks, key, names, i) for i, key in enumerate(attacks)]
        if not attacks:
            figures.append(heatmap_figure(base, {}, None, names, 0))
        return Section(self.name, applicable=True, data=jsonable(data), figures=figures)


def _block(matrix: np.ndarray, constant: list[int], names: list[str]) -> dict[str, Any]:
    return {"matrix": matrix.tolist(), "constant": [names[i] for i in constant]}


def _matrices(
    truth: np.ndarray, probs: np.ndarray, thresholds: np.ndarray, names: list[str]
) -> dict[str, Any]:
    m_truth, c_truth = correlation_matrix(truth)
    m_bin, c_bin = correlation_matrix((probs >= thresholds).astype(np.float64))
    m_prob, c_prob = correlation_matrix(probs)
    return {
        "M_truth": m_truth,
        "M_clean_b": m_bin,
        "M_clean_p": m_prob,
        "truth": _block(m_truth, c_truth, names),
        "clean_binary": _block(m_bin, c_bin, names),
        "clean_probability": _block(m_prob, c_prob, names),
    }


def _attack_block(
    base: dict[str, Any], adv: np.ndarray, thresholds: np.ndarray, names: list[str],
    top: int,
) -> dict[str, Any]:
    m_bin, c_bin = correlation_matrix((adv >= thresholds).astype(np.float64))
    m_prob, c_prob = correlation_matrix(adv)
    m_truth, m_clean_b, m_clean_p = base["M_truth"], base["M_clean_b"], base["M_clean_p"]
    k = len(names)
    iu = np.triu_indices(k, 1)
    change = (m_bin - m_clean_b)[iu]
    order = np.argsort(-np.abs(change), kind="stable")[:top]
    pairs = [
        {
            "findings": [names[int(iu[0][j])], names[int(iu[1][j])]],
            "truth": float(m_truth[iu[0][j], iu[1][j]]),
            "clean": float(m_clean_b[iu[0][j], iu[1][j]]),
            "adversarial": float(m_bin[iu[0][j], iu[1][j]]),
            "change": float(change[j]),
            "clean_probability": float(m_clean_p[iu[0][j], iu[1][j]]),
            "adversarial_probability": float(m_prob[iu[0][j], iu[1][j]]),
        }
        for j in order
    ]
    return {
        "n_images": int(adv.shape[0]),
        "binary": _block(m_bin, c_bin, names),
        "probability": _block(m_prob, c_prob, names),
        "frobenius_binary": {
            "truth_vs_clean": frobenius(m_truth, m_clean_b),
            "truth_vs_adversarial": frobenius(m_truth, m_bin),
            "clean_vs_adversarial": frobenius(m_clean_b, m_bin),
        },
        "frobenius_probability": {
            "truth_vs_clean": frobenius(m_truth, m_clean_p),
            "truth_vs_adversarial": frobenius(m_truth, m_prob),
            "clean_vs_adversarial": frobenius(m_clean_p, m_prob),
        },
        "rms_binary": {
            "truth_vs_clean": rms_off_diagonal(m_truth, m_clean_b),
            "truth_vs_adversarial": rms_off_diagonal(m_truth, m_bin),
            "clean_vs_adversarial": rms_off_diagonal(m_clean_b, m_bin),
        },
        "moved_pairs": pairs,
    }


def heatmap_figure(
    base: dict[str, Any], attacks: dict[str, Any], key: str | None, names: list[str],
    number: int,
) -> Figure:
    """Heatmaps: truth, clean and adversarial (binary) correlations and the change."""
    panels: list[tuple[str, np.ndarray]] = [
        ("ground truth", base["M_truth"]),
        ("clean predictions", base["M_clean_b"]),
    ]
    if key is not None:
        adv = np.asarray(attacks[key]["binary"]["matrix"])
        panels += [(f"adversarial ({key})", adv), ("adversarial - clean", adv - base["M_clean_b"])]
    k = len(names)
    cell = max(2.6, 0.32 * k + 1.2)
    fig, axes = new_grid(1, len(panels), cell * len(panels), cell + 0.6)
    image = None
    for i, (title, matrix) in enumerate(panels):
        ax = axes[0, i]
        image = ax.imshow(matrix, cmap="RdBu_r", vmin=-1, vmax=1)
        ax.set_title(title, fontsize=9)
        ax.set_xticks(range(k))
        ax.set_yticks(range(k))
        ax.set_xticklabels(names, rotation=90, fontsize=7)
        ax.set_yticklabels(names if i == 0 else [""] * k, fontsize=7)
        if k <= 8:
            for r in range(k):
                for c in range(k):
                    colour = "white" if abs(matrix[r, c]) > 0.6 else "black"
                    ax.text(c, r, f"{matrix[r, c]:.2f}", ha="center", va="center", fontsize=6,
                            color=colour)
    if image is not None:
        fig.colorbar(image, ax=axes[0, -1], shrink=0.8)
    title = "Correlation of findings" + (f": {key}" if key else "")
    return Figure(
        name=f"label_correlation_{number}",
        title=title,
        png=render_png(fig),
        caption="Pearson correlation of the findings over the images: ground truth, clean "
        "predictions and adversarial predictions (decisions at the card's thresholds), and "
        "the change under attack.",
    )
